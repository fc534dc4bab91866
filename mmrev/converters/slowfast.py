"""SlowFast reversible checkpoints (``MVIT.REV.ENABLE``) to mmrev state_dicts.

Pure functions on dicts of tensors: recognise a SlowFast checkpoint, tell RevViT from
RevMViT and image from video models, and rename (and fuse, split, reshape) its keys into
those of an mmpretrain ``ImageClassifier`` with an mmrev backbone (``backbone.*``) and a
``LinearClsHead`` (``head.fc.*``), or for video models an mmaction2 ``Recognizer3D``
(``backbone.*``, ``cls_head.fc_cls.*``).
"""
import re
from collections import OrderedDict
from typing import Callable, Dict, Iterable, List, Mapping, Optional

import torch
from mmengine.logging import print_log
from mmengine.utils import track_iter_progress
from torch import Tensor

REV_LAYER_PREFIX = 'rev_backbone.layers.'
MVIT_KEY_MARKERS = ('.attn.pool_', '.pre_q_fuse.', '.res_proj.')

# SlowFast -> mmrev names outside the layers, and inside a layer (after its prefix).
TOP_LEVEL_RULES = [
    (r'^(pos_embed|pos_embed_spatial|pos_embed_temporal)$', r'backbone.\1'),
    (r'^patch_embed\.proj\.(weight|bias)$', r'backbone.patch_embed.projection.\1'),
]
HEAD_KEY = re.compile(r'^head\.projection\.(weight|bias)$')
HEAD_NAMES = {False: 'head.fc', True: 'cls_head.fc_cls'}  # mmpretrain / mmaction2
LAYER_RULES = [
    (r'^F\.(norm|attn\.[qkv]|attn\.qkv|attn\.proj|attn\.norm_[qkv])\.(weight|bias)$',
     r'f.\1.\2'),
    (r'^F\.attn\.pool_([qkv])\.weight$', r'f.attn.pool_\1.weight'),
    (r'^G\.(norm|mlp\.fc1|mlp\.fc2)\.(weight|bias)$', r'g.\1.\2'),
    (r'^pre_q_fuse\.fuse_fn\.(fc1|fc2)\.(weight|bias)$', r'pre_q_fuse.mlp.\1.\2'),
    (r'^res_proj\.(weight|bias)$', r'res_proj.\1'),
]
LAYER_KEY = re.compile(r'^rev_backbone\.layers\.(\d+)\.(.+)$')
FINAL_NORM_KEY = re.compile(r'^norm\.(weight|bias)$')
# Stage transitions (MVIT.REV.BUFFER_LAYERS) are the layers with q pooling, stream
# fusion or a residual projection.
TRANSITION_KEY = re.compile(
    r'^rev_backbone\.layers\.(\d+)\.(F\.attn\.pool_q\.|pre_q_fuse\.|res_proj\.)')
# RevViT fuses SlowFast's separate q, k, v Linears into one qkv Linear (rows q, k, v);
# RevMViT splits a fused one (SlowFast's default SEPARATE_QKV False) into q, k and v.
SEPARATE_QKV = re.compile(r'^(.*\.attn\.)([qkv])\.(weight|bias)$')
FUSED_QKV = re.compile(r'^(.*\.attn\.)qkv\.(weight|bias)$')
# Image RevMViT pools with Conv2d: SlowFast's Conv3d (C, 1, 1, k, k) loses its time dim.
POOL_WEIGHT = re.compile(r'\.attn\.pool_[qkv]\.weight$')
PATCH_WEIGHT = 'patch_embed.proj.weight'


def is_video(state_dict: Mapping[str, Tensor]) -> bool:
    """Whether SlowFast weights are of a video model (a 3-D patch embedding)."""
    weight = state_dict.get(PATCH_WEIGHT)
    return weight is not None and weight.ndim == 5


class SlowFastConversionError(ValueError):
    """A checkpoint that cannot be converted, with the reason and what to do."""


def is_slowfast_checkpoint(checkpoint) -> bool:
    """Whether ``checkpoint`` (as ``torch.load`` returns it) is a reversible SlowFast
    model: a dict with ``model_state``, or a bare state_dict, with
    ``rev_backbone.layers.*`` keys."""
    if not isinstance(checkpoint, Mapping):
        return False
    state = checkpoint.get('model_state', checkpoint)
    return isinstance(state, Mapping) and any(
        isinstance(k, str) and k.startswith(REV_LAYER_PREFIX) for k in state)


