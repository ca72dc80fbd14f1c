# UPerNet on ClustViT-B/16 (k=3 clusters merged after block 3; cluster MLP 3072 as in the official UPerNet leaf).
_base_ = "./upernet_vit-b16.py"
model = dict(
    backbone=dict(type="ClustViT", num_clusters=3, injection_point=3, cluster_mlp_size=3072),
    clust_loss_weight=0.1,
)
