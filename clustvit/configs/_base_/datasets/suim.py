# SUIM (underwater, the official 8 classes: BW HD PF WR RO RI FV SR; the official config files use 9).
# Images go to 512x512 (aspect ratio not kept), so the 512 crop only flips and distorts.
_base_ = "./ade20k.py"
model = dict(num_classes=8)
data = dict(
    type="SUIM",
    root="data/suim",
    train_pipeline=dict(scale=(512, 512), ratio_range=None, keep_ratio=False),
    test_pipeline=dict(scale=(512, 512), keep_ratio=False),
    num_workers=2,
)
