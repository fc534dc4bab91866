"""A :class:`ModelSpec` as a self-contained config (model, SlowFast's evaluation
pipeline, test dataloader): mmpretrain's for image models, mmaction2's for video ones."""
from typing import Any, List

from .slowfast_config import ModelSpec


def model_config(spec: ModelSpec) -> dict:
    """The model config of ``spec``: :func:`classifier_config` or
    :func:`recognizer_config`."""
    return recognizer_config(spec) if spec.video else classifier_config(spec)


def recognizer_config(spec: ModelSpec) -> dict:
    """The mmaction2 ``Recognizer3D`` config of a video ``spec``. mmaction2's
    ``MViTHead`` (token mean, dropout, linear) is SlowFast's head on the backbone's
    normalised ``featmap``; ``average_clips='prob'`` averages the softmax of the clips,
    as SlowFast's test sums them."""
    return dict(
        type='Recognizer3D',
        backbone=dict(spec.backbone, out_type='featmap'),
        cls_head=dict(type='MViTHead', in_channels=spec.head_channels,
                      num_classes=spec.num_classes, dropout_ratio=spec.video.dropout,
                      with_cls_token=False, average_clips='prob'),
        data_preprocessor=dict(type='ActionDataPreprocessor',
                               mean=[round(m * 255, 4) for m in spec.mean],
                               std=[round(s * 255, 4) for s in spec.std],
                               format_shape='NCTHW'))


def classifier_config(spec: ModelSpec) -> dict:
    """The mmpretrain ``ImageClassifier`` config of ``spec``."""
    return dict(
        type='ImageClassifier',
        backbone=spec.backbone,
        neck=None,
        head=dict(type='LinearClsHead', num_classes=spec.num_classes,
                  in_channels=spec.head_channels,
                  loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
                  topk=_topk(spec.num_classes)))


def _topk(num_classes: int) -> tuple:
    return (1, 5) if num_classes >= 5 else (1, )


def eval_pipeline(spec: ModelSpec) -> List[dict]:
    """SlowFast's ImageNet evaluation: bicubic resize of the short side to
    ``crop / val_crop_ratio`` (or of the whole image to the crop when the ratio is 0),
    then a centre crop."""
    if spec.val_crop_ratio:
        resize = [dict(type='ResizeEdge', scale=int(spec.crop_size / spec.val_crop_ratio),
                       edge='short', backend='pillow', interpolation='bicubic'),
                  dict(type='CenterCrop', crop_size=spec.crop_size)]
    else:
        resize = [dict(type='Resize', scale=spec.crop_size, backend='pillow',
                       interpolation='bicubic')]
    return [dict(type='LoadImageFromFile'), *resize, dict(type='PackInputs')]


class _Name(str):
    """A variable name in the written config (printed without quotes)."""

    def __repr__(self) -> str:
        return str(self)


def video_test_pipeline(spec: ModelSpec) -> List[dict]:
    """SlowFast's video test: ``num_clips`` clips of ``num_frames`` frames every
    ``sampling_rate`` frames, the short side resized, ``num_crops`` crops (1: centre;
    3: mmaction2's ThreeCrop)."""
    video = spec.video
    crop = (dict(type='CenterCrop', crop_size=spec.crop_size) if video.num_crops == 1 else
            dict(type='ThreeCrop', crop_size=spec.crop_size))
    return [dict(type='DecordInit'),
            dict(type='SampleFrames', clip_len=video.num_frames,
                 frame_interval=video.sampling_rate, num_clips=video.num_clips,
                 test_mode=True),
            dict(type='DecordDecode'),
            dict(type='Resize', scale=(-1, video.short_side)),
            crop,
            dict(type='FormatShape', input_format='NCTHW'),
            dict(type='PackActionInputs')]


