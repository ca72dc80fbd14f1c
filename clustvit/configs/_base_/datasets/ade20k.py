# ADE20K (SceneParsing, 150 classes; label 0 "other" becomes ignore via reduce-zero-label).
# The class count lives with the dataset, so the model presets hold none and any base order works.
model = dict(num_classes=150)
data = dict(
    type="ADE20K",
    root="data/ade/ADEChallengeData2016",
    # Random resize to ratio 0.5-2.0 of 2048x512 (keep ratio), crop 512 with a single class
    # at most 75% of the crop, flip, photometric distortion, pad with ignore.
    train_pipeline=dict(
        scale=(2048, 512),
        ratio_range=(0.5, 2.0),
        keep_ratio=True,
        crop_size=(512, 512),
        cat_max_ratio=0.75,
        flip_prob=0.5,
        photometric=True,
    ),
    # The short side goes to 512; the mask stays at original size and logits are resized to it.
    test_pipeline=dict(scale=(2048, 512), keep_ratio=True),
    batch_size=8,  # every paper run: 1 GPU x 8 images (the "1xb8" of the config names)
    num_workers=4,
    val_batch_size=1,
    dataset_kwargs=dict(),
)
