# Segmenter on CTS-B/16 (content-aware token sharing, 103 shared 2x2 groups = 30% fewer tokens at 512).
_base_ = "./segmenter_vit-b16.py"
model = dict(backbone=dict(type="CTSViT", policy_weights="weights/policynet.safetensors", num_shared=103))
