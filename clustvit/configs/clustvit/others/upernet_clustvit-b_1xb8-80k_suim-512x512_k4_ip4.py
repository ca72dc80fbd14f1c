# ClustViT-B + UPerNet, SUIM, k=4, ip=4 (benchmark companion of the Segmenter k4/ip4 row).
_base_ = ["./upernet_clustvit-b_1xb8-80k_suim-512x512_k3_ip3.py"]
model = dict(backbone=dict(num_clusters=4, injection_point=4))