def slowfast_state_dict(checkpoint) -> Dict[str, Tensor]:
    """The model weights of a SlowFast checkpoint (``model_state``) or bare state_dict.

    Raises ``SlowFastConversionError`` for anything else, naming what was found.
    """
    if not isinstance(checkpoint, Mapping):
        raise SlowFastConversionError(
            f'Expected a checkpoint dict, got a {type(checkpoint).__name__}')
    if 'model_state' in checkpoint:
        state = checkpoint['model_state']
    elif 'state_dict' in checkpoint:
        what = ('an mmengine training checkpoint (state_dict, optimizer, message_hub)'
                if 'message_hub' in checkpoint or 'optimizer' in checkpoint else
                "an OpenMMLab checkpoint (it has a 'state_dict' entry)")
        raise SlowFastConversionError(
            f'This is {what}, not a SlowFast one: it needs no conversion; load it as it '
            f'is (load_from, --resume, init_cfg=dict(type="Pretrained", ...), '
            f'get_model(..., pretrained=PATH))')
    else:
        state = checkpoint
    if not isinstance(state, Mapping) or not state:
        raise SlowFastConversionError('The checkpoint holds no model weights')
    not_names = [repr(k) for k in state if not isinstance(k, str)]
    if not_names:
        raise SlowFastConversionError(
            f'Parameter names are strings; found {preview_keys(not_names)}: the file is '
            f'corrupted or not a SlowFast model')
    not_tensors = [k for k, v in state.items() if not isinstance(v, Tensor)]
    if not_tensors:
        raise SlowFastConversionError(
            f'Expected a SlowFast checkpoint (a dict with \'model_state\') or a '
            f'state_dict; found non-tensor entries {preview_keys(not_tensors)}')
    return dict(state)


def detect_model_kind(state_dict: Mapping[str, Tensor]) -> str:
    """``'RevViT'`` or ``'RevMViT'``, from the key names of a SlowFast state_dict.

    Raises ``SlowFastConversionError`` for weights of any other model.
    """
    keys = list(state_dict)
    if not any(k.startswith(REV_LAYER_PREFIX) for k in keys):
        if any(k.startswith('blocks.') for k in keys):
            what = ('a non-reversible MViT/ViT (blocks.* keys); mmrev converts only '
                    'reversible SlowFast models (MVIT.REV.ENABLE: True)')
        else:
            what = 'not a reversible SlowFast model'
        raise SlowFastConversionError(
            f'No {REV_LAYER_PREFIX}* keys: {what}. Found keys such as '
            f'{preview_keys(keys)}')
    if any(marker in k for k in keys for marker in MVIT_KEY_MARKERS):
        return 'RevMViT'
    return 'RevViT'


def layer_indices(state_dict: Mapping[str, Tensor]) -> List[int]:
    """The indices of SlowFast's ``rev_backbone.layers``."""
    return sorted({int(m.group(1)) for k in state_dict if (m := LAYER_KEY.match(k))})


def transition_layers(state_dict: Mapping[str, Tensor]) -> List[int]:
    """The layers of a SlowFast RevMViT that are stage transitions."""
    return sorted({int(m.group(1)) for k in state_dict if (m := TRANSITION_KEY.match(k))})


def key_renamer(state_dict: Mapping[str, Tensor], kind: str) -> Callable[[str], Optional[str]]:
    """A function giving the mmrev name of each SlowFast key of ``state_dict`` (None
    for keys it does not know).

    RevViT: ``rev_backbone.layers.{i}`` -> ``backbone.layers.{i}``, final ``norm`` ->
    ``backbone.norm``. RevMViT (see :class:`mmrev.models.RevMViT`): layer ``i`` of stage
    ``s`` (``s`` transitions ``t_1 < ... < t_s <= i``) -> ``backbone.stages.{s}.transition``
    if ``i == t_s``, else ``backbone.stages.{s}.blocks.{j}`` (``j = i - t_s - 1``, ``i``
    in stage 0); final ``norm`` -> ``backbone.norm{n}``. Inside a layer ``F``/``G`` ->
    ``f``/``g`` and ``pre_q_fuse.fuse_fn`` -> ``pre_q_fuse.mlp``. The classifier's
    ``head.projection`` -> ``head.fc`` (mmpretrain), for video ``cls_head.fc_cls``
    (mmaction2).
    """
    if kind == 'RevViT':
        layer_names = {i: f'layers.{i}' for i in layer_indices(state_dict)}
        final_norm = 'norm'
    else:
        transitions = transition_layers(state_dict)
        layer_names = {}
        for i in layer_indices(state_dict):
            s = sum(t <= i for t in transitions)
            first = transitions[s - 1] if s else -1
            layer_names[i] = (f'stages.{s}.transition' if s and i == first else
                              f'stages.{s}.blocks.{i - first - 1}')
        final_norm = f'norm{len(transitions)}'

    head = HEAD_NAMES[is_video(state_dict)]

    def rename(key: str) -> Optional[str]:
        layer = LAYER_KEY.match(key)
        if layer:
            inner = _apply_rules(LAYER_RULES, layer.group(2))
            return inner and f'backbone.{layer_names[int(layer.group(1))]}.{inner}'
        if FINAL_NORM_KEY.match(key):
            return f'backbone.{final_norm}.{key.split(".")[-1]}'
        if HEAD_KEY.match(key):
            return f'{head}.{key.split(".")[-1]}'
        return _apply_rules(TOP_LEVEL_RULES, key)

    return rename


