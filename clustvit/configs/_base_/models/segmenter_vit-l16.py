# Segmenter on ViT-L/16, at 640 like the official release (ImageNet ViT-L-384 initialisation).
_base_ = "./segmenter_vit-b16.py"
model = dict(
    backbone=dict(img_size=(640, 640), embed_dim=1024, depth=24, num_heads=16, out_indices=(23,)),
    decode_head=dict(embed_dim=1024, num_heads=16),
    pretrained="https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/segmenter/vit_large_p16_384_20220308-d4efb41d.pth",
    test_cfg=dict(crop_size=(640, 640), stride=(608, 608)),
)
