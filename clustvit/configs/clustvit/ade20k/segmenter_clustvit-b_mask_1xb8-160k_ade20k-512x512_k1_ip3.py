# Ablation of the k3_ip3 model: k=1 clusters, injection after block 3.
_base_ = "./segmenter_clustvit-b_mask_1xb8-160k_ade20k-512x512_k3_ip3.py"
model = dict(backbone=dict(num_clusters=1))
