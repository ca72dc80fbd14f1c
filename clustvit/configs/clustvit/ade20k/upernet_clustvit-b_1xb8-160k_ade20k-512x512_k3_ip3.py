# ClustViT-B + UPerNet, ADE20K, k=3, ip=3 (cluster MLP 3072 in this official leaf).
_base_ = [
    "../../_base_/models/upernet_clustvit-b16_k3.py",
    "../../_base_/datasets/ade20k.py",
    "../../_base_/schedules/schedule_160k.py",
    "../../_base_/default_runtime.py",
]
