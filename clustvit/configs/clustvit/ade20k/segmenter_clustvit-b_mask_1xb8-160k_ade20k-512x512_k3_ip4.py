# Ablation of the k3_ip3 model: k=3 clusters, injection after block 4.
_base_ = "./segmenter_clustvit-b_mask_1xb8-160k_ade20k-512x512_k3_ip3.py"
model = dict(backbone=dict(injection_point=4))
