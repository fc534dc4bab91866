"""The model a SlowFast checkpoint holds, as a :class:`ModelSpec`.

A spec comes from SlowFast's own config (the ``cfg`` yaml text that SlowFast stores in
its checkpoints) or, without one, from the key names and shapes of the weights.
"""
import math
from dataclasses import dataclass
from functools import partial
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import yaml
from torch import Tensor

from .slowfast import (
    REV_LAYER_PREFIX,
    SlowFastConversionError,
    is_video,
    layer_indices,
    transition_layers,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
KINETICS_MEAN = (0.45, 0.45, 0.45)
KINETICS_STD = (0.225, 0.225, 0.225)

# SlowFast options for features mmrev does not implement: the only value it supports.
# (MVIT.CLS_EMBED_ON and the video options PATCH_2D, SEP_POS_EMBED: see the checks in
# spec_from_slowfast_cfg.)
REQUIRED_OPTION_VALUES = {
    ('MVIT', 'USE_ABS_POS'): True,
    ('MVIT', 'USE_FIXED_SINCOS_POS'): False,
    ('MVIT', 'REL_POS_SPATIAL'): False,
    ('MVIT', 'REL_POS_TEMPORAL'): False,
    ('MVIT', 'USE_MEAN_POOLING'): False,
    ('MVIT', 'LAYER_SCALE_INIT_VALUE'): 0.0,
    ('MVIT', 'NORM'): 'layernorm',
    ('MVIT', 'NORM_STEM'): False,
    ('MVIT', 'MODE'): 'conv',
    ('MVIT', 'POOL_FIRST'): False,
    ('MVIT', 'RESIDUAL_POOLING'): False,
    ('MVIT', 'DIM_MUL_IN_ATT'): False,
    ('DATA', 'INPUT_CHANNEL_NUM'): [3],
}


@dataclass
class VideoProtocol:
    """How a SlowFast video model samples and tests clips.

    Args:
        num_frames (int): frames per clip. Defaults to 16.
        sampling_rate (int): frame interval within a clip. Defaults to 4.
        num_clips (int): clips (temporal views) per video at test time. Defaults to 5.
        num_crops (int): spatial crops per clip at test time. Defaults to 1.
        short_side (int): short side the frames are resized to before cropping at test
            time (SlowFast: the smallest training scale for one crop, the crop size
            for three). Defaults to 256.
        dropout (float): dropout before the classifier (``MODEL.DROPOUT_RATE``).
            Defaults to 0.5.
    """
    num_frames: int = 16
    sampling_rate: int = 4
    num_clips: int = 5
    num_crops: int = 1
    short_side: int = 256
    dropout: float = 0.5


@dataclass
class ModelSpec:
    """What a SlowFast checkpoint's model is, in mmpretrain (images) or mmaction2
    (video) terms.

    Args:
        backbone (dict): the mmrev backbone config (``type``, ``arch``, ...).
        num_classes (int): classes of the head.
        head_channels (int): input channels of the head (2C of the last stage).
        crop_size (int): test crop size. Defaults to 224.
        val_crop_ratio (float): crop size / resized short side at test time, 0 to
            resize straight to the crop size. Defaults to 0.875 (256 -> 224).
        mean, std (sequence of float): normalisation, on a 0..1 scale.
        imagenet (bool): the model is an ImageNet-1k classifier.
        video (VideoProtocol, optional): for video models, how clips are sampled.
        kinetics400 (bool): the model is a Kinetics-400 classifier.
    """
    backbone: Dict[str, Any]
    num_classes: int
    head_channels: int
    crop_size: int = 224
    val_crop_ratio: float = 0.875
    mean: Sequence[float] = IMAGENET_MEAN
    std: Sequence[float] = IMAGENET_STD
    imagenet: bool = False
    video: Optional[VideoProtocol] = None
    kinetics400: bool = False

    @property
    def kind(self) -> str:
        return self.backbone['type'].split('.')[-1]


def spec_from_slowfast_cfg(cfg_text: str,
                           state_dict: Optional[Mapping[str, Tensor]] = None) -> ModelSpec:
    """The model described by a SlowFast config dump (yaml text), checked against its
    weights ``state_dict`` where the config alone cannot tell (``MVIT.CLS_EMBED_ON``:
    SlowFast's shipped Kinetics config says True, but its reversible model cannot have a
    class token; weights without a ``cls_token`` are of a model built without one)."""
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
    for (section, option), supported in REQUIRED_OPTION_VALUES.items():
        value = cfg.get(section, {}).get(option, supported)
        if value != supported:
            raise SlowFastConversionError(
                f'SlowFast option {section}.{option} = {value!r} is not supported by '
                f'mmrev (only {supported!r})')
    if mvit.get('CLS_EMBED_ON', False) and (state_dict is None or 'cls_token' in state_dict):
        raise SlowFastConversionError(
            'SlowFast option MVIT.CLS_EMBED_ON = True with a class token in the weights: '
            'reversible MViTs have none (SlowFast asserts it), so mmrev does not either')
    video = not mvit.get('PATCH_2D', True)
    if _is_plain_vit(mvit):
        if video:
            raise SlowFastConversionError(
                'A video RevViT (MVIT.PATCH_2D = False without pooling) is not supported '
                'by mmrev: only RevMViT for video')
        backbone = _revvit_backbone_from_cfg(mvit, data)
    else:
        backbone = _revmvit_backbone_from_cfg(mvit, data, video)
    test = cfg.get('TEST', {})
    spec = ModelSpec(
        backbone=backbone,
        num_classes=model['NUM_CLASSES'],
        head_channels=head_channels(backbone),
        crop_size=data.get('TEST_CROP_SIZE', 224),
        val_crop_ratio=data.get('IN_VAL_CROP_RATIO', 0.875),
        mean=tuple(data.get('MEAN', KINETICS_MEAN if video else IMAGENET_MEAN)),
        std=tuple(data.get('STD', KINETICS_STD if video else IMAGENET_STD)),
        imagenet=(test.get('DATASET') == 'imagenet' and model['NUM_CLASSES'] == 1000),
        kinetics400=(test.get('DATASET') == 'kinetics' and model['NUM_CLASSES'] == 400))
    if video:
        crops = test.get('NUM_SPATIAL_CROPS', 1)
        spec.video = VideoProtocol(
            num_frames=data.get('NUM_FRAMES', 16), sampling_rate=data.get('SAMPLING_RATE', 4),
            num_clips=test.get('NUM_ENSEMBLE_VIEWS', 5), num_crops=crops,
            short_side=(data.get('TRAIN_JITTER_SCALES', [256, 320])[0] if crops == 1
                        else spec.crop_size),
            dropout=model.get('DROPOUT_RATE', 0.5))
    return spec


def _is_plain_vit(mvit: dict) -> bool:
    """No pooling, no stage transition and non-overlapping patches: a RevViT."""
    return (not mvit.get('DIM_MUL') and not mvit.get('POOL_Q_STRIDE')
            and not mvit.get('POOL_KV_STRIDE') and not mvit.get('POOL_KV_STRIDE_ADAPTIVE')
            and not mvit.get('POOL_KVQ_KERNEL')
            and mvit['PATCH_KERNEL'] == mvit['PATCH_STRIDE']
            and not any(mvit['PATCH_PADDING']))


def _revvit_backbone_from_cfg(mvit: dict, data: dict) -> dict:
    embed_dims = mvit['EMBED_DIM']
    return dict(
        type='mmrev.RevViT',
        arch=dict(embed_dims=embed_dims, num_layers=mvit['DEPTH'],
                  num_heads=mvit['NUM_HEADS'],
                  feedforward_channels=int(embed_dims * mvit['MLP_RATIO']),
                  patch_size=_square(mvit['PATCH_KERNEL'], 'MVIT.PATCH_KERNEL'),
                  qkv_bias=mvit.get('QKV_BIAS', True)),
        img_size=data.get('TRAIN_CROP_SIZE', 224),
        drop_rate=mvit.get('DROPOUT_RATE', 0.),
        drop_path_rate=mvit.get('DROPPATH_RATE', 0.))


def _revmvit_backbone_from_cfg(mvit: dict, data: dict, video: bool) -> dict:
    transitions = sorted(mvit['REV']['BUFFER_LAYERS'])
    depth = mvit['DEPTH']
    size = partial(_size, video=video)

    def at_transitions(option: str, default: list) -> list:
        """Per-layer ``[[layer, values...], ...]`` option, one entry per transition."""
        entries = {entry[0]: entry[1:] for entry in mvit.get(option) or []}
        if not set(entries) <= set(transitions):
            raise SlowFastConversionError(
                f'MVIT.{option} = {mvit[option]} changes layers other than the stage '
                f'transitions MVIT.REV.BUFFER_LAYERS = {transitions}: not supported')
        return [entries.get(t, default) for t in transitions]

    q_stride = [size(s, 'MVIT.POOL_Q_STRIDE') for s in at_transitions('POOL_Q_STRIDE',
                                                                      [1, 1, 1])]
    kv_strides = {entry[0]: size(entry[1:], 'MVIT.POOL_KV_STRIDE')
                  for entry in mvit.get('POOL_KV_STRIDE') or []}
    adaptive = mvit.get('POOL_KV_STRIDE_ADAPTIVE')
    kv_stride = kv_strides.get(0) or (adaptive and size(adaptive, 'MVIT.POOL_KV_STRIDE'))
    if not kv_stride or not mvit.get('POOL_KVQ_KERNEL'):
        raise SlowFastConversionError(
            'RevMViT without k/v pooling (MVIT.POOL_KV_STRIDE_ADAPTIVE and '
            'MVIT.POOL_KVQ_KERNEL unset) is not supported by mmrev')
    if kv_strides and kv_strides != _kv_strides(kv_stride, q_stride, transitions, depth):
        raise SlowFastConversionError(
            f'MVIT.POOL_KV_STRIDE = {mvit["POOL_KV_STRIDE"]} is not the adaptive pattern '
            f'mmrev supports (stride divided by each transition\'s q stride)')
    if mvit.get('SEP_POS_EMBED', False) and not video:
        raise SlowFastConversionError('SlowFast option MVIT.SEP_POS_EMBED = True is for '
                                      'video models (MVIT.PATCH_2D = False) only')
    arch = dict(
        embed_dims=mvit['EMBED_DIM'], num_layers=depth, num_heads=mvit['NUM_HEADS'],
        transition_layers=transitions,
        dim_mul=_one_or_list([m[0] for m in at_transitions('DIM_MUL', [1.0])]),
        head_mul=_one_or_list([m[0] for m in at_transitions('HEAD_MUL', [1.0])]),
        q_stride=_one_or_list(q_stride), kv_stride=kv_stride,
        pool_kernel=size(mvit['POOL_KVQ_KERNEL'], 'MVIT.POOL_KVQ_KERNEL'),
        pre_q_fusion=mvit['REV']['PRE_Q_FUSION'], res_path=mvit['REV']['RES_PATH'],
        mlp_ratio=mvit['MLP_RATIO'], qkv_bias=mvit.get('QKV_BIAS', True),
        patch_kernel=size(mvit['PATCH_KERNEL'], 'MVIT.PATCH_KERNEL'),
        patch_stride=size(mvit['PATCH_STRIDE'], 'MVIT.PATCH_STRIDE'),
        patch_padding=size(mvit['PATCH_PADDING'], 'MVIT.PATCH_PADDING'),
        sep_pos_embed=mvit.get('SEP_POS_EMBED', False))
    backbone = dict(type='mmrev.RevMViT', arch=_zoo_name_or(arch),
                    img_size=data.get('TRAIN_CROP_SIZE', 224),
                    drop_path_rate=mvit.get('DROPPATH_RATE', 0.))
    if video:
        backbone.update(num_frames=data.get('NUM_FRAMES', 16), out_type='featmap')
    return backbone


def _kv_strides(kv_stride, q_strides: list, transitions: list, depth: int) -> dict:
    """The k/v pooling stride of every layer: divided by each transition's q stride
    (per axis for clips)."""
    strides = {}
    for i in range(depth):
        if i in transitions:
            q = q_strides[transitions.index(i)]
            kv_stride = (tuple(max(kv // s, 1) for kv, s in zip(kv_stride, q))
                         if isinstance(kv_stride, tuple) else max(kv_stride // q, 1))
        strides[i] = kv_stride
    return strides


def _size(size: Sequence[int], option: str, video: bool) -> Union[int, tuple]:
    """An image model's 2-D ``[h, w]`` size (or ``[1, h, w]``), which must be square, as
    its side; a video model's ``[t, h, w]`` as a tuple."""
    size = list(size)
    if video:
        if len(size) != 3:
            raise SlowFastConversionError(
                f'{option} = {size} is not a (time, height, width) size of a video model')
        return tuple(size)
    if len(size) == 3 and size[0] == 1:
        size = size[1:]
    if len(size) != 2 or size[0] != size[1]:
        raise SlowFastConversionError(
            f'{option} = {size} is not supported by mmrev: only square 2-D sizes')
    return size[0]


def _square(size: Sequence[int], option: str) -> int:
    return _size(size, option, video=False)


def _zoo_name_or(arch: dict) -> Union[str, dict]:
    """The name of the RevMViT arch zoo entry equal to ``arch``, else ``arch``."""
    from mmrev.models import RevMViT
    for name, setting in RevMViT.arch_zoo.items():
        if len(name) > 2 and dict(setting, transition_layers=list(
                setting['transition_layers'])) == arch:
            return name
    return arch


def _one_or_list(values: list) -> Union[float, list]:
    return values[0] if len(set(values)) == 1 else values


def head_channels(backbone: dict) -> int:
    """Input channels of the head for the backbone config ``backbone``: the
    ``[Y1, Y2]`` width of the last stage (RevMViT: SlowFast's rounding of heads and
    widths at each transition)."""
    from mmrev.models import RevMViT, RevViT
    if backbone['type'].endswith('RevViT'):
        return 2 * RevViT._parse_arch(backbone['arch'])['embed_dims']
    from mmrev.models.backbones.revmvit import round_width
    arch = RevMViT._parse_arch(backbone['arch'])
    channels, num_heads = arch['embed_dims'], arch['num_heads']
    for t in range(len(arch['transition_layers'])):
        num_heads = round_width(num_heads, _nth(arch['head_mul'], t))
        channels = round_width(channels, _nth(arch['dim_mul'], t), num_heads)
    return 2 * channels


def _nth(value: Union[float, list], index: int) -> float:
    return value[index] if isinstance(value, list) else value


def spec_from_state_dict(state_dict: Mapping[str, Tensor], kind: str,
                         arch: Optional[Union[str, dict]] = None) -> ModelSpec:
    """The model of SlowFast weights without a cfg, from key names and shapes, or with
    the backbone ``arch`` (a name or dict) given.

    RevViT: the number of attention heads is not in the weights; it comes from the arch
    zoo entry whose other dimensions match. RevMViT: heads come from the shapes of the
    pooling kernels; strides, padding and the residual path are not in the weights and
    are those of arch ``'base'`` (SlowFast's REV_MVIT_B_16_CONV).
    """
    from mmrev.models import RevMViT, RevViT
    backbone_class = RevViT if kind == 'RevViT' else RevMViT
    video = is_video(state_dict)
    if kind == 'RevViT':
        arch = arch or _revvit_zoo_arch(state_dict)
    else:
        arch = arch or _revmvit_arch_from_weights(state_dict)
    try:
        settings = backbone_class._parse_arch(arch)
    except ValueError as e:
        raise SlowFastConversionError(str(e)) from e
    num_tokens = _shape(state_dict, 'pos_embed_spatial' if video else 'pos_embed')[1]
    grid = math.isqrt(num_tokens)
    if grid * grid != num_tokens:
        raise SlowFastConversionError(
            f'Cannot infer the image size from a position embedding of {num_tokens} '
            f'tokens: pass a checkpoint with its SlowFast cfg')
    backbone = dict(type=f'mmrev.{kind}', arch=arch)
    if kind == 'RevViT':
        in_weights = dict(
            patch_size=_square(_shape(state_dict, 'patch_embed.proj.weight')[2:],
                               'The patch embedding kernel'),
            qkv_bias=f'{REV_LAYER_PREFIX}0.F.attn.q.bias' in state_dict)
        if any(settings[k] != v for k, v in in_weights.items()):
            backbone['arch'] = dict(settings, **in_weights)
        backbone.update(img_size=grid * in_weights['patch_size'])
    else:
        stride = RevMViT._per_axis(settings, 'patch_stride', RevMViT._grid_dims(settings))
        backbone.update(img_size=grid * stride[-1])
    num_classes, in_channels = _shape(state_dict, 'head.projection.weight')
    spec = ModelSpec(backbone=backbone, num_classes=num_classes, head_channels=in_channels,
                     crop_size=backbone['img_size'], imagenet=num_classes == 1000)
    if video:
        frames = _shape(state_dict, 'pos_embed_temporal')[1] * stride[0]
        backbone.update(num_frames=frames, out_type='featmap')
        spec.video = VideoProtocol(num_frames=frames)
        spec.mean, spec.std = KINETICS_MEAN, KINETICS_STD
        spec.kinetics400 = num_classes == 400
    return spec


def _revvit_zoo_arch(state_dict: Mapping[str, Tensor]) -> str:
    """The RevViT arch whose dimensions match the weights (the number of heads is not
    stored in them)."""
    from mmrev.models import RevViT
    dims = dict(
        embed_dims=_shape(state_dict, 'patch_embed.proj.weight')[0],
        num_layers=len(layer_indices(state_dict)),
        feedforward_channels=_shape(state_dict, f'{REV_LAYER_PREFIX}0.G.mlp.fc1.weight')[0])
    for name, setting in RevViT.arch_zoo.items():
        if len(name) > 1 and all(setting[k] == v for k, v in dims.items()):
            return name
    raise SlowFastConversionError(
        f'The weights ({dims}) match no RevViT arch, and the number of attention heads '
        'is not stored in them: pass the arch, e.g. --arch \'{"embed_dims": ..., '
        '"num_layers": ..., "num_heads": ..., "feedforward_channels": ...}\'')


def _revmvit_arch_from_weights(state_dict: Mapping[str, Tensor]) -> Union[str, dict]:
    """The RevMViT arch of the weights (its name if it is in the arch zoo). Strides,
    padding and the residual path are not in the weights: those of ``base`` (images) or
    ``video-base`` (clips); nor is the fusion of the streams when it has no weights:
    ``avg`` (SlowFast's default and the official video model's) for clips."""
    from mmrev.models import RevMViT
    video = is_video(state_dict)
    base = RevMViT.arch_zoo['video-base' if video else 'base']
    transitions = transition_layers(state_dict)

    def layer_shape(i: int, name: str) -> List[int]:
        return _shape(state_dict, f'{REV_LAYER_PREFIX}{i}.{name}')

    def width(i: int) -> int:
        return layer_shape(i, 'G.norm.weight')[0]

    def heads(i: int) -> int:
        return width(i) // layer_shape(i, 'F.attn.pool_k.weight')[0]

    fuse_key = f'{REV_LAYER_PREFIX}{transitions[0]}.pre_q_fuse.fuse_fn.fc1.weight' \
        if transitions else None
    if fuse_key in state_dict:
        hidden, channels = state_dict[fuse_key].shape
        fusion = f'concat_linear_{hidden / channels:g}'
    elif any('.res_proj.' in k for k in state_dict):
        if not video:
            raise SlowFastConversionError(
                'The stream fusion of these weights (avg, max, min or add) is not stored '
                'in them: pass the arch with its pre_q_fusion')
        fusion = 'avg'
    else:
        fusion = 'concat'
    pool_kernel = layer_shape(0, 'F.attn.pool_k.weight')[2:]
    patch_kernel = _shape(state_dict, 'patch_embed.proj.weight')[2:]
    arch = dict(
        embed_dims=width(0), num_layers=len(layer_indices(state_dict)),
        num_heads=heads(0), transition_layers=transitions,
        dim_mul=_one_or_list([width(t) / width(t - 1) for t in transitions]),
        head_mul=_one_or_list([heads(t) / heads(t - 1) for t in transitions]),
        q_stride=base['q_stride'], kv_stride=base['kv_stride'],
        pool_kernel=_size(pool_kernel if video else pool_kernel[-2:], 'The pooling kernel',
                          video),
        pre_q_fusion=fusion, res_path=base['res_path'],
        mlp_ratio=layer_shape(0, 'G.mlp.fc1.weight')[0] / width(0),
        qkv_bias=any(f'{REV_LAYER_PREFIX}0.F.attn.{name}.bias' in state_dict
                     for name in ('q', 'qkv')),
        patch_kernel=_size(patch_kernel, 'The patch embedding kernel', video),
        patch_stride=base['patch_stride'], patch_padding=base['patch_padding'],
        sep_pos_embed='pos_embed_spatial' in state_dict)
    return _zoo_name_or(arch)


def _shape(state_dict: Mapping[str, Tensor], key: str) -> List[int]:
    if key not in state_dict:
        raise SlowFastConversionError(f'Missing key {key!r} in the SlowFast weights')
    return list(state_dict[key].shape)
