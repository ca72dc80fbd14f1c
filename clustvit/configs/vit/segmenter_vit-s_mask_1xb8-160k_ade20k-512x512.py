# ViT-S (small) + Segmenter, ADE20K: the ViT-B baseline at width 384.
_base_ = "./segmenter_vit-b_mask_1xb8-160k_ade20k-512x512.py"
model = dict(
    backbone=dict(embed_dim=384, num_heads=6),
    decode_head=dict(embed_dim=384, num_heads=6),
    pretrained="https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/segmenter/vit_small_p16_384_20220308-410f6037.pth",
)
