# Rev-MViT-B on ImageNet-1k, SlowFast's configs/ImageNet/REV_MVIT_B_16_CONV.yaml recipe:
# 300 epochs, AdamW (lr 2e-3 for 8 x 256 images, weight decay 0.05), 70 warm-up epochs,
# RandAugment rand-m9-n6-mstd0.5-inc1, drop path 0.1, gradient clipping 1.0.
_base_ = [
    '../_base_/models/revmvit-base.py',
    '../_base_/datasets/imagenet_bs256_revvit_224.py',
    '../_base_/schedules/imagenet_bs2048_adamw_revvit.py',
    '../_base_/default_runtime.py',
]

train_pipeline = _base_.train_pipeline
train_pipeline[3].update(num_policies=6, magnitude_level=9)  # RandAugment
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))

optim_wrapper = dict(optimizer=dict(weight_decay=0.05), clip_grad=dict(max_norm=1.0))
