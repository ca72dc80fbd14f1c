# ViT-B + UPerNet, RumexWeeds.
_base_ = [
    "../_base_/models/upernet_vit-b16.py",
    "../_base_/datasets/rumexweeds.py",
    "../_base_/schedules/schedule_80k.py",
    "../_base_/default_runtime.py",
]
