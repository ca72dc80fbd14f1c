# CTS-B + Segmenter, SUIM (baseline; 103 shared token groups).
_base_ = [
    "../_base_/models/segmenter_cts-b16.py",
    "../_base_/datasets/suim.py",
    "../_base_/schedules/schedule_80k.py",
    "../_base_/default_runtime.py",
]