def video_config_sections(spec: ModelSpec) -> dict:
    """The sections of an mmaction2 test config for a video ``spec`` (Kinetics-400's
    validation videos where the model is a Kinetics-400 classifier)."""
    root = 'data/kinetics400' if spec.kinetics400 else 'data/videos'
    ann_file = f'{root}/kinetics400_val_list_videos.txt' if spec.kinetics400 else \
        f'{root}/val_list.txt'
    return dict(
        custom_imports=dict(imports=['mmrev'], allow_failed_imports=False),
        default_scope='mmaction',
        model=recognizer_config(spec),
        test_pipeline=video_test_pipeline(spec),
        test_dataloader=dict(
            batch_size=1, num_workers=4,
            dataset=dict(type='VideoDataset', ann_file=ann_file,
                         data_prefix=dict(video=f'{root}/videos_val'),
                         pipeline=_Name('test_pipeline'), test_mode=True),
            sampler=dict(type='DefaultSampler', shuffle=False)),
        test_evaluator=dict(type='AccMetric'),
        test_cfg=dict(type='TestLoop'),
    )


def config_text(spec: ModelSpec, source: str) -> str:
    """A self-contained config file (python text) for ``spec``: mmpretrain's for an
    image model, mmaction2's for a video one."""
    sections = video_config_sections(spec) if spec.video else image_config_sections(spec)
    lines = [f'# {spec.kind} converted from the SlowFast checkpoint {source}',
             '# by tools/model_converters/slowfast_to_mmrev.py.',
             '# Test: tools/test.py THIS_CONFIG CHECKPOINT (the test_dataloader below names',
             '#   the data folder; --cfg-options test_dataloader.dataset.data_root=... moves it).']
    lines += (['# Predict: from mmaction.apis import init_recognizer, inference_recognizer;',
               "#   inference_recognizer(init_recognizer(THIS_CONFIG, CHECKPOINT), 'clip.mp4')."]
              if spec.video else
              ['# Predict: from mmpretrain import ImageClassificationInferencer;',
               "#   ImageClassificationInferencer(THIS_CONFIG, pretrained=CHECKPOINT)('image.jpg')",
               "#   or get_model(THIS_CONFIG, pretrained=CHECKPOINT) for the model alone",
               "#   (mmpretrain's inference_model knows the names of its ModelHub only)."])
    lines += [f'{name} = {_format(value, lead=len(name) + 3)}' for name, value in sections.items()]
    return '\n'.join(lines) + '\n'


def image_config_sections(spec: ModelSpec) -> dict:
    """The sections of an mmpretrain test config for an image ``spec``."""
    dataset = (dict(type='ImageNet', data_root='data/imagenet', split='val')
               if spec.imagenet else
               dict(type='CustomDataset', data_root='data/custom', data_prefix='val'))
    sections = dict(
        custom_imports=dict(imports=['mmrev'], allow_failed_imports=False),
        default_scope='mmpretrain',
        model=classifier_config(spec),
        data_preprocessor=dict(
            num_classes=spec.num_classes, mean=[round(m * 255, 4) for m in spec.mean],
            std=[round(s * 255, 4) for s in spec.std], to_rgb=True),
        test_pipeline=eval_pipeline(spec),
        test_dataloader=dict(
            batch_size=64, num_workers=4,
            dataset=dict(dataset, pipeline=_Name('test_pipeline')),
            sampler=dict(type='DefaultSampler', shuffle=False)),
        test_evaluator=dict(type='Accuracy', topk=_topk(spec.num_classes)),
        test_cfg=dict(),
    )
    return sections


def _format(value: Any, indent: int = 0, lead: int = 0, width: int = 88) -> str:
    """Python source of ``value``: ``dict(...)`` for dicts, one item a line when the
    one-line form does not fit in ``width`` after ``indent`` and ``lead`` characters."""
    if isinstance(value, dict):
        items = [f'{k}={_format(v, indent + 4, len(k) + 1)}' for k, v in value.items()]
        opening, closing = 'dict(', ')'
    elif isinstance(value, (list, tuple)):
        items = [_format(v, indent + 4) for v in value]
        opening, closing = ('[', ']') if isinstance(value, list) else ('(', ')')
        if isinstance(value, tuple) and len(value) == 1:
            return f'({items[0]}, )'
    else:
        return repr(value)
    one_line = opening + ', '.join(items) + closing
    if indent + lead + len(one_line) < width and '\n' not in one_line:
        return one_line
    pad = ' ' * (indent + 4)
    return opening + '\n' + ''.join(f'{pad}{item},\n' for item in items) + \
        ' ' * indent + closing
