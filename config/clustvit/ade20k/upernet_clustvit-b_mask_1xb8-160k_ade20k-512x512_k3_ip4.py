# ClustViT-B + UPerNet, ADE20K, k=3, ip=4, cluster MLP 3096 (the "_mask" variant of the official release).
_base_ = [
    "../../_base_/models/upernet_clustvit-b16_k3.py",
    "../../_base_/datasets/ade20k.py",
    "../../_base_/schedules/schedule_160k.py",
    "../../_base_/default_runtime.py",
]
model = dict(
    backbone=dict(injection_point=4, cluster_mlp_size=3096),
    decode_head=dict(channels=768),
)
optimizer = dict(lr=0.001, weight_decay=0.0)  # every official leaf overrides the base 0.01 / 5e-4
data = dict(batch_size=8, val_batch_size=1)  # 1 GPU x 8 images
