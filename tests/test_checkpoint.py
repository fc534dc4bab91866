"""A full training checkpoint written by an mmengine Runner loads after ``import mmrev``
(torch >= 2.6 refuses it with a plain ``torch.load``), and nothing else does."""
import copy
import itertools
import pickle
import shutil
from fractions import Fraction

import numpy as np
import pytest
import torch
from mmengine.hooks import Hook
from mmengine.logging import HistoryBuffer
from mmengine.model import BaseModel
from mmengine.registry import DefaultScope
from mmengine.runner import Runner, load_checkpoint
from torch import nn

import mmrev  # noqa: F401
from mmrev.engine import load_checkpoint_file

RUN_IDS = itertools.count()


class TinyRegressor(BaseModel):

    def __init__(self, init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.fc = nn.Linear(2, 1)

    def forward(self, inputs, targets=None, mode='tensor'):
        outputs = self.fc(inputs).squeeze(-1)
        if mode == 'loss':
            return dict(loss=((outputs - targets) ** 2).mean())
        return outputs


class TinyDataset(torch.utils.data.Dataset):
    metainfo = dict(classes=('low', 'high'))

    def __len__(self):
        return 2

    def __getitem__(self, index):
        return dict(inputs=torch.tensor([1.0, -float(index)]), targets=torch.tensor(2.0))


class RecordResumedState(Hook):
    """Keeps what the runner holds when training (re)starts."""

    def before_train(self, runner):
        self.epoch, self.iter = runner.epoch, runner.iter
        self.optimizer = copy.deepcopy(runner.optim_wrapper.state_dict())
        self.losses = runner.message_hub.get_scalar('train/loss').data[0].copy()


def make_runner(work_dir, max_epochs=1, **kwargs):
    """One epoch is one iteration (2 samples, batch 2), on CPU."""
    return Runner(
        model=TinyRegressor(),
        work_dir=str(work_dir),
        experiment_name=f'mmrev_checkpoint_test_{next(RUN_IDS)}',
        train_dataloader=dict(
            dataset=TinyDataset(), batch_size=2, num_workers=0,
            sampler=dict(type='DefaultSampler', shuffle=False),
            collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=0.1)),
        param_scheduler=dict(type='StepLR', step_size=1, gamma=0.5, by_epoch=True, end=10),
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1)),
        randomness=dict(seed=0),
        **kwargs)


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """A work_dir after one training iteration and its checkpoint, read trustingly."""
    work_dir = tmp_path_factory.mktemp('trained')
    make_runner(work_dir).train()
    path = work_dir / 'epoch_1.pth'
    return work_dir, str(path), torch.load(path, weights_only=False)


def assert_weights_equal(model, checkpoint):
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, checkpoint['state_dict'][name], rtol=0, atol=0)


def test_plain_torch_load_refuses_training_checkpoint(trained):
    _, path, reference = trained
    assert isinstance(reference['message_hub']['log_scalars']['train/loss'], HistoryBuffer)
    with pytest.raises(pickle.UnpicklingError, match='weights_only'):
        torch.load(path)


def test_load_checkpoint(trained):
    _, path, reference = trained
    model = TinyRegressor()
    checkpoint = load_checkpoint(model, path, map_location='cpu')
    assert_weights_equal(model, reference)
    assert (checkpoint['meta']['epoch'], checkpoint['meta']['iter']) == (1, 1)
    assert checkpoint['meta']['dataset_meta'] == TinyDataset.metainfo
    losses = checkpoint['message_hub']['log_scalars']['train/loss']
    np.testing.assert_array_equal(losses.data[0],
                                  reference['message_hub']['log_scalars']['train/loss'].data[0])
    assert losses.mean() == losses.current()
    torch.testing.assert_close(checkpoint['optimizer'], reference['optimizer'])


def test_runner_load_from(trained, tmp_path):
    _, path, reference = trained
    runner = make_runner(tmp_path, load_from=path)
    runner.load_or_resume()
    assert_weights_equal(runner.model, reference)
    assert (runner.epoch, runner.iter) == (0, 0)


@pytest.mark.parametrize('how', ['resume=True in the work_dir', 'load_from + resume'])
def test_runner_resume(trained, tmp_path, how):
    work_dir, path, reference = trained
    if how == 'load_from + resume':
        kwargs = dict(load_from=path, resume=True)
    else:
        work_dir = shutil.copytree(work_dir, tmp_path / 'work_dir')  # finds last_checkpoint
        kwargs = dict(resume=True)
    recorder = RecordResumedState()
    runner = make_runner(work_dir, max_epochs=2, custom_hooks=[recorder], **kwargs)
    runner.train()

    assert (recorder.epoch, recorder.iter) == (1, 1)
    torch.testing.assert_close(recorder.optimizer, reference['optimizer'])
    assert recorder.optimizer['param_groups'][0]['lr'] == pytest.approx(0.05)  # StepLR
    np.testing.assert_array_equal(recorder.losses,
                                  reference['message_hub']['log_scalars']['train/loss'].data[0])
    assert (runner.epoch, runner.iter) == (2, 2)


def test_pretrained_init_cfg(trained):
    _, path, reference = trained
    model = TinyRegressor(init_cfg=dict(type='Pretrained', checkpoint=path))
    model.init_weights()
    assert_weights_equal(model, reference)


