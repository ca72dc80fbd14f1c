# The `make demo` ViT baseline: the demo ClustViT without clustering (same width, depth and schedule).
_base_ = "./segmenter_clustvit-demo_synthetic.py"
model = dict(
    backbone=dict(_delete_=True, type="VisionTransformer", img_size=(256, 256), embed_dim=96, depth=6,
                  num_heads=3, out_indices=(5,), drop_path_rate=0.0),
    clust_loss_weight=0.0,
)
