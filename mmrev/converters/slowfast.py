"""SlowFast reversible checkpoints (``MVIT.REV.ENABLE``) to mmrev state_dicts.

Pure functions on dicts of tensors: recognise a SlowFast checkpoint, tell RevViT from
RevMViT, and rename (and fuse, reshape) its keys into those of an mmpretrain
``ImageClassifier`` with an mmrev backbone (``backbone.*``) and a ``LinearClsHead``
(``head.fc.*``).
"""
import re
from collections import OrderedDict
from typing import Dict, Iterable, List, Mapping, Optional

import torch
from mmengine.utils import track_iter_progress
from torch import Tensor

REV_LAYER_PREFIX = 'rev_backbone.layers.'
MVIT_KEY_MARKERS = ('.attn.pool_', '.pre_q_fuse.', '.res_proj.')

# (SlowFast key pattern, mmrev key) per model kind, tried in order.
KEY_RULES = {
    'RevViT': [
        (r'^pos_embed$', 'backbone.pos_embed'),
        (r'^patch_embed\.proj\.(weight|bias)$', r'backbone.patch_embed.projection.\1'),
        (r'^rev_backbone\.layers\.(\d+)\.F\.(norm|attn\.[qkv]|attn\.proj)\.(weight|bias)$',
         r'backbone.layers.\1.f.\2.\3'),
        (r'^rev_backbone\.layers\.(\d+)\.G\.(norm|mlp\.fc1|mlp\.fc2)\.(weight|bias)$',
         r'backbone.layers.\1.g.\2.\3'),
        (r'^norm\.(weight|bias)$', r'backbone.norm.\1'),
        (r'^head\.projection\.(weight|bias)$', r'head.fc.\1'),
    ],
}
# Separate q, k, v Linears (SlowFast) are fused into one qkv Linear, rows in q, k, v order.
FUSED_QKV = {'RevViT': True}
SEPARATE_QKV = re.compile(r'^(.*\.attn\.)([qkv])\.(weight|bias)$')


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
        raise SlowFastConversionError(
            "This is an OpenMMLab checkpoint (it has a 'state_dict' entry), not a "
            'SlowFast one: it needs no conversion')
    else:
        state = checkpoint
    if not isinstance(state, Mapping) or not state:
        raise SlowFastConversionError('The checkpoint holds no model weights')
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


def rename_key(key: str, kind: str) -> Optional[str]:
    """The mmrev name of SlowFast key ``key``, or None if no rule of ``kind`` knows it."""
    for pattern, replacement in KEY_RULES[kind]:
        new_key, found = re.subn(pattern, replacement, key)
        if found:
            return new_key
    return None


def convert_state_dict(state_dict: Mapping[str, Tensor], kind: Optional[str] = None,
                       progress: bool = False) -> 'OrderedDict[str, Tensor]':
    """Rename a SlowFast state_dict into mmrev ``backbone.*`` / ``head.fc.*`` keys.

    Args:
        state_dict: SlowFast weights (``checkpoint['model_state']``).
        kind: ``'RevViT'`` or ``'RevMViT'``; detected from the keys when None.
        progress: show a progress bar over the keys.

    Raises ``SlowFastConversionError`` for keys no rule knows or incomplete q/k/v.
    """
    kind = kind or detect_model_kind(state_dict)
    if kind not in KEY_RULES:
        raise SlowFastConversionError(
            f'Converting SlowFast {kind} checkpoints is not supported yet')
    converted, unknown, qkv_parts = OrderedDict(), [], {}
    items: Iterable = state_dict.items()
    if progress:
        items = track_iter_progress(list(items))
    for key, value in items:
        new_key = rename_key(key, kind)
        if new_key is None:
            unknown.append(key)
            continue
        match = SEPARATE_QKV.match(new_key) if FUSED_QKV[kind] else None
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
    meta = dict(converted_from='SlowFast', model=kind)
    if isinstance(checkpoint.get('epoch'), int):
        meta['slowfast_epoch'] = checkpoint['epoch']
    return dict(state_dict=convert_state_dict(state_dict, kind, progress), meta=meta)


def preview_keys(keys: List[str], limit: int = 5) -> str:
    shown = ', '.join(repr(k) for k in keys[:limit])
    return shown + (f' and {len(keys) - limit} more' if len(keys) > limit else '')
