# ViT-B + UPerNet, ADE20K.
_base_ = [
    "../_base_/models/upernet_vit-b16.py",
    "../_base_/datasets/ade20k.py",
    "../_base_/schedules/schedule_160k.py",
    "../_base_/default_runtime.py",
]
