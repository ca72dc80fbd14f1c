# The paper's RumexWeeds Segmenter row and released checkpoint "ClustViT-b k3,ip4" (51.53 mIoU).
_base_ = "./segmenter_clustvit-b_mask_1xb8-80k_rumexweeds-512x512_k3_ip3.py"
model = dict(backbone=dict(injection_point=4))
