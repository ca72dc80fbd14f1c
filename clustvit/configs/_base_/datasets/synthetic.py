# Synthetic scenes generated from a seed (no download): large homogeneous regions, a few textured
# objects. Used by the demo and the instant tests.
_base_ = "./suim.py"
model = dict(num_classes=6)  # the Synthetic dataset's default class count
data = dict(
    type="Synthetic",
    root="",
    train_pipeline=dict(scale=(256, 256), crop_size=(256, 256)),
    test_pipeline=dict(scale=(256, 256)),
    num_workers=0,
    dataset_kwargs=dict(),
)
