"""CTS baseline (Content-aware Token Sharing): policy network, token sharing, CTSViT backbone."""

from clustvit.models.cts.cts_vit import CTSViT
from clustvit.models.cts.policy import PolicyNet, convert_policy_state_dict, save_policy

__all__ = ["CTSViT", "PolicyNet", "convert_policy_state_dict", "save_policy"]
