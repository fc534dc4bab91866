# Mask R-CNN on COCO instance segmentation with ViTDet's recipe for transformer backbones
# (Li et al., ECCV 2022; mmdet's projects/ViTDet): large-scale jitter (random resize 0.1-2x
# and 1024x1024 crops, padded to 1024x1024), tested at long side 1024; LayerNorm in the
# heads, a two-conv RPN head; AdamW lr 1e-4 (64 images per iteration), weight decay 0.1
# except on the backbone blocks' norms and position embeddings; 100 epochs with steps at
# 88 and 96, warmup 250 iterations from 0.001; mixed precision. The configs that inherit
# this file set the backbone, the neck and (for ViTs) layer-wise lr decay. Model, data
# and schedule come from mmdet's own configs (shipped in its wheel).
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::common/lsj-100e_coco-instance.py',
]
custom_imports = dict(imports=['mmrev'], allow_failed_imports=False)

image_size = (1024, 1024)
head_norm_cfg = dict(type='mmrev.LN2d', eps=1e-6)
model = dict(
    data_preprocessor=dict(
        pad_size_divisor=32,
        batch_augments=[dict(type='BatchFixedSizePad', size=image_size, pad_mask=True)]),
    rpn_head=dict(num_convs=2),
    roi_head=dict(
        bbox_head=dict(type='Shared4Conv1FCBBoxHead', conv_out_channels=256,
                       norm_cfg=head_norm_cfg),
        mask_head=dict(norm_cfg=head_norm_cfg)))

test_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='Pad', size=image_size, pad_val=dict(img=(114, 114, 114))),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

# 8 GPUs x 8 images (auto_scale_lr base_batch_size=64 from the base). The base repeats
# the dataset 4 times over 25 epochs: 100 epochs, steps at epochs 22 and 24 (88 and 96).
train_dataloader = dict(batch_size=8, num_workers=4, persistent_workers=False,
                        worker_init_fn=dict(type='mmrev.seed_worker'))  # exact --resume
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=250),
    dict(type='MultiStepLR', begin=0, end=25, by_epoch=True, milestones=[22, 24],
         gamma=0.1)
]
# ViTDet's weight decay: none on the norms inside the backbone's blocks (f.norm, g.norm;
# in RevMViT also the pooling norms) nor on position embeddings.
no_decay = dict(decay_mult=0.)
optim_wrapper = dict(
    _delete_=True,
    type='AmpOptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.1),
    paramwise_cfg=dict(custom_keys={
        '.f.norm.': no_decay, '.g.norm.': no_decay, '.attn.norm_': no_decay,
        'pos_embed': no_decay}))

# crash-safe checkpoints: a kill while saving keeps the previous one and last_checkpoint
default_hooks = dict(checkpoint=dict(type='mmrev.AtomicCheckpointHook'))

# --resume continues the interrupted run exactly (the generators' states are saved)
custom_hooks = [dict(type='mmrev.RandomStateHook')]
