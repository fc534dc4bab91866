# Mask R-CNN with a Rev-MViT-B backbone in the MViTv2 style (Li et al., CVPR 2022;
# detectron2 projects/MViTv2, mask_rcnn_mvitv2_t_3x): mmdet's standard FPN and heads,
# multi-scale training with random crops (DETR's augmentation, as mmdet's Swin 3x), 36
# epochs, AdamW lr 1.6e-4 (64 images per iteration), weight decay 0.1 except on norms and
# position embeddings, warmup 250 iterations from 0.001, drop path 0.2 (MViTv2-S, whose
# 16-layer layout Rev-MViT-B shares), mixed precision. No layer-wise lr decay: MViTv2's
# detection recipe has none. To add it, set optim_wrapper.constructor to
# 'mmrev.LayerDecayOptimWrapperConstructor' and paramwise_cfg.layer_decay_rate.
_base_ = 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py'
custom_imports = dict(imports=['mmrev'], allow_failed_imports=False)

# See mask-rcnn_revmvit-base_fpn_lsj-100e_coco.py for the checkpoint.
pretrained = 'checkpoints/revmvit-base_slowfast_in1k.pth'
model = dict(
    data_preprocessor=dict(pad_size_divisor=32),
    backbone=dict(
        _delete_=True,
        type='mmrev.RevMViT',
        arch='base',
        img_size=800,
        drop_path_rate=0.2,
        out_type='featmap',
        out_scales=(0, 1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    neck=dict(in_channels=[192, 384, 768, 1536]))

# 8 GPUs x 8 images
train_dataloader = dict(batch_size=8, num_workers=4, persistent_workers=False,
                        worker_init_fn=dict(type='mmrev.seed_worker'))  # exact --resume
auto_scale_lr = dict(enable=False, base_batch_size=64)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=250),
    dict(type='MultiStepLR', begin=0, end=36, by_epoch=True, milestones=[27, 33],
         gamma=0.1)
]
optim_wrapper = dict(
    _delete_=True,
    type='AmpOptimWrapper',
    optimizer=dict(type='AdamW', lr=1.6e-4, betas=(0.9, 0.999), weight_decay=0.1),
    paramwise_cfg=dict(norm_decay_mult=0., custom_keys={'pos_embed': dict(decay_mult=0.)}))

# crash-safe checkpoints: a kill while saving keeps the previous one and last_checkpoint
default_hooks = dict(checkpoint=dict(type='mmrev.AtomicCheckpointHook'))

# --resume continues the interrupted run exactly (the generators' states are saved)
custom_hooks = [dict(type='mmrev.RandomStateHook')]
