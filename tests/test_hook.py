"""ReversibleBackpropHook in a real mmengine Runner, on a tiny RevViT and tiny data."""
import json
import re
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from mmengine.hooks import Hook
from mmengine.model import BaseModel, MMDistributedDataParallel, is_model_wrapper
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import MODEL_WRAPPERS
from mmengine.runner import Runner
from torch import nn

from mmrev.engine.hooks import ReversibleBackpropHook
from mmrev.engine.hooks import reversible_backprop_hook as hook_module
from mmrev.models import RevViT
from mmrev.reversible import ReversibleBlock


class TinyClassifier(BaseModel):

    def __init__(self, drop_path_rate=0.):
        super().__init__()
        self.backbone = RevViT(
            arch=dict(embed_dims=32, num_layers=2, num_heads=2, feedforward_channels=64,
                      patch_size=8),
            img_size=32, drop_path_rate=drop_path_rate)
        self.head = nn.Linear(64, 4)

    def forward(self, inputs, labels, mode='tensor'):
        inputs = inputs.to(self.head.weight.dtype)
        logits = self.head(self.backbone(inputs)[0])
        return dict(loss=F.cross_entropy(logits, labels)) if mode == 'loss' else logits


@MODEL_WRAPPERS.register_module(force=True)
class FakeDDP(nn.Module):
    """Stands in for MMDistributedDataParallel, which needs a process group."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def train_step(self, data, optim_wrapper):
        return self.module.train_step(data, optim_wrapper)


class Drifting(nn.Module):
    """A non-invertible sub-function: its output depends on how often it was called."""

    def __init__(self, fn):
        super().__init__()
        self.fn, self.calls = fn, 0

    def forward(self, x):
        self.calls += 1
        return self.fn(x) + 0.1 * (self.calls % 2) * x  # LayerNorm would undo a uniform shift


class ReturnsNaN(nn.Module):

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x) * float('nan')


class Probe(Hook):
    """Per iteration: reversible block backward passes run, forward hooks on the stack
    at the start of the iteration, reconstruction measurements."""
    priority = 'LOWEST'

    def __init__(self, monkeypatch):
        self.backward_passes, self.stack_hooks, self.checks = [], [], []
        self._counts = dict(backward=0, check=0)
        for owner, name, key in [(ReversibleBlock, 'backward_pass', 'backward'),
                                 (hook_module, 'reconstruction_errors', 'check')]:
            monkeypatch.setattr(owner, name, self._counting(getattr(owner, name), key))

    def _counting(self, fn, key):
        def counted(*args, **kwargs):
            self._counts[key] += 1
            return fn(*args, **kwargs)
        return counted

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        self.stack_hooks.append(len(model.backbone.layers._forward_hooks))

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.backward_passes.append(self._counts['backward'])
        self.checks.append(self._counts['check'])
        self._counts = dict(backward=0, check=0)


def make_runner(tmp_path, hook=None, model=None, max_iters=4, probe=None, seed=0,
                optim_wrapper=None):
    torch.manual_seed(seed)
    model = model or TinyClassifier()
    generator = torch.Generator().manual_seed(seed)
    data = [dict(inputs=torch.randn(3, 32, 32, generator=generator), labels=i % 4)
            for i in range(2 * max_iters)]
    return Runner(
        model=model,
        work_dir=str(tmp_path),
        experiment_name=f'{tmp_path.name}_{seed}',
        train_dataloader=dict(dataset=data, batch_size=2, num_workers=0,
                              sampler=dict(type='DefaultSampler', shuffle=False),
                              collate_fn=dict(type='default_collate')),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        optim_wrapper=optim_wrapper or dict(optimizer=dict(type='SGD', lr=0.1)),
        custom_hooks=[dict(type='mmrev.ReversibleBackpropHook', **(hook or {}))]
        + ([probe] if probe else []),
        default_hooks=dict(logger=dict(type='LoggerHook', interval=1), checkpoint=None),
        randomness=dict(seed=seed))


def history(runner, key):
    """The values of ``key`` over the run: the peak memory of every iteration from the
    message hub, the checks' errors from the visualizer's scalars (checked iterations
    only)."""
    if key == 'rev/peak_mem_mb':
        return runner.message_hub.log_scalars[f'train/{key}'].data[0].tolist()
    entries = [json.loads(line) for path in Path(runner.log_dir).rglob('scalars.json')
               for line in path.read_text().splitlines()]
    return [entry[key] for entry in entries if key in entry]


def log_text(tmp_path):
    return '\n'.join(p.read_text() for p in tmp_path.rglob('*.log'))


def drifting_model():
    model = TinyClassifier()
    model.backbone.layers[-1].g = Drifting(model.backbone.layers[-1].g)
    return model


@pytest.mark.parametrize('wrapped', [False, True])
@pytest.mark.parametrize('hook, expected', [
    (dict(), [2, 2, 2, 2]),
    (dict(begin_iter=2), [0, 0, 2, 2]),
    (dict(reversible=False), [0, 0, 0, 0]),
])
def test_switch_chooses_backprop(tmp_path, monkeypatch, wrapped, hook, expected):
    probe = Probe(monkeypatch)
    model = TinyClassifier()
    model = FakeDDP(model) if wrapped else model
    runner = make_runner(tmp_path, dict(hook, interval=0), model=model, probe=probe)
    runner.train()
    assert probe.backward_passes == expected  # 2 blocks: 2 reversible backward passes


@pytest.fixture
def process_group():
    """A one-process gloo group, so that mmengine's real DDP wrapper can run."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=0,
                            world_size=1)
    yield
    dist.destroy_process_group()


