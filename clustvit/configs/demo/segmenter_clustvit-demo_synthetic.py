# The `make demo` ClustViT: 6 blocks of width 96, up to 3 clusters merged after block 2, trained from
# scratch on generated 256x256 scenes (6 classes) in about a minute on 2 CPU cores.
_base_ = [
    "../_base_/models/segmenter_clustvit-b16_k3.py",
    "../_base_/datasets/synthetic.py",
    "../_base_/schedules/schedule_160k.py",
    "../_base_/default_runtime.py",
]
model = dict(
    backbone=dict(img_size=(256, 256), embed_dim=96, depth=6, num_heads=3, out_indices=(5,), drop_path_rate=0.0,
                  injection_point=2, cluster_mlp_size=384),
    decode_head=dict(embed_dim=96, depth=1, num_heads=3, drop_path_rate=0.0),
    pretrained=None,  # from scratch: no download
    test_cfg=dict(mode="whole", crop_size=(256, 256), stride=(256, 256)),
)
# From scratch, AdamW converges in a few hundred steps where the paper's SGD (made for fine-tuning) does not.
optimizer = dict(_delete_=True, type="AdamW", lr=2e-3, weight_decay=0.01)
schedule = dict(max_iters=150, min_lr=1e-5, warmup_iters=10, log_interval=25, val_interval=100000,
                checkpoint_interval=150)
# One worker generates scenes on the second core while the model trains on the first.
data = dict(num_workers=1, dataset_kwargs=dict(num_images=2400, num_eval_images=32, image_size=256))
