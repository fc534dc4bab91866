# Mask R-CNN with a Rev-MViT-B backbone and mmdet's FPN (with LayerNorm), ViTDet's LSJ
# recipe as detectron2 applies it to MViTv2 (projects/ViTDet, mvitv2 configs): no
# layer-wise lr decay, as there. RevMViT's four stages give 192, 384, 768, 1536 channels
# at strides 4, 8, 16, 32 (plus a max-pooled stride 64).
_base_ = './_base_/mask-rcnn_lsj-100e_coco.py'

# An ImageNet Rev-MViT-B: an mmrev classification checkpoint (keys 'backbone.*'), e.g.
# the official REV_MVIT_B.pyth converted by tools/model_converters/slowfast_to_mmrev.py,
# or the .pyth itself (converted on the fly). The position embedding is interpolated to
# 1024 on load; the norms of stages 0-2, absent from classification weights, start as
# identity LayerNorms.
pretrained = 'checkpoints/revmvit-base_slowfast_in1k.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='mmrev.RevMViT',
        arch='base',
        img_size=1024,
        drop_path_rate=0.2,
        out_type='featmap',
        out_scales=(0, 1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    neck=dict(
        in_channels=[192, 384, 768, 1536],
        norm_cfg=dict(type='mmrev.LN2d', eps=1e-6)))
