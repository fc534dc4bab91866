# Mask R-CNN with the README main job's 4-layer RevViT (trained on the digits by
# configs/revvit/revvit-tiny_1xb64_digits.py), fine-tuned with reversible backprop on
# the built-in digit detection task. 8x8 patches: one stride-8 map (2 x 64 channels),
# which mmrev.SimpleFPN turns into strides 4, 8, 16, 32 (and 64).
_base_ = './mask-rcnn_digits.py'

classifier = 'work_dirs/revvit-tiny_1xb64_digits/epoch_50.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='mmrev.RevViT',
        arch=dict(embed_dims=64, num_layers=4, num_heads=2, feedforward_channels=256,
                  patch_size=8),
        img_size=128,  # the classifier's 32x32 position embedding is interpolated
        drop_path_rate=0.1,
        out_type='featmap',
        init_cfg=dict(type='Pretrained', checkpoint=classifier, prefix='backbone.')),
    neck=dict(
        _delete_=True,
        type='mmrev.SimpleFPN',
        in_channels=128,
        out_channels={{_base_.channels}},
        scale_factors=(2, 1, 0.5, 0.25),
        num_outs=5))
