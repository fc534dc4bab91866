# Rev-ViT-S on ImageNet-1k, SlowFast's configs/ImageNet/REV_VIT_S.yaml recipe:
# 300 epochs, AdamW (lr 2e-3 for 8 x 256 images, weight decay 0.05), 70 warm-up epochs,
# RandAugment rand-m7-mstd0.5-inc1, drop path 0.1, gradient clipping 1.0.
_base_ = [
    '../_base_/models/revvit-small.py',
    '../_base_/datasets/imagenet_bs256_revvit_224.py',
    '../_base_/schedules/imagenet_bs2048_adamw_revvit.py',
    '../_base_/default_runtime.py',
]
