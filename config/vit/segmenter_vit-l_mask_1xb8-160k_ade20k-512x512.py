# ViT-L + Segmenter, ADE20K, trained and tested at 640 like the official release.
_base_ = [
    "../_base_/models/segmenter_vit-b16.py",
    "../_base_/datasets/ade20k_640x640.py",
    "../_base_/schedules/schedule_160k.py",
    "../_base_/default_runtime.py",
]
model = dict(
    backbone=dict(img_size=(640, 640), embed_dim=1024, depth=24, num_heads=16, out_indices=(23,)),
    decode_head=dict(embed_dim=1024, num_heads=16),
    pretrained="https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/segmenter/vit_large_p16_384_20220308-d4efb41d.pth",
    test_cfg=dict(crop_size=(640, 640), stride=(608, 608)),
)
optimizer = dict(lr=0.001, weight_decay=0.0)  # every official leaf overrides the base 0.01 / 5e-4
data = dict(batch_size=8, val_batch_size=1)  # 1 GPU x 8 images