def _apply_rules(rules: list, key: str) -> Optional[str]:
    for pattern, replacement in rules:
        new_key, found = re.subn(pattern, replacement, key)
        if found:
            return new_key
    return None


def convert_state_dict(state_dict: Mapping[str, Tensor], kind: Optional[str] = None,
                       progress: bool = False) -> 'OrderedDict[str, Tensor]':
    """Rename a SlowFast state_dict into mmrev ``backbone.*`` / head keys
    (:func:`key_renamer`), fusing q, k, v (RevViT) or splitting a fused qkv (RevMViT),
    and dropping the time dim of the pooling kernels of image RevMViTs.

    Args:
        state_dict: SlowFast weights (``checkpoint['model_state']``).
        kind: ``'RevViT'`` or ``'RevMViT'``; detected from the keys when None.
        progress: show a progress bar over the keys.

    Raises ``SlowFastConversionError`` for keys no rule knows or incomplete q/k/v.
    """
    kind = kind or detect_model_kind(state_dict)
    rename = key_renamer(state_dict, kind)
    squeeze_pools = not is_video(state_dict)
    converted, unknown, qkv_parts = OrderedDict(), [], {}
    items: Iterable = state_dict.items()
    if progress:
        items = track_iter_progress(list(items))
    for key, value in items:
        new_key = rename(key)
        if new_key is None:
            unknown.append(key)
            continue
        if (squeeze_pools and POOL_WEIGHT.search(new_key) and value.ndim == 5
                and value.shape[2] == 1):
            value = value.squeeze(2)
        fused = FUSED_QKV.match(new_key) if kind == 'RevMViT' else None
        if fused:
            if value.shape[0] % 3:
                raise SlowFastConversionError(
                    f'{key} has {value.shape[0]} rows, not three equal q, k, v parts')
            for part, rows in zip('qkv', value.chunk(3)):
                converted[f'{fused.group(1)}{part}.{fused.group(2)}'] = rows
            continue
        match = SEPARATE_QKV.match(new_key) if kind == 'RevViT' else None
        if match is None:
            converted[new_key] = value
            continue
        prefix, part, param = match.groups()
        fused_key = f'{prefix}qkv.{param}'
        converted.setdefault(fused_key, None)  # keeps the position of the first part
        qkv_parts.setdefault(fused_key, {})[part] = value
    if unknown:
        raise SlowFastConversionError(
            f'Unexpected keys for a SlowFast {kind}: {preview_keys(unknown)}')
    not_float = [f'{k} ({v.dtype})' for k, v in state_dict.items()
                 if not v.is_floating_point()]
    if not_float:
        raise SlowFastConversionError(
            f'The weights of a SlowFast {kind} are floating point; found '
            f'{preview_keys(not_float)}: the file is corrupted')
    for fused_key, parts in qkv_parts.items():
        if set(parts) != set('qkv'):
            missing = [fused_key.replace('qkv.', f'{p}.') for p in 'qkv' if p not in parts]
            raise SlowFastConversionError(
                f'Incomplete attention projection: missing {preview_keys(missing)}')
        shapes = [tuple(parts[p].shape) for p in 'qkv']
        if len(set(shapes)) > 1:
            raise SlowFastConversionError(
                f'Shape mismatch: q, k, v of {fused_key} have shapes {shapes}')
        converted[fused_key] = torch.cat([parts[p] for p in 'qkv'])
    return converted


def convert_slowfast_checkpoint(checkpoint, progress: bool = False) -> dict:
    """An mmpretrain-style checkpoint ``{'state_dict', 'meta'}`` from a SlowFast one
    (as ``torch.load`` returns it), with the weights renamed by
    :func:`convert_state_dict`."""
    state_dict = slowfast_state_dict(checkpoint)
    kind = detect_model_kind(state_dict)
    meta = dict(converted_from='SlowFast', model=kind,
                task='video' if is_video(state_dict) else 'image')
    if isinstance(checkpoint.get('epoch'), int):
        meta['slowfast_epoch'] = checkpoint['epoch']
    return dict(state_dict=convert_state_dict(state_dict, kind, progress), meta=meta)


def convert_if_slowfast(checkpoint, filename: str = 'checkpoint'):
    """``checkpoint`` converted by :func:`convert_slowfast_checkpoint` if it is a
    reversible SlowFast one, else unchanged: the on-the-fly step of mmrev's checkpoint
    loaders, so that ``pretrained=``/``init_cfg``/``load_checkpoint`` take ``.pyth``
    files and URLs of SlowFast's model zoo."""
    if not is_slowfast_checkpoint(checkpoint):
        return checkpoint
    print_log(f'{filename} is a SlowFast checkpoint: converting it for mmrev',
              logger='current')
    return convert_slowfast_checkpoint(checkpoint)


def preview_keys(keys: List[str], limit: int = 5) -> str:
    shown = ', '.join(repr(k) for k in keys[:limit])
    return shown + (f' and {len(keys) - limit} more' if len(keys) > limit else '')
