# ViT-T (tiny) + Segmenter, ADE20K: the ViT-B baseline at width 192.
_base_ = "./segmenter_vit-b_mask_1xb8-160k_ade20k-512x512.py"
model = dict(
    backbone=dict(embed_dim=192, num_heads=3),
    decode_head=dict(embed_dim=192, num_heads=3),
    pretrained="https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/segmenter/vit_tiny_p16_384_20220308-cce8c795.pth",
)
