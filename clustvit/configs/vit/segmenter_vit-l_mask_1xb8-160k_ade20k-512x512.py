# ViT-L + Segmenter, ADE20K, trained and tested at 640 like the official release.
_base_ = [
    "../_base_/models/segmenter_vit-l16.py",
    "../_base_/datasets/ade20k_640x640.py",
    "../_base_/schedules/schedule_160k.py",
    "../_base_/default_runtime.py",
]
