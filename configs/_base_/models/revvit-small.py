# revvit-small: mmrev.RevViT (arch 'small') + linear head on the 2C pooled features, trained with
# label smoothing 0.1 and Mixup 0.8 / CutMix 1.0 (one of the two per batch, as SlowFast's
# MIXUP.SWITCH_PROB 0.5).
model = dict(
    type='ImageClassifier',
    backbone=dict(type='mmrev.RevViT', arch='small', img_size=224, drop_path_rate=0.1),
    neck=None,
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=768,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        init_cfg=dict(type='TruncNormal', layer='Linear', std=0.02, bias=0.),
    ),
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]),
)
