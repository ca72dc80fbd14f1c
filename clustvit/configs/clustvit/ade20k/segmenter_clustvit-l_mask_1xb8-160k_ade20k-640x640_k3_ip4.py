# The paper's scaling row "ClustViT-l k3,ip4": the ClustViT-L k3_ip3 model injected after block 4. At 640,
# as the L model trains and tests (the name says so, unlike the official k3_ip3 file's).
_base_ = "./segmenter_clustvit-l_mask_1xb8-160k_ade20k-512x512_k3_ip3.py"
model = dict(backbone=dict(injection_point=4))
