# Mask R-CNN with a RevViT-B backbone and mmrev's simple feature pyramid, ViTDet's recipe:
# RevViT's single stride-16 map (2 x 768 channels) becomes strides 4, 8, 16, 32, 64,
# upsampled with ViT-B's widths in ViTDet (384 channels at stride 8, 192 at stride 4);
# layer-wise lr decay 0.7 over the 12 layers, drop path 0.1 (ViTDet's ViT-B values).
_base_ = './_base_/mask-rcnn_lsj-100e_coco.py'

# An ImageNet RevViT-B: an mmrev classification checkpoint (keys 'backbone.*'), e.g. the
# official REV_VIT_B.pyth converted by tools/model_converters/slowfast_to_mmrev.py, or
# the .pyth itself (converted on the fly). The 224 position embedding is interpolated to
# 1024 on load.
pretrained = 'checkpoints/revvit-base_slowfast_in1k.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='mmrev.RevViT',
        arch='base',
        img_size=1024,
        drop_path_rate=0.1,
        out_type='featmap',
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    neck=dict(
        _delete_=True,
        type='mmrev.SimpleFPN',
        in_channels=2 * 768,
        upsample_channels=384,
        out_channels=256,
        scale_factors=(4, 2, 1, 0.5),
        num_outs=5))
# lr * 0.7 ** (13 - depth): patch and position embedding at depth 0, layer i at i + 1,
# the final norm, neck and heads at the full rate
optim_wrapper = dict(
    constructor='mmrev.LayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(layer_decay_rate=0.7))
