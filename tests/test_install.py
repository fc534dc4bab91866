"""The installed environment: mmrev imports and registers its scope and checkpoint
loaders, and the compiled mmcv ops and mmdet's models work."""
import importlib

import pytest
import torch
import torchvision
from mmengine.registry import DefaultScope
from mmengine.runner import CheckpointLoader
from torch import nn

import mmrev
from mmrev.engine import checkpoint
from mmrev.registry import MODELS


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
