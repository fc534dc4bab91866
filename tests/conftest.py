import os
from pathlib import Path

import pytest
from mmengine.registry import DefaultScope

# Checkpoints, inputs and outputs of the official SlowFast code (see its README.md).
SLOWFAST_FIXTURES = Path(os.environ.get(
    'MMREV_SLOWFAST_FIXTURES', Path(__file__).parent / 'data' / 'slowfast'))


@pytest.fixture(autouse=True)
def restore_default_scope():
    """Runners and ``init_default_scope`` set a process-wide default registry scope;
    keep each test's scope from leaking into the next."""
    scopes = DefaultScope._instance_dict.copy()
    yield
    DefaultScope._instance_dict.clear()
    DefaultScope._instance_dict.update(scopes)
