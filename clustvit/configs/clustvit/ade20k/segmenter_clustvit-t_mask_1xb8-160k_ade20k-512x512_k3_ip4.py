# The paper's scaling row "ClustViT-t k3,ip4": the ClustViT-T k3_ip3 model injected after block 4.
_base_ = "./segmenter_clustvit-t_mask_1xb8-160k_ade20k-512x512_k3_ip3.py"
model = dict(backbone=dict(injection_point=4))
