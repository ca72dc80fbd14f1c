# CTS-B + UPerNet, RumexWeeds (baseline; 103 shared token groups).
_base_ = [
    "../_base_/models/upernet_cts-b16.py",
    "../_base_/datasets/rumexweeds.py",
    "../_base_/schedules/schedule_80k.py",
    "../_base_/default_runtime.py",
]
