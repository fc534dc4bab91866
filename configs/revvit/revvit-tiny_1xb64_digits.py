# A 4-layer Rev-ViT (2 x 64 channels, 8x8 patches) trained with reversible backprop on
# scikit-learn's digits (tools/dataset_converters/prepare_digits.py): about 99 % test
# accuracy after 50 epochs, a few minutes on 2 CPU cores.
_base_ = ['../_base_/datasets/digits_bs64.py', '../_base_/default_runtime.py']

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='mmrev.RevViT',
        arch=dict(embed_dims=64, num_layers=4, num_heads=2, feedforward_channels=256,
                  patch_size=8),
        img_size=32,
        drop_path_rate=0.1,
        reversible=True),
    neck=None,
    head=dict(
        type='LinearClsHead',
        num_classes=10,
        in_channels=128,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
    ),
)

optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=2e-3, weight_decay=0.05),
    paramwise_cfg=dict(flat_decay_mult=0.0),
    clip_grad=dict(max_norm=1.0),
)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=True, begin=0, end=2,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=48, eta_min=1e-5, by_epoch=True, begin=2, end=50,
         convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=50, val_interval=10)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(base_batch_size=64)

default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=10, max_keep_ckpts=1, save_last=True),
)
# reversible backprop's reconstruction error and the peak memory, in the log
custom_hooks = [dict(type='mmrev.ReversibleBackpropHook', interval=100),
                dict(type='mmrev.RandomStateHook')]
randomness = dict(seed=0)
