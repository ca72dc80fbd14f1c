# ClustViT-S (small) + Segmenter, ADE20K, k=3, ip=3: the ClustViT-B model at width 384 (cluster MLP 4x width).
_base_ = "./segmenter_clustvit-b_mask_1xb8-160k_ade20k-512x512_k3_ip3.py"
model = dict(
    backbone=dict(embed_dim=384, num_heads=6, cluster_mlp_size=1548),
    decode_head=dict(embed_dim=384, num_heads=6),
    pretrained="https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/segmenter/vit_small_p16_384_20220308-410f6037.pth",
)
