"""A :class:`ModelSpec` as a self-contained mmpretrain config (model, SlowFast's
evaluation pipeline, test dataloader)."""
from typing import Any, List

from .slowfast_config import ModelSpec


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


def config_text(spec: ModelSpec, source: str) -> str:
    """A self-contained mmpretrain config file (python text) for ``spec``."""
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
    lines = [f'# {spec.kind} converted from the SlowFast checkpoint {source}',
             '# by tools/model_converters/slowfast_to_mmrev.py.']
    lines += [f'{name} = {_format(value, lead=len(name) + 3)}' for name, value in sections.items()]
    return '\n'.join(lines) + '\n'


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
