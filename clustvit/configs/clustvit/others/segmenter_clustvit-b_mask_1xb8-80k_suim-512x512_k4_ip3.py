# The released SUIM checkpoint "ClustViT-b k4,ip3" (63.26 mIoU): the k3_ip3 model with four clusters.
_base_ = "./segmenter_clustvit-b_mask_1xb8-80k_suim-512x512_k3_ip3.py"
model = dict(backbone=dict(num_clusters=4))
