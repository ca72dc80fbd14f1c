# ClustViT-B + UPerNet, SUIM, k=3, ip=3.
_base_ = [
    "../../_base_/models/upernet_clustvit-b16_k3.py",
    "../../_base_/datasets/suim.py",
    "../../_base_/schedules/schedule_80k.py",
    "../../_base_/default_runtime.py",
]
