"""The model a SlowFast checkpoint holds, as an mmpretrain config.

A :class:`ModelSpec` comes from SlowFast's own config (the ``cfg`` yaml text that
SlowFast stores in its checkpoints) or, without one, from the key names and shapes of
the weights. :func:`config_text` writes it as a self-contained mmpretrain config file.
"""
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import yaml
from torch import Tensor

from .slowfast import REV_LAYER_PREFIX, SlowFastConversionError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# SlowFast options mmrev does not implement, with the only value it supports.
UNSUPPORTED_OPTIONS = {
    ('MVIT', 'PATCH_2D'): True,
    ('MVIT', 'CLS_EMBED_ON'): False,
    ('MVIT', 'USE_ABS_POS'): True,
    ('MVIT', 'SEP_POS_EMBED'): False,
    ('MVIT', 'USE_FIXED_SINCOS_POS'): False,
    ('MVIT', 'REL_POS_SPATIAL'): False,
    ('MVIT', 'REL_POS_TEMPORAL'): False,
    ('MVIT', 'USE_MEAN_POOLING'): False,
    ('MVIT', 'LAYER_SCALE_INIT_VALUE'): 0.0,
    ('MVIT', 'NORM'): 'layernorm',
    ('MVIT', 'NORM_STEM'): False,
    ('DATA', 'INPUT_CHANNEL_NUM'): [3],
}


@dataclass
class ModelSpec:
    """What a SlowFast checkpoint's model is, in mmpretrain terms.

    Args:
        backbone (dict): the mmrev backbone config (``type``, ``arch``, ...).
        num_classes (int): classes of the head.
        head_channels (int): input channels of the head (2C of the last stage).
        crop_size (int): test crop size. Defaults to 224.
        val_crop_ratio (float): crop size / resized short side at test time, 0 to
            resize straight to the crop size. Defaults to 0.875 (256 -> 224).
        mean, std (sequence of float): normalisation, on a 0..1 scale.
        imagenet (bool): the model is an ImageNet-1k classifier.
    """
    backbone: Dict[str, Any]
    num_classes: int
    head_channels: int
    crop_size: int = 224
    val_crop_ratio: float = 0.875
    mean: Sequence[float] = IMAGENET_MEAN
    std: Sequence[float] = IMAGENET_STD
    imagenet: bool = field(default=False)

    @property
    def kind(self) -> str:
        return self.backbone['type'].split('.')[-1]


def spec_from_slowfast_cfg(cfg_text: str) -> ModelSpec:
    """The model described by a SlowFast config dump (yaml text)."""
    try:
        cfg = yaml.safe_load(cfg_text)
    except yaml.YAMLError as e:
        raise SlowFastConversionError(
            f"The checkpoint's cfg is not valid yaml: {e}") from e
    if not isinstance(cfg, dict) or 'MVIT' not in cfg or 'MODEL' not in cfg:
        raise SlowFastConversionError(
            "The checkpoint's cfg is not a SlowFast config (no MODEL or MVIT section)")
    model, mvit, data = cfg['MODEL'], cfg['MVIT'], cfg.get('DATA', {})
    if model.get('MODEL_NAME') != 'MViT' or not mvit.get('REV', {}).get('ENABLE'):
        raise SlowFastConversionError(
            f"The checkpoint's cfg describes a {model.get('MODEL_NAME')} model without "
            'MVIT.REV.ENABLE: mmrev converts only reversible MViT/ViT models')
    for (section, option), supported in UNSUPPORTED_OPTIONS.items():
        value = cfg.get(section, {}).get(option, supported)
        if value != supported:
            raise SlowFastConversionError(
                f'SlowFast option {section}.{option} = {value!r} is not supported by '
                f'mmrev (only {supported!r})')
    if _is_plain_vit(mvit):
        backbone = _revvit_backbone_from_cfg(mvit, data)
        head_channels = 2 * mvit['EMBED_DIM']
    else:
        raise SlowFastConversionError(
            'The checkpoint\'s cfg describes a RevMViT (pooling or stage transitions): '
            'not supported yet')
    return ModelSpec(
        backbone=backbone,
        num_classes=model['NUM_CLASSES'],
        head_channels=head_channels,
        crop_size=data.get('TEST_CROP_SIZE', 224),
        val_crop_ratio=data.get('IN_VAL_CROP_RATIO', 0.875),
        mean=tuple(data.get('MEAN', IMAGENET_MEAN)),
        std=tuple(data.get('STD', IMAGENET_STD)),
        imagenet=(cfg.get('TEST', {}).get('DATASET') == 'imagenet'
                  and model['NUM_CLASSES'] == 1000))


