# Runtime defaults shared by every experiment.
runtime = dict(
    seed=0,  # data order, augmentation and dropout all derive from (seed, iteration)
    keep_checkpoints=3,  # the official CheckpointHook keeps the last 3
    skip_nonfinite=False,  # False: stop at the first NaN/inf loss; True: skip that step and count it
    require_pretrained=False,  # True: fail instead of warning when model.pretrained cannot be read
    grad_clip=None,  # max grad norm, None = no clipping (official: clip_grad=None)
)
