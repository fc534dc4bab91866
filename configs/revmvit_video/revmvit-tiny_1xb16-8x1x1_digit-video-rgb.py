# A 5-layer video Rev-MViT (3 stages: 2 x 32, 2 x 64, 2 x 128 channels on 4x8x8, 4x4x4,
# 4x2x2 tokens) trained from scratch with reversible backprop on the built-in moving
# digits (mmrev.datasets.digit_video; tools/run_digit_video.sh): 8-frame 32x32 clips,
# the class is the direction of motion. 2 CPU cores: see the README.
_base_ = ['mmaction::_base_/default_runtime.py']
custom_imports = dict(imports=['mmrev'], allow_failed_imports=False)

model = dict(
    type='Recognizer3D',
    backbone=dict(
        type='mmrev.RevMViT',
        arch=dict(embed_dims=32, num_layers=5, num_heads=1, transition_layers=(1, 3),
                  mlp_ratio=2., kv_stride=(1, 2, 2), patch_kernel=(3, 4, 4),
                  patch_stride=(2, 4, 4), patch_padding=(1, 0, 0)),
        num_frames=8,
        img_size=32,
        drop_path_rate=0.1,
        out_type='featmap'),
    data_preprocessor=dict(type='ActionDataPreprocessor', mean=[127.5] * 3,
                           std=[127.5] * 3, format_shape='NCTHW'),
    cls_head=dict(type='MViTHead', in_channels=256, num_classes=4, dropout_ratio=0.,
                  with_cls_token=False, average_clips='prob'))

dataset_type = 'RawframeDataset'
data_root = 'data/digit_video/'
# every frame of the 8-frame clips; no flips (they would reverse the direction)
train_pipeline = [
    dict(type='SampleFrames', clip_len=8, frame_interval=1, num_clips=1),
    dict(type='RawFrameDecode'),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs'),
]
test_pipeline = [
    dict(type='SampleFrames', clip_len=8, frame_interval=1, num_clips=1, test_mode=True),
    dict(type='RawFrameDecode'),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs'),
]
train_dataloader = dict(
    batch_size=16,
    num_workers=1,
    persistent_workers=False,  # fresh workers each epoch, seeded so that a resumed
    worker_init_fn=dict(type='mmrev.seed_worker'),  # run draws what the whole run drew
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(type=dataset_type, ann_file=data_root + 'train_list.txt',
                 data_prefix=dict(img=data_root), pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=32,
    num_workers=1,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, ann_file=data_root + 'test_list.txt',
                 data_prefix=dict(img=data_root), pipeline=test_pipeline, test_mode=True))
test_dataloader = val_dataloader
val_evaluator = dict(type='AccMetric')
test_evaluator = val_evaluator

max_epochs = 20
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_begin=1,
                 val_interval=5)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=2e-3, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0., bias_decay_mult=0.),
    clip_grad=dict(max_norm=1.))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=True, begin=0, end=2,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=max_epochs - 2, eta_min=2e-5, by_epoch=True,
         begin=2, end=max_epochs, convert_to_iter_based=True),
]
default_hooks = dict(checkpoint=dict(type='mmrev.AtomicCheckpointHook', interval=5,
                                     max_keep_ckpts=1, save_best=None),
                     logger=dict(interval=10))
env_cfg = dict(dist_cfg=dict(backend='gloo'))
# reversible backprop's reconstruction error and the peak memory, in the log
custom_hooks = [dict(type='mmrev.ReversibleBackpropHook', interval=100),
                dict(type='mmrev.RandomStateHook')]
randomness = dict(seed=0)
