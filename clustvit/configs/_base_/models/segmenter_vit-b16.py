# Segmenter: ViT-B/16 backbone + mask-transformer decoder (2 layers). ImageNet ViT-384 initialisation.
model = dict(
    backbone=dict(
        type="VisionTransformer",
        img_size=(512, 512),
        patch_size=16,
        embed_dim=768,
        depth=12,
        num_heads=12,
        mlp_ratio=4.0,
        out_indices=(11,),
        drop_path_rate=0.1,
        final_norm=True,
    ),
    decode_head=dict(type="SegmenterMaskTransformerHead", embed_dim=768, depth=2, num_heads=12, dropout=0.0),
    clust_loss_weight=0.0,
    ignore_index=255,
    pretrained="https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/segmenter/vit_base_p16_384_20220308-96dfe169.pth",
    # 512 windows every 480 px (32 px overlap), logits averaged where windows overlap.
    test_cfg=dict(mode="slide", crop_size=(512, 512), stride=(480, 480)),
)
