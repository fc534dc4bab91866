# Handwritten digits pasted on photographs, COCO format, with instance masks
# (mmrev.datasets.digit_detection; tools/dataset_converters/prepare_digit_detection.py
# writes data/digit_detection): 1200 train / 200 val images of 128x128, 10 classes.
dataset_type = 'CocoDataset'
data_root = 'data/digit_detection/'
metainfo = dict(
    classes=tuple(str(d) for d in range(10)),
    palette=[(220, 20, 60), (0, 0, 230), (0, 160, 60), (250, 170, 30), (160, 0, 200),
             (0, 180, 200), (255, 90, 0), (110, 110, 0), (200, 0, 110), (0, 90, 160)])

# digits are not flip-invariant: scale jitter and crops, no flips
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomResize', scale=(128, 128), ratio_range=(0.8, 1.25), keep_ratio=True),
    dict(type='RandomCrop', crop_type='absolute', crop_size=(128, 128),
         recompute_bbox=True, allow_negative_crop=True),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(4, 4)),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(128, 128), keep_ratio=True),  # the images' own size
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=8,
    num_workers=1,
    persistent_workers=False,  # fresh workers each epoch, seeded so that a resumed
    worker_init_fn=dict(type='mmrev.seed_worker'),  # run draws what the whole run drew
    sampler=dict(type='DefaultSampler', shuffle=True),
    batch_sampler=dict(type='AspectRatioBatchSampler'),
    dataset=dict(type=dataset_type, data_root=data_root, metainfo=metainfo,
                 ann_file='annotations/train.json', data_prefix=dict(img='train/'),
                 filter_cfg=dict(filter_empty_gt=True), pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8,
    num_workers=1,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root, metainfo=metainfo,
                 ann_file='annotations/val.json', data_prefix=dict(img='val/'),
                 test_mode=True, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='CocoMetric', ann_file=data_root + 'annotations/val.json',
                     metric=['bbox', 'segm'])
test_evaluator = val_evaluator
