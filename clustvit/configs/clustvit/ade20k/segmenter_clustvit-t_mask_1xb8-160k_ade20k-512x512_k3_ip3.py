# ClustViT-T (tiny) + Segmenter, ADE20K, k=3, ip=3: the ClustViT-B model at width 192 (cluster MLP 4x width).
_base_ = "./segmenter_clustvit-b_mask_1xb8-160k_ade20k-512x512_k3_ip3.py"
model = dict(
    backbone=dict(embed_dim=192, num_heads=3, cluster_mlp_size=774),
    decode_head=dict(embed_dim=192, num_heads=3),
    pretrained="https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/segmenter/vit_tiny_p16_384_20220308-cce8c795.pth",
)
