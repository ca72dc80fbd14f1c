# The paper's SUIM UPerNet row "ClustViT-b k2,ip4": the k4_ip4 UPerNet model with two clusters.
_base_ = "./upernet_clustvit-b_1xb8-80k_suim-512x512_k4_ip4.py"
model = dict(backbone=dict(num_clusters=2))
