"""SlowFast checkpoint file -> mmpretrain checkpoint file (and config file).

Every problem is found before anything is written, and files are written to a
temporary file in the destination folder, then moved into place: a failed conversion
leaves no partial file and changes no existing one.
"""
import importlib
import os
import os.path as osp
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Union

import torch
from mmengine.registry import DefaultScope
from torch import Tensor

from ..fileio import write_atomically
from .config_file import config_text, model_config
from .slowfast import (
    SlowFastConversionError,
    convert_slowfast_checkpoint,
    detect_model_kind,
    preview_keys,
    slowfast_state_dict,
)
from .slowfast_config import (
    ModelSpec,
    spec_from_slowfast_cfg,
    spec_from_state_dict,
)

# The architecture without SlowFast cfg: what the weights do not tell is assumed.
NOT_IN_WEIGHTS = {
    'RevViT': 'inferred from the weights, with the attention heads of the RevViT arch '
              'of the same size',
    'RevMViT': 'inferred from the weights, with the q/kv strides, patch stride and '
               "padding and residual path of RevMViT arch 'base'",
}


@dataclass
class ConversionResult:
    """Where :func:`convert_slowfast_file` wrote what, and the model converted."""
    checkpoint: str
    config: Optional[str]
    spec: ModelSpec
    num_tensors: int


def read_checkpoint(path: str):
    """A local checkpoint file, read as mmrev's loaders read it (``weights_only``, with
    what mmengine training checkpoints hold), with a clear error for a missing file or
    one that is not a PyTorch checkpoint."""
    if not osp.isfile(path):
        raise SlowFastConversionError(
            f'{path} is a directory, not a checkpoint file' if osp.isdir(path) else
            f'No such file: {path}')
    from mmrev.engine.checkpoint import error_reason, load_checkpoint_file
    try:
        return load_checkpoint_file(path, map_location='cpu')
    except Exception as e:  # torch.load fails in many ways on a file it cannot read
        raise SlowFastConversionError(
            f'{path} is not a PyTorch checkpoint that mmrev can read safely: '
            f'{error_reason(e)}') from e


def check_destination(dst: str, src: str, force: bool) -> None:
    """Refuse a destination that exists (unless ``force``), is the source, or cannot
    be written."""
    folder = osp.dirname(osp.abspath(dst))
    if osp.exists(src) and osp.exists(dst) and osp.samefile(src, dst):
        raise SlowFastConversionError(
            f'The destination {dst} is the source checkpoint: choose another path')
    if osp.isdir(dst):
        raise SlowFastConversionError(
            f'The destination {dst} is a directory: give a file path')
    if osp.lexists(dst) and not force:
        raise SlowFastConversionError(
            f'{dst} already exists: pass --force (force=True) to overwrite it')
    existing = folder  # the folder, or the ancestor in which it will be created
    while not osp.isdir(existing):
        if osp.exists(existing):
            raise SlowFastConversionError(f'Cannot write {dst}: {existing} is a file')
        existing = osp.dirname(existing)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise SlowFastConversionError(
            f'Cannot write {dst}: no write permission in {existing}')


def check_weights_fit(state_dict: Dict[str, Tensor], spec: ModelSpec) -> None:
    """Raise, listing every missing, unexpected or wrongly shaped key, unless
    ``state_dict`` loads with ``strict=True`` into the model of ``spec`` (an mmpretrain
    classifier, or for video an mmaction2 recognizer)."""
    scope = 'mmaction' if spec.video else 'mmpretrain'
    MODELS = importlib.import_module(f'{scope}.registry').MODELS
    try:
        with DefaultScope.overwrite_default_scope(scope):
            expected = MODELS.build(model_config(spec)).state_dict()
    except (ValueError, TypeError, KeyError) as e:
        raise SlowFastConversionError(
            f'Cannot build the model {spec.backbone}: {e}') from e
    problems = []
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [f'{k} {tuple(v.shape)} (model: {tuple(expected[k].shape)})'
                  for k, v in state_dict.items()
                  if k in expected and v.shape != expected[k].shape]
    for what, keys in (('missing keys', missing), ('unexpected keys', unexpected),
                       ('shape mismatches', mismatched)):
        if keys:
            problems.append(f'{what} {preview_keys(keys)}')
    if problems:
        raise SlowFastConversionError(
            f'The weights do not fit {spec.kind} with arch '
            f'{spec.backbone["arch"]}: ' + '; '.join(problems))


def convert_slowfast_file(src: str, dst: str, force: bool = False,
                          arch: Optional[Union[str, dict]] = None,
                          progress: bool = False,
                          log: Callable[[str], None] = lambda msg: None
                          ) -> ConversionResult:
    """Convert the SlowFast checkpoint ``src`` into the mmpretrain checkpoint ``dst``.

    When ``src`` carries SlowFast's ``cfg``, an mmpretrain config for the model is
    written next to ``dst`` (same name, ``.py``); otherwise the architecture is
    inferred from the weights, or taken from ``arch``.

    Args:
        src (str): SlowFast checkpoint (``{'model_state', 'cfg', ...}``) or state_dict.
        dst (str): the checkpoint to write.
        force (bool): overwrite existing destination files. Defaults to False.
        arch (str | dict, optional): backbone arch (name or dict), instead of the one
            in ``cfg`` or inferred from the weights.
        progress (bool): show a progress bar over the weights. Defaults to False.
        log (callable): receives progress messages.

    Raises:
        SlowFastConversionError: any problem, before anything is written.
    """
    src, dst = os.fspath(src), os.fspath(dst)
    if dst.endswith('.py'):
        raise SlowFastConversionError(
            f'The destination {dst} ends in .py, the name of its config file: '
            'use a checkpoint name such as .pth')
    check_destination(dst, src, force)
    log(f'Loading {src}')
    checkpoint = read_checkpoint(src)
    state_dict = slowfast_state_dict(checkpoint)
    cfg_text = checkpoint.get('cfg') if 'model_state' in checkpoint else None
    if isinstance(cfg_text, str):
        spec = spec_from_slowfast_cfg(cfg_text, state_dict)
        if arch is not None:
            spec.backbone['arch'] = arch
    else:
        kind = detect_model_kind(state_dict)
        spec = spec_from_state_dict(state_dict, kind, arch)
        log(f'No SlowFast cfg in {src}, so no config file is written; the architecture '
            f'is {"the one given" if arch else NOT_IN_WEIGHTS[kind]}')
    config_path = osp.splitext(dst)[0] + '.py' if isinstance(cfg_text, str) else None
    if config_path:
        check_destination(config_path, src, force)
    log(f'Converting {len(state_dict)} tensors of a SlowFast {spec.kind}')
    converted = convert_slowfast_checkpoint(checkpoint, progress)
    converted['meta']['source'] = osp.basename(src)
    check_weights_fit(converted['state_dict'], spec)

    writers = {dst: lambda f: torch.save(converted, f)}
    if config_path:
        text = config_text(spec, osp.basename(src)).encode()
        writers[config_path] = lambda f: f.write(text)
    log('Writing ' + ' and '.join(writers))
    try:
        write_atomically(writers)
    except OSError as e:
        raise SlowFastConversionError(f'Cannot write {list(writers)}: {e}') from e
    return ConversionResult(dst, config_path, spec, len(converted['state_dict']))


