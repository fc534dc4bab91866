"""The installed environment: mmrev imports and registers its scope and checkpoint
loaders, and the compiled mmcv ops and mmdet's models work."""
import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from mmengine.registry import DefaultScope
from mmengine.runner import CheckpointLoader
from torch import nn

import mmrev
from mmrev.engine import checkpoint
from mmrev.registry import MODELS

ROOT = Path(__file__).parents[1]


def test_import_mmrev_registers_checkpoint_loaders():
    assert mmrev.__version__
    assert CheckpointLoader._get_checkpoint_loader('work_dirs/a.pth') is checkpoint.load_from_local
    for url in ('http://a.org/b.pth', 'https://a.org/b.pth'):
        assert CheckpointLoader._get_checkpoint_loader(url) is checkpoint.load_from_http


class ScopeProbe(nn.Module):

    def __init__(self, width: int):
        super().__init__()
        self.width = width


@pytest.fixture
def probe_name():
    """``ScopeProbe`` registered in mmrev's MODELS for one test only."""
    name = 'ScopeProbe'
    MODELS.register_module(name=name, module=ScopeProbe)
    yield name
    MODELS._module_dict.pop(name)


@pytest.mark.parametrize('scope', ['mmpretrain', 'mmdet'])
def test_mmrev_scope_resolves_from(scope, probe_name):
    registry = importlib.import_module(f'{scope}.registry').MODELS
    with DefaultScope.overwrite_default_scope(scope):
        probe = registry.build(dict(type=f'mmrev.{probe_name}', width=3))
        assert isinstance(probe, ScopeProbe) and probe.width == 3
        with pytest.raises(KeyError, match=probe_name):
            registry.build(dict(type=probe_name, width=3))  # not in the caller's scope


def test_mmcv_ops_nms_matches_torchvision():
    from mmcv.ops import nms
    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 11., 11.], [20., 20., 30., 30.]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    dets, keep = nms(boxes, scores, iou_threshold=0.5)
    assert keep.tolist() == [0, 2]  # box 1 overlaps box 0 with IoU 81/119
    torch.testing.assert_close(keep, torchvision.ops.nms(boxes, scores, 0.5))
    torch.testing.assert_close(dets[:, 4], scores[keep])


def test_mmcv_ops_roi_align_matches_torchvision():
    from mmcv.ops import roi_align
    features = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    rois = torch.tensor([[0., 1., 1., 6., 5.], [1., 0.5, 2., 7.5, 7.]])
    expected = torchvision.ops.roi_align(features, rois, (3, 3), spatial_scale=1.0,
                                         sampling_ratio=2, aligned=True)
    actual = roi_align(features, rois, (3, 3), 1.0, 2, 'avg', True)
    torch.testing.assert_close(actual, expected)


def test_mmdet_models_import():
    import mmdet.models
    from mmdet.registry import MODELS as MMDET_MODELS
    assert MMDET_MODELS.get('MaskRCNN') is mmdet.models.MaskRCNN


def run_python(code: str) -> str:
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                            cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


BLOCK_OPENMMLAB = '''
import sys
class Block:
    """Makes mmengine, mmcv, mmpretrain, mmdet and mmaction2 absent."""
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('mmengine', 'mmcv', 'mmpretrain', 'mmdet', 'mmaction'):
            raise ModuleNotFoundError(f'No module named {name!r}', name=name)
sys.meta_path.insert(0, Block())
'''


def test_engine_works_with_torch_alone():
    out = run_python(BLOCK_OPENMMLAB + '''
import torch
from torch import nn
import mmrev
from mmrev.reversible import ReversibleBlock, ReversibleSequence
from mmrev.reversible.diagnostics import reconstruction_errors
torch.manual_seed(0)  # float32 rounding: a relative error of a few 1e-6 on some draws
stack = ReversibleSequence([ReversibleBlock(nn.Linear(4, 4), nn.Linear(4, 4), 0.5)
                            for _ in range(3)]).train()
x = torch.randn(8, 4, requires_grad=True)
sum(stack(x, x)).sum().backward()
print(x.grad.shape, reconstruction_errors(stack, x, x)[1] < 1e-5,
      sorted({m.split('.')[0] for m in sys.modules if m.startswith('mm')}))
''')
    assert out.split() == ['torch.Size([8,', '4])', 'True', "['mmap',", "'mmrev']"]


def test_import_mmrev_defers_the_toolboxes_until_used():
    out = run_python('''
import sys
import mmrev
loaded = lambda: [m for m in ('mmpretrain', 'mmdet', 'mmcv', 'mmengine.runner',
                              'mmrev.models') if m in sys.modules]
print(loaded())
from mmdet.registry import MODELS
neck = MODELS.build(dict(type='mmrev.SimpleFPN', in_channels=8, out_channels=4))
from mmengine.runner import CheckpointLoader
from mmrev.engine.checkpoint import load_from_local
from mmpretrain import list_models
print(type(neck).__name__, CheckpointLoader._get_checkpoint_loader('a.pth') is load_from_local,
      'revvit-small' in list_models('revvit-small'))
''')
    before, after = out.splitlines()
    assert before == '[]'
    assert after == 'SimpleFPN True True'
