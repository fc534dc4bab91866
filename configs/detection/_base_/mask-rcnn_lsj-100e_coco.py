# Mask R-CNN on COCO instance segmentation, large-scale jitter (1024x1024 crops, padded to
# a fixed 1024x1024 in training; 800x1333 resized and padded to a multiple of 32 in test),
# 100 epochs, with ViTDet's choices for transformer backbones: LayerNorm in the heads, a
# two-conv RPN head, AdamW. The configs that inherit this file set the backbone and neck.
# Model, data and schedule come from mmdet's own configs (shipped in its wheel).
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

# 8 GPUs x 8 images (auto_scale_lr base_batch_size=64 from the base)
train_dataloader = dict(batch_size=8, num_workers=4)
optim_wrapper = dict(
    _delete_=True,
    type='AmpOptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.1),
    paramwise_cfg=dict(norm_decay_mult=0., bias_decay_mult=0.,
                       custom_keys={'pos_embed': dict(decay_mult=0.)}))
