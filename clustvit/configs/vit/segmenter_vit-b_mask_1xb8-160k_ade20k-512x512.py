# ViT-B + Segmenter, ADE20K (the baseline of the paper).
_base_ = [
    "../_base_/models/segmenter_vit-b16.py",
    "../_base_/datasets/ade20k.py",
    "../_base_/schedules/schedule_160k.py",
    "../_base_/default_runtime.py",
]
