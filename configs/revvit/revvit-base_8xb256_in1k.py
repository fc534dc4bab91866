# Rev-ViT-B on ImageNet-1k, SlowFast's configs/ImageNet/REV_VIT_B.yaml recipe:
# 300 epochs, AdamW (lr 2e-3 for 8 x 256 images, weight decay 0.1), 70 warm-up epochs,
# RandAugment rand-m6-n5-mstd0.5-inc1, drop path 0.2, gradient clipping 2.0.
_base_ = [
    '../_base_/models/revvit-base.py',
    '../_base_/datasets/imagenet_bs256_revvit_224.py',
    '../_base_/schedules/imagenet_bs2048_adamw_revvit.py',
    '../_base_/default_runtime.py',
]

train_pipeline = _base_.train_pipeline
train_pipeline[3].update(num_policies=5, magnitude_level=6)  # RandAugment
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))

optim_wrapper = dict(optimizer=dict(weight_decay=0.1), clip_grad=dict(max_norm=2.0))
