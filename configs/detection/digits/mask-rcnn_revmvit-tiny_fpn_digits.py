# Mask R-CNN with the README main job's RevMViT variant (trained on the digits by
# configs/revmvit/revmvit-tiny_1xb64_digits.py), fine-tuned with reversible backprop on
# the built-in digit detection task: its three stages (64, 128, 256 channels at strides
# 4, 8, 16) feed mmdet's FPN (strides 4-64).
_base_ = './mask-rcnn_digits.py'

classifier = 'work_dirs/revmvit-tiny_1xb64_digits/epoch_50.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='mmrev.RevMViT',
        arch=dict(embed_dims=32, num_layers=5, num_heads=1, transition_layers=(1, 3),
                  kv_stride=2, patch_kernel=4, patch_stride=4, patch_padding=0),
        img_size=128,
        drop_path_rate=0.1,
        out_type='featmap',
        out_scales=(0, 1, 2),
        init_cfg=dict(type='Pretrained', checkpoint=classifier, prefix='backbone.')),
    neck=dict(in_channels=[64, 128, 256], out_channels={{_base_.channels}}, num_outs=5))