def _is_plain_vit(mvit: dict) -> bool:
    """No pooling, no stage transition and non-overlapping patches: a RevViT."""
    return (not mvit.get('DIM_MUL') and not mvit.get('POOL_Q_STRIDE')
            and not mvit.get('POOL_KV_STRIDE') and not mvit.get('POOL_KV_STRIDE_ADAPTIVE')
            and not mvit.get('POOL_KVQ_KERNEL')
            and mvit['PATCH_KERNEL'] == mvit['PATCH_STRIDE']
            and not any(mvit['PATCH_PADDING']))


def _revvit_backbone_from_cfg(mvit: dict, data: dict) -> dict:
    kernel = mvit['PATCH_KERNEL']
    if len(set(kernel)) != 1:
        raise SlowFastConversionError(
            f'Non-square patches {kernel} are not supported by mmrev.RevViT')
    embed_dims = mvit['EMBED_DIM']
    return dict(
        type='mmrev.RevViT',
        arch=dict(embed_dims=embed_dims, num_layers=mvit['DEPTH'],
                  num_heads=mvit['NUM_HEADS'],
                  feedforward_channels=int(embed_dims * mvit['MLP_RATIO'])),
        img_size=data.get('TRAIN_CROP_SIZE', 224),
        patch_size=kernel[0],
        qkv_bias=mvit.get('QKV_BIAS', True),
        drop_rate=mvit.get('DROPOUT_RATE', 0.),
        drop_path_rate=mvit.get('DROPPATH_RATE', 0.))


def spec_from_state_dict(state_dict: Mapping[str, Tensor], kind: str,
                         arch: Optional[Union[str, dict]] = None) -> ModelSpec:
    """The model of SlowFast weights without a cfg, from key names and shapes.

    The number of attention heads is not in the weights: it is taken from ``arch``
    (an arch name or dict of the backbone) or from the arch zoo entry whose other
    dimensions match.
    """
    if kind != 'RevViT':
        raise SlowFastConversionError(
            f'Inferring a SlowFast {kind} architecture is not supported yet')
    embed_dims, _, kernel_h, kernel_w = _shape(state_dict, 'patch_embed.proj.weight')
    num_tokens = _shape(state_dict, 'pos_embed')[1]
    grid = math.isqrt(num_tokens)
    if grid * grid != num_tokens or kernel_h != kernel_w:
        raise SlowFastConversionError(
            f'Cannot infer the image size: pos_embed has {num_tokens} tokens, patches '
            f'are {kernel_h}x{kernel_w}; pass a checkpoint with its cfg')
    arch = arch or _revvit_zoo_arch(
        embed_dims=embed_dims,
        num_layers=len(_layer_indices(state_dict)),
        feedforward_channels=_shape(state_dict,
                                    f'{REV_LAYER_PREFIX}0.G.mlp.fc1.weight')[0])
    num_classes, head_channels = _shape(state_dict, 'head.projection.weight')
    return ModelSpec(
        backbone=dict(type='mmrev.RevViT', arch=arch, img_size=grid * kernel_h,
                      patch_size=kernel_h,
                      qkv_bias=f'{REV_LAYER_PREFIX}0.F.attn.q.bias' in state_dict),
        num_classes=num_classes, head_channels=head_channels,
        crop_size=grid * kernel_h, imagenet=num_classes == 1000)


def _revvit_zoo_arch(**dims) -> str:
    from mmrev.models import RevViT
    for name, setting in RevViT.arch_zoo.items():
        if len(name) > 1 and all(setting[k] == v for k, v in dims.items()):
            return name
    raise SlowFastConversionError(
        f'The weights ({dims}) match no RevViT arch, and the number of attention heads '
        'is not stored in them: pass the arch, e.g. --arch \'{"embed_dims": ..., '
        '"num_layers": ..., "num_heads": ..., "feedforward_channels": ...}\'')


def _shape(state_dict: Mapping[str, Tensor], key: str) -> List[int]:
    if key not in state_dict:
        raise SlowFastConversionError(f'Missing key {key!r} in the SlowFast weights')
    return list(state_dict[key].shape)


def _layer_indices(state_dict: Mapping[str, Tensor]) -> List[int]:
    return sorted({int(k[len(REV_LAYER_PREFIX):].split('.')[0])
                   for k in state_dict if k.startswith(REV_LAYER_PREFIX)})


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


def test_pipeline(spec: ModelSpec) -> List[dict]:
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
        test_pipeline=test_pipeline(spec),
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
