# ViT-B + Segmenter, ADE20K (the baseline of the paper).
_base_ = [
    "../_base_/models/segmenter_vit-b16.py",
    "../_base_/datasets/ade20k.py",
    "../_base_/schedules/schedule_160k.py",
    "../_base_/default_runtime.py",
]
optimizer = dict(lr=0.001, weight_decay=0.0)  # every official leaf overrides the base 0.01 / 5e-4
data = dict(batch_size=8, val_batch_size=1)  # 1 GPU x 8 images
