import os
from contextlib import contextmanager
from pathlib import Path

import pytest
from mmengine.registry import DefaultScope

# Checkpoints, inputs and outputs of the official SlowFast code (see its README.md).
SLOWFAST_FIXTURES = Path(os.environ.get(
    'MMREV_SLOWFAST_FIXTURES', Path(__file__).parent / 'data' / 'slowfast'))


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
