# Segmenter on ClustViT-B/16: up to k=3 clusters merged after block 3, clustering loss weight 0.1.
# Cluster MLP 3096 as in every official ClustViT-B Segmenter leaf (not 4 x 768 = 3072).
_base_ = "./segmenter_vit-b16.py"
model = dict(
    backbone=dict(type="ClustViT", num_clusters=3, injection_point=3, cluster_mlp_size=3096),
    clust_loss_weight=0.1,
)
