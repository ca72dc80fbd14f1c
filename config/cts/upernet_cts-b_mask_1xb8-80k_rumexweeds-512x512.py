# CTS-B + Upernet, rumexweeds (baseline; 103 shared token groups).
_base_ = [
    "../_base_/models/upernet_cts-b16.py",
    "../_base_/datasets/rumexweeds.py",
    "../_base_/schedules/schedule_80k.py",
    "../_base_/default_runtime.py",
]
model = dict(decode_head=dict(channels=768), num_classes=3)
optimizer = dict(lr=0.001, weight_decay=0.0)  # every official leaf overrides the base 0.01 / 5e-4
data = dict(batch_size=8, val_batch_size=1)  # 1 GPU x 8 images
