# The paper's ADE20K Segmenter row "ClustViT-b k1,ip4": the k3_ip4 model with one cluster.
_base_ = "./segmenter_clustvit-b_mask_1xb8-160k_ade20k-512x512_k3_ip4.py"
model = dict(backbone=dict(num_clusters=1))
