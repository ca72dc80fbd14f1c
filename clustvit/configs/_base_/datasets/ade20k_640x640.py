# ADE20K at 640 (the ViT-L / ClustViT-L runs).
_base_ = "./ade20k.py"
data = dict(
    train_pipeline=dict(scale=(2560, 640), crop_size=(640, 640)),
    test_pipeline=dict(scale=(2560, 640)),
)
