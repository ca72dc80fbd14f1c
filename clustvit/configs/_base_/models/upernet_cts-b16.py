# UPerNet on CTS-B/16.
_base_ = "./upernet_vit-b16.py"
model = dict(backbone=dict(type="CTSViT", policy_weights="weights/policynet.safetensors", num_shared=103))
