# 160k iterations x 8 images = 1.28M samples = about 64 epochs of ADE20K train (20,210 images).
# The paper's fine-tuning optimizer: the official base file says lr 0.01 / weight decay 5e-4, but every
# official leaf overrides them with these.
optimizer = dict(type="SGD", lr=0.001, momentum=0.9, weight_decay=0.0)
schedule = dict(
    max_iters=160000,
    power=0.9,  # poly decay: lr = (lr0 - min_lr) * (1 - it / max_iters) ** power + min_lr
    min_lr=1e-4,
    warmup_iters=0,
    log_interval=50,
    val_interval=16000,
    checkpoint_interval=16000,
)
