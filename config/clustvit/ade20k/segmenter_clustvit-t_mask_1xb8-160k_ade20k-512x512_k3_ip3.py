# ClustViT-T (tiny) + Segmenter, ADE20K, k=3, ip=3.
_base_ = [
    "../../_base_/models/segmenter_clustvit-b16_k3.py",
    "../../_base_/datasets/ade20k.py",
    "../../_base_/schedules/schedule_160k.py",
    "../../_base_/default_runtime.py",
]
model = dict(
    backbone=dict(embed_dim=192, num_heads=3, injection_point=3, cluster_mlp_size=774),
    decode_head=dict(embed_dim=192, num_heads=3),
    pretrained="https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/segmenter/vit_tiny_p16_384_20220308-cce8c795.pth",
)
optimizer = dict(lr=0.001, weight_decay=0.0)  # every official leaf overrides the base 0.01 / 5e-4
data = dict(batch_size=8, val_batch_size=1)  # 1 GPU x 8 images
