# Segmenter on ClustViT-B/16: up to k=3 clusters merged after block 4, clustering loss weight 0.1.
_base_ = "./segmenter_vit-b16.py"
model = dict(
    backbone=dict(type="ClustViT", num_clusters=3, injection_point=4, cluster_mlp_size=3072),
    clust_loss_weight=0.1,
)