@pytest.mark.parametrize('hook, make_model, expected', [
    # the gradient check's reversible backward adds 2 on checked iterations
    (dict(check_grad=True), lambda: TinyClassifier(), [2, 4, 2, 4]),
    (dict(policy='switch'), lambda: drifting_model(), [2, 0, 0, 0]),
])
def test_checks_under_ddp(tmp_path, monkeypatch, process_group, hook, make_model,
                          expected):
    """The checks' extra forward and backward passes leave DDP's gradients intact."""
    params = []
    for wrap in [False, True]:
        probe = Probe(monkeypatch)
        torch.manual_seed(0)
        model = make_model()
        runner = make_runner(tmp_path / str(wrap), dict(hook, interval=2), probe=probe,
                             model=MMDistributedDataParallel(model) if wrap else model)
        runner.train()
        assert probe.backward_passes == expected
        params.append(torch.cat([p.flatten() for p in model.parameters()]))
    torch.testing.assert_close(params[1], params[0])


def test_gradient_check_is_off_under_ddp_with_static_graph(tmp_path, process_group):
    """DDP's static graph reduces each gradient once per iteration; the check's extra
    backward passes would break it. The check is skipped with a warning; the
    reconstruction error is still measured."""
    model = MMDistributedDataParallel(TinyClassifier(), static_graph=True)
    runner = make_runner(tmp_path, dict(interval=2, check_grad=True), model=model)
    runner.train()
    assert 'check_grad is off under DDP with static_graph=True' in log_text(tmp_path)
    assert len(history(runner, 'rev/recon_err')) == 2


def test_check_runs_only_on_its_iterations(tmp_path, monkeypatch):
    probe = Probe(monkeypatch)
    runner = make_runner(tmp_path, dict(interval=3), max_iters=6, probe=probe)
    runner.train()
    assert probe.checks == [0, 0, 1, 0, 0, 1]
    assert probe.stack_hooks == [0, 0, 1, 0, 0, 1]  # forward hook only when checking
    assert not runner.model.backbone.layers._forward_hooks


def test_check_does_not_change_training(tmp_path):
    """The check draws from a forked RNG: drop path masks and updates are unchanged."""
    params = []
    for interval in [0, 1]:
        torch.manual_seed(0)
        runner = make_runner(tmp_path / str(interval), dict(interval=interval),
                             model=TinyClassifier(drop_path_rate=0.3))
        runner.train()
        params.append(torch.cat([p.flatten() for p in runner.model.parameters()]))
    torch.testing.assert_close(params[0], params[1], rtol=0, atol=0)


def test_errors_and_memory_are_logged(tmp_path, monkeypatch):
    fp32 = make_runner(tmp_path / 'fp32', dict(interval=2))
    fp32.train()
    fp32_errors = history(fp32, 'rev/recon_err')
    assert len(fp32_errors) == 2 and max(fp32_errors) < 1e-5
    assert len(history(fp32, 'rev/recon_abs_err')) == 2
    peaks = history(fp32, 'rev/peak_mem_mb')
    assert len(peaks) == 4 and min(peaks) > 10  # process peak RSS on CPU
    checks = re.findall(r'rev/recon_err: (\S+)', log_text(tmp_path / 'fp32'))
    assert len(checks) == 2 and all(float(v) < 1e-5 for v in checks)  # 3 digits: 1.2e-07
    assert all(re.fullmatch(r'\d\.\d{3}e[-+]\d\d,?', v) for v in checks)
    assert 'train/rev/recon_err' not in fp32.message_hub.log_scalars  # not carried over



