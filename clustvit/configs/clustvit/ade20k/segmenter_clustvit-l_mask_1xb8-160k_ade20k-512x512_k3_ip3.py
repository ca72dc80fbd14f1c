# ClustViT-L + Segmenter, ADE20K. As in the official release, the L model trains and tests at 640
# (the file name keeps 512x512).
_base_ = [
    "../../_base_/models/segmenter_vit-l16.py",
    "../../_base_/datasets/ade20k_640x640.py",
    "../../_base_/schedules/schedule_160k.py",
    "../../_base_/default_runtime.py",
]
model = dict(backbone=dict(type="ClustViT", num_clusters=3, injection_point=3, cluster_mlp_size=4128),
             clust_loss_weight=0.1)
