"""Training and evaluation engine: LR curve, checkpoints, logging, the training loop, evaluation."""
