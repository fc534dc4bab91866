# Rev-ViT-B on ImageNet-1k, SlowFast's configs/ImageNet/REV_VIT_B.yaml recipe:
# 300 epochs, AdamW (lr 2e-3 for 8 x 256 images, weight decay 0.1), 70 warm-up epochs,
# RandAugment rand-m6-n5-mstd0.5-inc1, drop path 0.2, gradient clipping 2.0.
_base_ = [
    '../_base_/models/revvit-base.py',
    '../_base_/datasets/imagenet_bs256_revvit_224.py',
    '../_base_/schedules/imagenet_bs2048_adamw_revvit.py',
    '../_base_/default_runtime.py',
]

bgr_mean = [103.53, 116.28, 123.675]  # data_preprocessor's mean and std, BGR
bgr_std = [57.375, 57.12, 58.395]
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=224, backend='pillow', interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(
        type='RandAugment',
        policies='timm_increasing',
        num_policies=5,
        total_level=10,
        magnitude_level=6,
        magnitude_std=0.5,
        hparams=dict(pad_val=[round(x) for x in bgr_mean], interpolation='bicubic')),
    dict(
        type='RandomErasing',
        erase_prob=0.25,
        mode='rand',
        min_area_ratio=0.02,
        max_area_ratio=1 / 3,
        fill_color=bgr_mean,
        fill_std=bgr_std),
    dict(type='PackInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))

optim_wrapper = dict(optimizer=dict(weight_decay=0.1), clip_grad=dict(max_norm=2.0))
