# CTS-B + UPerNet, ADE20K (baseline; 103 shared token groups).
_base_ = [
    "../_base_/models/upernet_cts-b16.py",
    "../_base_/datasets/ade20k.py",
    "../_base_/schedules/schedule_160k.py",
    "../_base_/default_runtime.py",
]
