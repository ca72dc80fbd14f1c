# ClustViT-B + Segmenter, ADE20K, k=3 clusters merged after block 3 (the paper's main model).
_base_ = [
    "../../_base_/models/segmenter_clustvit-b16_k3.py",
    "../../_base_/datasets/ade20k.py",
    "../../_base_/schedules/schedule_160k.py",
    "../../_base_/default_runtime.py",
]
