"""CTS policy network: EfficientNet-Lite0 features + 1x1 conv -> 2 logits per super-patch.

One super-patch is 2x2 patches = 32x32 pixels, which is exactly Lite0's output stride. Channel 1 of the
logits means "share" (the whole super-patch holds one class); its softmax is the share score.
Parameter names match the official CTS ``PolicyNet`` (``backbone.*`` = timm ``efficientnet_lite0``
features, ``head.*``), so official and timm checkpoints load after ``convert_policy_state_dict``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from torch import Tensor, nn

from clustvit.atomic import atomic_path
from clustvit.convert.weights import read_checkpoint
from clustvit.models.cts.efficientnet_lite import EfficientNetLite0Features

# Keys of a timm ImageNet classifier that ``features_only`` (and so the policy trunk) does not have.
TIMM_CLASSIFIER_PREFIXES = ("conv_head.", "bn2.", "classifier.")


class PolicyNet(nn.Module):
    """Scores every 32x32 super-patch of an image as share / do-not-share."""

    def __init__(self, in_chans: int = 3) -> None:
        super().__init__()
        self.backbone = EfficientNetLite0Features(in_chans)
        self.head = nn.Conv2d(self.backbone.feature_channels[-1], 2, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) normalised image -> (B, 2, ceil(H/32), ceil(W/32)) logits (1 = share)."""
        return self.head(self.backbone(x)[-1])

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, allow_missing_head: bool = False) -> PolicyNet:
        """Build and load weights strictly from a safetensors / torch checkpoint (ours, official or timm).

        Args:
            path: weights file.
            allow_missing_head: accept a trunk-only checkpoint (timm ImageNet weights) and keep the
                randomly initialised head, e.g. to start policy training.
        """
        model = cls()
        state = convert_policy_state_dict(read_state_dict(path))
        missing, unexpected = model.load_state_dict(state, strict=False)
        if allow_missing_head:
            missing = [k for k in missing if not k.startswith("head.")]
        if missing or unexpected:
            raise ValueError(
                f"{path}: policy-net weights do not match; missing keys: {sorted(missing)}; "
                f"unexpected keys: {sorted(unexpected)}"
            )
        return model


def read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read a ``.safetensors`` file, or a torch checkpoint with ``weights_only=True`` (``convert.weights``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: policy-net weights file not found; train one with `clustvit policy train CONFIG` "
            "or set model.backbone.policy_weights=None for an untrained policy"
        )
    state = read_checkpoint(path)  # the one weight reader: safetensors, or torch.load(weights_only=True)
    if not isinstance(state, Mapping):
        raise ValueError(f"{path}: expected a state dict (a mapping of names to tensors), got {type(state)}")
    return dict(state)


def convert_policy_state_dict(state: Mapping[str, object]) -> dict[str, Tensor]:
    """Any known policy-net checkpoint layout -> our (= official CTS) key names. Pure function.

    Handles: a ``state_dict``/``model`` wrapper; a ``module.`` (DDP) prefix; a whole CTS model whose
    policy lives under ``...policy_net.``; raw timm ``efficientnet_lite0`` keys (``conv_stem.weight``),
    whose classifier-only entries are dropped.
    """
    for wrapper in ("state_dict", "model"):
        if wrapper in state and isinstance(state[wrapper], Mapping):
            state = state[wrapper]
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if any("policy_net." in k for k in state):
        # A whole CTS model: keep only its policy net.
        state = {k.split("policy_net.", 1)[1]: v for k, v in state.items() if "policy_net." in k}
    if any(k.startswith("conv_stem.") for k in state):
        # timm classifier layout: the trunk sits at the top level.
        state = {
            (k if k.startswith("head.") else f"backbone.{k}"): v
            for k, v in state.items()
            if not k.startswith(TIMM_CLASSIFIER_PREFIXES)
        }
    bad = [k for k, v in state.items() if not isinstance(v, Tensor)]
    if bad:
        raise ValueError(f"policy-net state dict has non-tensor entries: {bad}")
    return dict(state)


def save_policy(model: PolicyNet, path: str | os.PathLike) -> None:
    """Write the weights as safetensors, atomically (temp file + os.replace)."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, tmp, metadata={"format": "clustvit-cts-policy-v1"})
