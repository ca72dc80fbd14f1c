# UPerNet on ViT-B/16: the head reads blocks 3, 5, 7 and 11 (PPM on the last, FPN over all). 768 channels as
# in every official UPerNet leaf (the official base file says 512).
_base_ = "./segmenter_vit-b16.py"
model = dict(
    backbone=dict(out_indices=(3, 5, 7, 11)),
    decode_head=dict(_delete_=True, type="UPerHead", channels=768, pool_scales=(1, 2, 3, 6), dropout=0.1),
)
