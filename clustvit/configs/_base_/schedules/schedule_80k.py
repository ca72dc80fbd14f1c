# 80k iterations x 8 images = 640k samples (SUIM and RumexWeeds runs).
_base_ = "./schedule_160k.py"
schedule = dict(max_iters=80000, val_interval=8000, checkpoint_interval=8000)
