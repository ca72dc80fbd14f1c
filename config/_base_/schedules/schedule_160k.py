# 160k iterations x 8 images = 1.28M samples = about 64 epochs of ADE20K train (20,210 images).
optimizer = dict(type="SGD", lr=0.01, momentum=0.9, weight_decay=0.0005)
schedule = dict(
    max_iters=160000,
    power=0.9,  # poly decay: lr = (lr0 - min_lr) * (1 - it / max_iters) ** power + min_lr
    min_lr=1e-4,
    warmup_iters=0,
    log_interval=50,
    val_interval=16000,
    checkpoint_interval=16000,
)
