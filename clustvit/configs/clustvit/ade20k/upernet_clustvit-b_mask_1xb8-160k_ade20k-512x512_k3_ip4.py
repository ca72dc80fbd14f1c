# ClustViT-B + UPerNet, ADE20K, k=3, ip=4, cluster MLP 3096 (the "_mask" variant of the official release).
_base_ = "./upernet_clustvit-b_1xb8-80k_ade20k-512x512_k3_ip4.py"
model = dict(backbone=dict(cluster_mlp_size=3096))
