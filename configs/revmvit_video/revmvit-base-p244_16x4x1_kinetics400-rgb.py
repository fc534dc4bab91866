# Rev-MViT-B 16x4 on Kinetics-400 (Mangalam et al., CVPR 2022), SlowFast's
# configs/Kinetics/REV_MVIT_B_16x4_CONV.yaml: 16 frames every 4, 224x224 crops; 200
# epochs, AdamW lr 1.6e-3 for 512 clips per iteration (256 videos, each sampled twice),
# weight decay 0.07 (none on biases and norms), 50 warmup epochs from 1.6e-5 then cosine
# to 1.6e-5, drop path 0.05, dropout 0.5 before the classifier, mixup 0.8 / cutmix 1.0
# with label smoothing 0.1, RandAugment (m7, n4), random erasing 0.25. Test: 5 clips x
# 1 centre crop, short side 256, softmax averaged (SlowFast's protocol for one crop).
# Official weights: REV_MVIT_B_16x4.pyth (metafile.yml), 78.4 / 93.4 top-1 / top-5;
# mmrev converts them on load or with tools/model_converters/slowfast_to_mmrev.py.
_base_ = ['mmaction::_base_/default_runtime.py']
custom_imports = dict(imports=['mmrev'], allow_failed_imports=False)

model = dict(
    type='Recognizer3D',
    backbone=dict(
        type='mmrev.RevMViT',
        arch='video-base',
        num_frames=16,
        img_size=224,
        drop_path_rate=0.05,
        out_type='featmap'),
    data_preprocessor=dict(
        type='ActionDataPreprocessor',
        mean=[114.75, 114.75, 114.75],  # SlowFast's 0.45 / 0.225 on a 0-255 scale
        std=[57.375, 57.375, 57.375],
        blending=dict(type='RandomBatchAugment', augments=[
            dict(type='MixupBlending', alpha=0.8, num_classes=400),
            dict(type='CutmixBlending', alpha=1., num_classes=400)]),
        format_shape='NCTHW'),
    cls_head=dict(type='MViTHead', in_channels=1536, num_classes=400, dropout_ratio=0.5,
                  with_cls_token=False, label_smooth_eps=0.1, average_clips='prob'))

dataset_type = 'VideoDataset'
data_root = 'data/kinetics400/videos_train'
data_root_val = 'data/kinetics400/videos_val'
ann_file_train = 'data/kinetics400/kinetics400_train_list_videos.txt'
ann_file_val = 'data/kinetics400/kinetics400_val_list_videos.txt'
# RandAugment through mmaction2's PytorchVideoWrapper needs pytorchvideo (not installed
# by tools/setup_env.sh): pip install pytorchvideo to train with this config
train_pipeline = [
    dict(type='DecordInit'),
    dict(type='SampleFrames', clip_len=16, frame_interval=4, num_clips=1),
    dict(type='DecordDecode'),
    dict(type='Resize', scale=(-1, 256)),
    dict(type='PytorchVideoWrapper', op='RandAugment', magnitude=7, num_layers=4),
    dict(type='RandomResizedCrop', area_range=(0.08, 1.), aspect_ratio_range=(0.75, 4 / 3)),
    dict(type='Resize', scale=(224, 224), keep_ratio=False),
    dict(type='Flip', flip_ratio=0.5),
    dict(type='RandomErasing', erase_prob=0.25, mode='rand'),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs'),
]
val_pipeline = [
    dict(type='DecordInit'),
    dict(type='SampleFrames', clip_len=16, frame_interval=4, num_clips=1, test_mode=True),
    dict(type='DecordDecode'),
    dict(type='Resize', scale=(-1, 256)),
    dict(type='CenterCrop', crop_size=224),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs'),
]
test_pipeline = [
    dict(type='DecordInit'),
    dict(type='SampleFrames', clip_len=16, frame_interval=4, num_clips=5, test_mode=True),
    dict(type='DecordDecode'),
    dict(type='Resize', scale=(-1, 256)),
    dict(type='CenterCrop', crop_size=224),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs'),
]
repeat_sample = 2
train_dataloader = dict(
    batch_size=16,
    num_workers=8,
    persistent_workers=False,  # fresh workers each epoch, seeded so that a resumed
    worker_init_fn=dict(type='mmrev.seed_worker'),  # run draws what the whole run drew
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='repeat_pseudo_collate'),
    dataset=dict(type='RepeatAugDataset', num_repeats=repeat_sample, sample_once=True,
                 ann_file=ann_file_train, data_prefix=dict(video=data_root),
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8,
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, ann_file=ann_file_val,
                 data_prefix=dict(video=data_root_val), pipeline=val_pipeline,
                 test_mode=True))
test_dataloader = dict(
    batch_size=1,
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, ann_file=ann_file_val,
                 data_prefix=dict(video=data_root_val), pipeline=test_pipeline,
                 test_mode=True))
val_evaluator = dict(type='AccMetric')
test_evaluator = val_evaluator

max_epochs, warmup_epochs, base_lr = 200, 50, 1.6e-3
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_begin=1,
                 val_interval=5)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=base_lr, betas=(0.9, 0.999), weight_decay=0.07),
    paramwise_cfg=dict(norm_decay_mult=0., bias_decay_mult=0.))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=True, begin=0, end=warmup_epochs,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=max_epochs - warmup_epochs, eta_min=base_lr / 100,
         by_epoch=True, begin=warmup_epochs, end=max_epochs, convert_to_iter_based=True),
]
default_hooks = dict(checkpoint=dict(type='mmrev.AtomicCheckpointHook', interval=5, max_keep_ckpts=5))
custom_hooks = [dict(type='mmrev.ReversibleBackpropHook', interval=500),
                dict(type='mmrev.RandomStateHook')]
# 16 machines x 8 GPUs x 2 videos, each sampled twice: 512 clips per iteration
auto_scale_lr = dict(enable=False, base_batch_size=512 // repeat_sample)
