import json
import os
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from mmengine.registry import DefaultScope

# Checkpoints, inputs and outputs of the official SlowFast code (see its README.md).
SLOWFAST_FIXTURES = Path(os.environ.get(
    'MMREV_SLOWFAST_FIXTURES', Path(__file__).parent / 'data' / 'slowfast'))


def manifest_state_dict(name: str, seed: int = None) -> dict:
    """A state_dict with exactly the keys and shapes of a full-size SlowFast model (its
    manifest ``{name}_keys.txt``): uninitialised, or with ``seed`` small random values."""
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    state_dict = {}
    for line in (SLOWFAST_FIXTURES / f'{name}_keys.txt').read_text().splitlines():
        key, shape, *_ = line.split('\t')
        if key == 'total_params':
            continue
        shape = json.loads(shape)
        state_dict[key] = (torch.empty(shape) if generator is None else
                           0.02 * torch.randn(shape, generator=generator))
    return state_dict


@contextmanager
def default_scope_restored():
    """Runners and ``init_default_scope`` set a process-wide default registry scope;
    put back the scopes that were there before."""
    scopes = DefaultScope._instance_dict.copy()
    yield
    DefaultScope._instance_dict.clear()
    DefaultScope._instance_dict.update(scopes)


@pytest.fixture(autouse=True, scope='module')
def module_default_scope():
    """No scope left by a module's fixtures (e.g. one that trains a Runner) leaks into
    the next module."""
    with default_scope_restored():
        yield


@pytest.fixture(autouse=True)
def test_default_scope():
    """No scope left by a test leaks into the next one."""
    with default_scope_restored():
        yield
