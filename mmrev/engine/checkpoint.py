"""Checkpoint loading that keeps ``torch.load(weights_only=True)``.

mmengine 0.10 reads checkpoints with a bare ``torch.load``. Since torch 2.6 that means
``weights_only=True``, which refuses the Python objects an mmengine Runner writes into a
training checkpoint (the message hub's ``HistoryBuffer`` logs, numpy arrays and scalars),
while checkpoints from http(s) are read with ``weights_only=False``, trusting any pickle.

Importing this module registers mmengine's local-file and http(s) schemes anew: both read
the file with :func:`load_checkpoint_file`, which keeps ``weights_only=True`` and allows
exactly the objects of mmengine training checkpoints (:data:`TRAINING_CHECKPOINT_GLOBALS`).
Both then convert a reversible SlowFast checkpoint (``.pyth``) for mmrev on the fly
(:func:`mmrev.converters.convert_if_slowfast`).
"""
import os
import os.path as osp
import pickle
from typing import Any, Callable, Optional, Union
from urllib.parse import urlparse

import numpy as np
import torch
from mmengine.dist import get_dist_info
from mmengine.logging import HistoryBuffer
from mmengine.runner import CheckpointLoader

from mmrev.converters import convert_if_slowfast

try:
    from numpy._core import multiarray  # numpy >= 1.26
except ImportError:
    from numpy.core import multiarray

MapLocation = Union[None, str, torch.device, dict, Callable]


def history_buffer_method(owner: Any, name: str) -> Callable:
    """The ``getattr`` of a pickled ``HistoryBuffer``, which stores its statistics
    methods (``HistoryBuffer.mean`` ...) by name, restricted to those methods."""
    method = getattr(HistoryBuffer, name, None) if isinstance(name, str) else None
    if owner is not HistoryBuffer or name.startswith('_') or not callable(method):
        raise pickle.UnpicklingError(
            f'getattr({owner!r}, {name!r}) is not allowed in a checkpoint: only '
            f'public methods of HistoryBuffer are')
    return method


# What an mmengine Runner's checkpoint holds besides tensors and Python containers:
# HistoryBuffers and numpy arrays and scalars of booleans and numbers (numpy >= 2
# pickles them from ``numpy._core``, numpy 1 from ``numpy.core``; either numpy reads
# both; a dtype is rebuilt as an instance of its own class, e.g. ``Float64DType``).
NUMERIC_DTYPES = [type(np.dtype(code))
                  for code in '?' + np.typecodes['AllInteger'] + np.typecodes['AllFloat']]
TRAINING_CHECKPOINT_GLOBALS = [
    HistoryBuffer,
    (history_buffer_method, 'builtins.getattr'),
    np.ndarray,
    np.dtype,
    *NUMERIC_DTYPES,
    (multiarray._reconstruct, 'numpy.core.multiarray._reconstruct'),
    (multiarray._reconstruct, 'numpy._core.multiarray._reconstruct'),
    (multiarray.scalar, 'numpy.core.multiarray.scalar'),
    (multiarray.scalar, 'numpy._core.multiarray.scalar'),
]


def load_checkpoint_file(filename: str, map_location: MapLocation = None) -> Any:
    """Read a checkpoint file with ``weights_only=True``, allowing the globals of
    mmengine training checkpoints and those the user allowed with
    ``torch.serialization.add_safe_globals``.

    Raises:
        pickle.UnpicklingError: the file holds other objects; the message names them.
        RuntimeError: the file is not a whole PyTorch checkpoint (truncated, corrupted
            or another kind of file).
    """
    with torch.serialization.safe_globals(TRAINING_CHECKPOINT_GLOBALS):
        try:
            return torch.load(filename, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as error:
            refused = refused_globals(filename)
            if not refused and 'Weights only load failed' in str(error):
                raise  # a refused global in a file that cannot be scanned: torch says which
            if not refused:
                raise _unreadable(filename, error) from error
            raise pickle.UnpicklingError(
                f'{filename} holds objects that are not allowed by default: '
                f'{", ".join(refused)}. mmrev loads checkpoints with torch.load('
                f'weights_only=True), allowing only what mmengine training checkpoints '
                f'hold. If you trust this file, allow them before loading it with '
                f'torch.serialization.add_safe_globals([...]) (the classes or functions '
                f'named above), or load it yourself with torch.load(filename, '
                f'weights_only=False).') from error
        except Exception as error:  # torch's readers fail in many ways on broken files
            if isinstance(error, (FileNotFoundError, IsADirectoryError, PermissionError)):
                raise
            raise _unreadable(filename, error) from error


def error_reason(error: Exception) -> str:
    """The first line of ``error``'s message, or its type's name if it has none."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _unreadable(filename: str, error: Exception) -> RuntimeError:
    return RuntimeError(f'{filename} is not a whole PyTorch checkpoint (truncated, corrupted '
                        f'or another kind of file): {error_reason(error)}')


def global_name(safe_global: Union[Callable, tuple]) -> str:
    """The name under which a pickle refers to an entry of a safe-globals list."""
    if isinstance(safe_global, tuple):
        return safe_global[1]
    return f'{safe_global.__module__}.{safe_global.__qualname__}'


def refused_globals(filename: str) -> list:
    """Names of the globals in ``filename`` that are not allowed now (empty when the
    file cannot be scanned, e.g. the legacy non-zip format)."""
    allowed = {global_name(g) for g in torch.serialization.get_safe_globals()}
    try:
        found = torch.serialization.get_unsafe_globals_in_checkpoint(filename)
    except Exception:
        return []
    return sorted(set(found) - allowed)


def download_checkpoint(url: str, model_dir: Optional[str] = None,
                        progress: bool = True) -> str:
    """Path of ``url``'s file in the torch hub cache (``<hub>/checkpoints``, as
    ``torch.hub.load_state_dict_from_url`` uses), downloaded unless already there."""
    model_dir = model_dir or osp.join(torch.hub.get_dir(), 'checkpoints')
    os.makedirs(model_dir, exist_ok=True)
    cached_file = osp.join(model_dir, osp.basename(urlparse(url).path))
    if not osp.exists(cached_file):
        try:
            torch.hub.download_url_to_file(url, cached_file, progress=progress)
        except (OSError, ValueError) as error:  # URLError, HTTPError, timeouts
            raise RuntimeError(
                f'Cannot download the checkpoint {url} ({error}). Download it where '
                f'there is network access and pass the file instead: '
                f'pretrained=PATH, load_from=PATH or init_cfg=dict(type="Pretrained", '
                f'checkpoint=PATH); or put it at {cached_file}') from error
    return cached_file


@CheckpointLoader.register_scheme(prefixes='', force=True)
def load_from_local(filename: str, map_location: MapLocation = None) -> Any:
    """mmengine's loader for local paths, reading with :func:`load_checkpoint_file`."""
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    return convert_if_slowfast(load_checkpoint_file(filename, map_location), filename)


@CheckpointLoader.register_scheme(prefixes=('http://', 'https://'), force=True)
def load_from_http(filename: str, map_location: MapLocation = None,
                   model_dir: Optional[str] = None, progress: bool = os.isatty(0)) -> Any:
    """mmengine's loader for URLs, reading with :func:`load_checkpoint_file`. In
    distributed runs rank 0 downloads first, the other ranks then find the file."""
    rank, world_size = get_dist_info()
    if rank == 0:
        cached_file = download_checkpoint(filename, model_dir, progress)
    if world_size > 1:
        torch.distributed.barrier()
        cached_file = download_checkpoint(filename, model_dir, progress)
    return convert_if_slowfast(load_checkpoint_file(cached_file, map_location), filename)