def test_http_checkpoint_downloads_once_into_torch_hub(trained, tmp_path, monkeypatch):
    _, path, reference = trained
    url = 'https://download.example.org/mmrev/epoch_1.pth'
    downloads = []

    def fake_download(source, destination, hash_prefix=None, progress=True):
        downloads.append(source)
        shutil.copy(path, destination)

    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path / 'hub'))
    monkeypatch.setattr(torch.hub, 'download_url_to_file', fake_download)
    for _ in range(2):
        model = TinyRegressor()
        checkpoint = load_checkpoint(model, url)
        assert_weights_equal(model, reference)
        assert isinstance(checkpoint['message_hub']['log_scalars']['train/loss'], HistoryBuffer)
    assert downloads == [url]
    assert (tmp_path / 'hub' / 'checkpoints' / 'epoch_1.pth').is_file()


def test_unknown_global_is_named_and_can_be_allowed(tmp_path):
    path = tmp_path / 'with_fraction.pth'
    torch.save(dict(state_dict=TinyRegressor().state_dict(), meta=dict(ratio=Fraction(1, 3))),
               path)
    with pytest.raises(pickle.UnpicklingError,
                       match=r'fractions\.Fraction\..*add_safe_globals.*weights_only=False'):
        load_checkpoint(TinyRegressor(), str(path))
    with torch.serialization.safe_globals([Fraction]):
        assert load_checkpoint_file(str(path))['meta']['ratio'] == Fraction(1, 3)


class GetattrPayload:
    """Pickles as ``getattr(owner, name)``, like a HistoryBuffer's statistics methods."""

    def __init__(self, owner, name):
        self.owner, self.name = owner, name

    def __reduce__(self):
        return getattr, (self.owner, self.name)


@pytest.mark.parametrize('owner, name', [(HistoryBuffer, '__init__'),
                                         (np.ndarray, 'tofile')])
def test_getattr_is_limited_to_history_buffer_methods(tmp_path, owner, name):
    path = tmp_path / 'getattr.pth'
    torch.save(dict(payload=GetattrPayload(owner, name)), path)
    with pytest.raises(pickle.UnpicklingError, match='only public methods of HistoryBuffer'):
        load_checkpoint_file(str(path))


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='missing.pth'):
        load_checkpoint(TinyRegressor(), str(tmp_path / 'missing.pth'))


# ------------------------------------------------- weights of another model are refused

def revvit(arch, **kwargs):
    from mmrev.models import RevViT
    return RevViT(arch=arch, img_size=32, **kwargs)


TINY_VIT = dict(embed_dims=16, num_layers=2, num_heads=2, feedforward_channels=32,
                patch_size=8)


def test_backbone_refuses_weights_of_another_arch(tmp_path):
    small = revvit('small')
    tiny = revvit(TINY_VIT)
    with pytest.raises(ValueError, match=r"pos_embed \(1, 4, 384\) \(model: \(1, 16, 16\)\)"
                       r".*looks like RevViT arch 'small' \(384 dims, 12 layers"):
        tiny.load_state_dict(small.state_dict())
    # through mmengine's loaders too (strict=False only warns about missing keys)
    path = tmp_path / 'small.pth'
    torch.save(dict(state_dict={f'backbone.{k}': v for k, v in small.state_dict().items()}),
               path)
    with pytest.raises(ValueError, match='does not fit this RevViT'):
        load_checkpoint(tiny, str(path), revise_keys=[(r'^backbone\.', '')])
    pretrained = revvit(TINY_VIT, init_cfg=dict(type='Pretrained', checkpoint=str(path),
                                                prefix='backbone.'))
    with pytest.raises(ValueError, match="arch 'small'"):
        pretrained.init_weights()
    # weights of another kind of model: none of them is the backbone's
    from mmrev.models import RevMViT
    mvit = RevMViT(arch=dict(embed_dims=8, num_layers=3, num_heads=1,
                             transition_layers=[1]), img_size=32)
    with pytest.raises(ValueError, match=r'3 tensors have other shapes: pos_embed .* looks '
                       r'like another model: no RevViT'):
        tiny.load_state_dict(mvit.state_dict())


def test_classifier_with_another_head_still_loads_its_backbone(tmp_path):
    from mmpretrain.models import ImageClassifier

    def classifier(num_classes):
        return ImageClassifier(backbone=dict(type='mmrev.RevViT', arch=TINY_VIT, img_size=32),
                               head=dict(type='LinearClsHead', num_classes=num_classes,
                                         in_channels=32))
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        source, target = classifier(10), classifier(3)
    path = tmp_path / 'ten_classes.pth'
    torch.save(dict(state_dict=source.state_dict()), path)
    load_checkpoint(target, str(path))  # the head's shapes differ: mmengine warns
    for key, value in source.backbone.state_dict().items():
        assert torch.equal(target.backbone.state_dict()[key], value)


def test_multiscale_backbone_from_a_classifier_keeps_its_extra_norms():
    from mmrev.models import RevMViT
    arch = dict(embed_dims=8, num_layers=3, num_heads=1, transition_layers=[1])
    classifier = RevMViT(arch=arch, img_size=32)
    torch.nn.init.normal_(classifier.norm1.weight)
    detector = RevMViT(arch=arch, img_size=32, out_type='featmap', out_scales=(0, 1))
    detector.load_state_dict(classifier.state_dict(), strict=True)  # norm0: none missing
    assert torch.equal(detector.norm1.weight, classifier.norm1.weight)
    assert torch.equal(detector.norm0.weight, torch.ones(16))