def test_precision(tmp_path, monkeypatch):
    """Under bf16 autocast the streams stay fp32 (the residual adds promote) and invert
    accurately; bf16 streams (a bf16 model) do not, and the default policy warns."""
    # AmpOptimWrapper insists on a GPU; on CPU it autocasts to bfloat16 all the same
    monkeypatch.setattr('mmengine.optim.optimizer.amp_optimizer_wrapper.is_cuda_available',
                        lambda: True)
    autocast = make_runner(tmp_path / 'autocast', dict(interval=2),
                           optim_wrapper=dict(type='AmpOptimWrapper', dtype='bfloat16',
                                              optimizer=dict(type='SGD', lr=0.1)))
    with pytest.warns(UserWarning, match='CUDA is not available'):
        autocast.train()
    assert max(history(autocast, 'rev/recon_err')) < 1e-5

    bf16 = make_runner(tmp_path / 'bf16', dict(interval=2),
                       model=TinyClassifier().to(torch.bfloat16))
    bf16.train()
    assert min(history(bf16, 'rev/recon_err')) > 1e-3
    assert 'recomputes its inputs with relative error' in log_text(tmp_path / 'bf16')


def test_gradient_check(tmp_path):
    healthy = make_runner(tmp_path / 'healthy', dict(interval=2, check_grad=True))
    healthy.train()
    assert max(history(healthy, 'rev/grad_err')) < 1e-4
    drifting = make_runner(tmp_path / 'drifting', dict(interval=2, check_grad=True),
                           model=drifting_model())
    drifting.train()
    assert min(history(drifting, 'rev/grad_err')) > 1e-3


def test_policy_warn(tmp_path, monkeypatch):
    probe = Probe(monkeypatch)
    runner = make_runner(tmp_path, dict(interval=2, policy='warn'), model=drifting_model(),
                         probe=probe)
    runner.train()
    assert min(history(runner, 'rev/recon_err')) > 1e-3
    assert probe.backward_passes == [2, 2, 2, 2]
    assert log_text(tmp_path).count('recomputes its inputs with relative error') == 2


def test_policy_switch(tmp_path, monkeypatch):
    probe = Probe(monkeypatch)
    runner = make_runner(tmp_path, dict(interval=2, policy='switch'),
                         model=drifting_model(), probe=probe)
    runner.train()
    # the failing iteration itself is redone with ordinary backprop
    assert probe.backward_passes == [2, 0, 0, 0]
    assert 'Switched every reversible stack to ordinary backprop' in log_text(tmp_path)
    assert len(history(runner, 'rev/recon_err')) == 2  # still monitored


@pytest.mark.parametrize('broken, error', [(Drifting, r'\d'), (ReturnsNaN, 'nan')])
def test_policy_raise(tmp_path, broken, error):
    model = TinyClassifier()
    model.backbone.layers[-1].g = broken(model.backbone.layers[-1].g)
    runner = make_runner(tmp_path, dict(interval=2, policy='raise'), model=model)
    with pytest.raises(RuntimeError, match=rf"'backbone.layers' .* error {error}.* > tol"):
        runner.train()
    assert runner.iter == 1  # stopped in the forward of the checked iteration


def test_policy_only_acts_on_reversible_backprop(tmp_path):
    runner = make_runner(tmp_path, dict(interval=2, policy='raise', reversible=False),
                         model=drifting_model())
    runner.train()
    assert min(history(runner, 'rev/recon_err')) > 1e-3


def test_config_and_bad_arguments():
    hook = MMENGINE_HOOKS.build(dict(type='mmrev.ReversibleBackpropHook', interval=5))
    assert isinstance(hook, ReversibleBackpropHook) and hook.interval == 5
    with pytest.raises(ValueError, match='policy'):
        ReversibleBackpropHook(policy='ignore')
    with pytest.raises(ValueError, match='tolerance'):
        ReversibleBackpropHook(tolerance=0)
    with pytest.raises(TypeError, match='no ReversibleSequence'):
        ReversibleBackpropHook().before_train(SimpleNamespace(model=nn.Linear(2, 2)))
