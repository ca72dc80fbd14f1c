# ClustViT-B + Segmenter, SUIM, k=4, ip=4: the paper's best SUIM Segmenter trade-off (132.94 GFLOPs, 63.86 mIoU).
_base_ = ["./segmenter_clustvit-b_mask_1xb8-80k_suim-512x512_k3_ip3.py"]
model = dict(backbone=dict(num_clusters=4, injection_point=4))
