# UPerNet on ClustViT-B/16 (k=3 clusters, injection after block 4).
_base_ = "./upernet_vit-b16.py"
model = dict(
    backbone=dict(type="ClustViT", num_clusters=3, injection_point=4, cluster_mlp_size=3072),
    clust_loss_weight=0.1,
)
