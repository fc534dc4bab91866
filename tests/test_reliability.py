"""Faults injected into training: a process killed while it writes a checkpoint."""
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook

from mmrev.engine import load_checkpoint_file

# Trains a tiny model for 3 iterations, saving a checkpoint after each one with the hook
# named by argv[2] (max_keep_ckpts=1); the third save is killed (SIGKILL) half way
# through writing its file. argv[1]: the work folder; argv[3] 'resume': resume instead.
TRAIN = '''
import os, signal, sys
import torch
from mmengine.hooks import Hook
from mmengine.fileio import LocalBackend
from mmengine.model import BaseModel
from mmengine.runner import Runner
import mmrev

class Regressor(BaseModel):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(2, 1)

    def forward(self, inputs, targets=None, mode='tensor'):
        return dict(loss=(self.fc(inputs) - targets).square().mean())

work_dir, hook, mode = sys.argv[1:4]
put, saves = LocalBackend.put, []

def put_killed_on_third_save(self, obj, filepath):
    saves.append(filepath)
    if len(saves) == 3 and mode == 'kill':
        with open(filepath, 'wb') as f:
            f.write(obj[:len(obj) // 2])
            f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    put(self, obj, filepath)

LocalBackend.put = put_killed_on_third_save
data = [dict(inputs=torch.randn(2), targets=torch.randn(1)) for _ in range(6)]
Runner(model=Regressor(), work_dir=work_dir,
       train_dataloader=dict(dataset=data, batch_size=2, num_workers=0,
                             sampler=dict(type='DefaultSampler', shuffle=False),
                             collate_fn=dict(type='default_collate')),
       train_cfg=dict(by_epoch=False, max_iters=3),
       optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
       default_hooks=dict(checkpoint=dict(type=hook, interval=1, by_epoch=False,
                                          max_keep_ckpts=1)),
       resume=mode == 'resume', randomness=dict(seed=0)).train()
'''


def train(work_dir: Path, hook: str, mode: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-c', TRAIN, str(work_dir), hook, mode],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize('hook', ['mmrev.AtomicCheckpointHook', 'CheckpointHook'])
def test_kill_while_saving_a_checkpoint(hook, tmp_path):
    killed = train(tmp_path, hook, 'kill')
    assert killed.returncode == -9, killed.stderr[-2000:]
    last = (tmp_path / 'last_checkpoint').read_text()
    if hook == 'CheckpointHook':  # mmengine's: the previous checkpoint is gone
        assert last.endswith('iter_2.pth') and not Path(last).exists()
        return
    assert last == str(tmp_path / 'iter_2.pth')
    assert sorted(p.name for p in tmp_path.glob('*.pth')) == ['iter_2.pth']
    checkpoint = load_checkpoint_file(last)
    assert checkpoint['meta']['iter'] == 2 and 'fc.weight' in checkpoint['state_dict']
    resumed = train(tmp_path, hook, 'resume')
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert 'resumed epoch: 0, iter: 2' in resumed.stdout + resumed.stderr
    assert (tmp_path / 'last_checkpoint').read_text() == str(tmp_path / 'iter_3.pth')
    assert sorted(p.name for p in tmp_path.glob('*.pth')) == ['iter_3.pth']
    assert not list(tmp_path.glob('.*partial'))  # the killed save's leftover is replaced
    assert torch.is_tensor(load_checkpoint_file(tmp_path / 'iter_3.pth')['state_dict']
                           ['fc.weight'])


CONFIGS = sorted(p for p in (Path(__file__).parents[1] / 'configs').rglob('*.py')
                 if '_base_' not in p.parts)


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: p.name)
def test_every_config_saves_checkpoints_atomically(path):
    from mmengine.config import Config
    hook = Config.fromfile(path).default_hooks.checkpoint
    assert hook.type == 'mmrev.AtomicCheckpointHook'


class RunsCode:
    """Pickles to a call of ``os.system``: loading it must not run the command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os
        return os.system, (f'touch {self.marker}', )


def hostile_checkpoints(tmp_path: Path):
    """(name, bytes or object to torch.save) of broken and hostile checkpoints, made
    from the tiny SlowFast fixture."""
    from conftest import SLOWFAST_FIXTURES
    good = (SLOWFAST_FIXTURES / 'revvit_tiny.pyth').read_bytes()
    checkpoint = torch.load(SLOWFAST_FIXTURES / 'revvit_tiny.pyth', weights_only=True)
    state = checkpoint['model_state']
    keys = sorted(state)
    rng = np.random.default_rng(0)
    for cut in np.linspace(0, len(good) - 1, 100).astype(int):
        yield f'truncated_{cut}', good[:cut]
    for i in range(40):
        yield f'random_{i}', rng.integers(0, 256, int(rng.integers(1, 20000)),
                                          dtype=np.uint8).tobytes()
    wrong = [None, 3, 'weights', [torch.zeros(2)], (1, 2), {}, {'model_state': None},
             {'model_state': []}, {'model_state': {}}, {'model_state': {'a': 1}},
             {'model_state': {1: torch.zeros(1)}}, {'cfg': checkpoint['cfg']},
             {'model_state': {k: v.tolist() for k, v in state.items()}},
             {'state_dict': state}, {'model_state': {k: str(v) for k, v in state.items()}},
             torch.zeros(3), {'model_state': torch.zeros(3)}]
    for i, obj in enumerate(wrong):
        yield f'structure_{i}', obj
    for i, key in enumerate(rng.choice(keys, 40)):
        dtype = (torch.int64, torch.int32, torch.uint8, torch.bool)[i % 4]
        yield f'dtype_{i}', dict(checkpoint, model_state=dict(state, **{
            key: state[key].to(dtype)}))
    for i, key in enumerate(rng.choice(keys, 40)):
        renamed = {(f'{k}_renamed' if k == key else k): v for k, v in state.items()}
        yield f'renamed_{i}', dict(checkpoint, model_state=renamed)
    for i, key in enumerate(rng.choice(keys, 40)):
        value = state[key]
        shape = (value.numel() + 1, ) if i % 2 else (1, *value.shape)
        yield f'reshaped_{i}', dict(checkpoint, model_state=dict(state, **{
            key: torch.zeros(shape)}))
    for i in range(4):
        marker = tmp_path / f'pwned_{i}'
        payload = [RunsCode(marker), {'model_state': RunsCode(marker)},
                   dict(checkpoint, cfg=RunsCode(marker)),
                   dict(checkpoint, model_state=dict(state, extra=RunsCode(marker)))][i]
        yield f'code_{i}', payload
        yield f'code_legacy_{i}', (payload, )  # the pre-zip pickle format


def test_broken_and_hostile_checkpoints_are_refused(tmp_path):
    """Each of ~300 broken or hostile files: the converter refuses it with a
    SlowFastConversionError naming the problem and writes nothing; the checkpoint
    loader raises (never returns something silently wrong for unreadable files); no
    pickled code runs."""
    from mmrev.converters import SlowFastConversionError, convert_slowfast_file
    cases = list(hostile_checkpoints(tmp_path))
    assert len(cases) >= 280
    for name, content in cases:
        src = tmp_path / 'src' / f'{name}.pyth'
        src.parent.mkdir(exist_ok=True)
        if isinstance(content, bytes):
            src.write_bytes(content)
        elif isinstance(content, tuple):
            torch.save(content[0], src, _use_new_zipfile_serialization=False)
        else:
            torch.save(content, src)
        dst = tmp_path / 'out' / f'{name}.pth'
        with pytest.raises(SlowFastConversionError) as error:
            convert_slowfast_file(src, dst)
        message = str(error.value)
        assert len(message) > 20 and '\x1b' not in message, (name, message)
        assert not (tmp_path / 'out').exists(), name
        if isinstance(content, bytes) or name.startswith('code'):
            with pytest.raises((RuntimeError, pickle.UnpicklingError)):
                load_checkpoint_file(src)
    assert not list(tmp_path.glob('pwned_*'))


def test_resume_after_a_kill_ends_with_the_weights_of_the_run_never_stopped(tmp_path):
    """tools/train.py on the digits config (3 short epochs of 4 iterations on 256 of the
    images, reversible backprop, dropout and drop path, validation every epoch, the
    random crops in the config's data loader worker, not persistent and seeded by
    mmrev.seed_worker): killed with SIGKILL in the third epoch and resumed with
    --resume, it ends with exactly the weights of the run never killed."""
    from mmrev.datasets.digits import prepare_digits
    data = tmp_path / 'digits'
    prepare_digits(str(data))
    root = Path(__file__).parents[1]
    config = root / 'configs' / 'revvit' / 'revvit-tiny_1xb64_digits.py'
    loader = Config.fromfile(config).train_dataloader  # resume exact with the shipped one
    assert loader.num_workers >= 1 and not loader.persistent_workers
    options = [f'data_root={data}', f'train_dataloader.dataset.data_root={data}',
               f'val_dataloader.dataset.data_root={data}', 'model.backbone.drop_rate=0.1',
               'val_dataloader.num_workers=0', 'val_dataloader.persistent_workers=False',
               'train_dataloader.dataset.indices=256', 'val_dataloader.dataset.indices=128',
               'train_cfg.max_epochs=3', 'train_cfg.val_interval=1',
               'default_hooks.checkpoint.interval=1', 'default_hooks.checkpoint.max_keep_ckpts=3',
               'default_hooks.logger.interval=2']

    def command(work_dir, *extra):
        return [sys.executable, str(root / 'tools' / 'train.py'),
                str(config), '--work-dir', str(work_dir), *extra, '--cfg-options', *options]

    subprocess.run(command(tmp_path / 'whole'), check=True, capture_output=True, timeout=600)
    run = subprocess.Popen(command(tmp_path / 'killed'), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    for line in run.stdout:  # kill it in the middle of the third epoch
        if re.search(r'Epoch\(train\) +\[3\]\[', line):
            run.kill()
            break
    assert run.wait(timeout=60) == -9
    assert not (tmp_path / 'killed' / 'epoch_3.pth').exists()
    resumed = subprocess.run(command(tmp_path / 'killed', '--resume'), capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    assert 'resumed epoch: 2' in resumed.stdout
    whole, killed = (load_checkpoint_file(tmp_path / name / 'epoch_3.pth')['state_dict']
                     for name in ('whole', 'killed'))
    assert whole.keys() == killed.keys()
    assert all(torch.equal(whole[k], killed[k]) for k in whole)


FAULT = '''
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class RaiseOnRank1(Hook):
    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.rank == 1 and runner.iter == 2:
            raise RuntimeError('fault injected on rank 1')
'''


def test_ddp_rank_failing_mid_run_stops_the_other_in_bounded_time(tmp_path):
    """2-process DDP on CPU (torchrun, gloo): rank 1 raises before its third iteration
    while rank 0 waits in the gradient all-reduce; the whole run exits with an error
    naming the fault within the test's bound, not after gloo's 30-minute timeout."""
    import time

    from test_distributed import DIGITS_CONFIG, torchrun_train
    (tmp_path / 'fault_injection.py').write_text(FAULT)
    config = tmp_path / 'faulty.py'
    config.write_text(f"""_base_ = [{str(DIGITS_CONFIG)!r}]
custom_imports = dict(imports=['mmrev', 'fault_injection'], allow_failed_imports=False)
custom_hooks = [dict(type='RaiseOnRank1')]
""")
    start = time.monotonic()
    result = torchrun_train(tmp_path, config, timeout=240)
    assert result.returncode != 0
    assert 'fault injected on rank 1' in result.stdout + result.stderr
    assert time.monotonic() - start < 240


class NaNAt(Hook):
    """Makes iteration ``at`` non-finite: a NaN in its batch (``where='loss'``), or in
    the gradient the reversible recompute of backbone block 1 hands to block 0
    (``where='recompute'``); records the weights after every iteration."""

    def __init__(self, at: int, where: str):
        self.at, self.where, self.weights = at, where, []

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        block = runner.model.backbone.layers[1]
        block.__dict__.pop('backward_pass', None)  # the class's own again
        if runner.iter + 1 != self.at:
            return
        if self.where == 'loss':
            data_batch['inputs'][0][0, 0, 0] = float('nan')
            return
        backward_pass = block.backward_pass

        def nan_below(*args):
            x1, x2, dx1, dx2, param_grads = backward_pass(*args)
            return x1, x2, torch.full_like(dx1, float('nan')), dx2, param_grads
        block.backward_pass = nan_below

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.weights.append({k: v.clone() for k, v in runner.model.state_dict().items()})


@pytest.mark.parametrize('where, first', [('loss', 'head.bias'),
                                          ('recompute', 'backbone.layers.0.')])
def test_nonfinite_gradients_skip_the_step_and_name_where_they_appeared(
        where, first, tmp_path):
    from test_hook import log_text, make_runner
    probe = NaNAt(3, where)
    runner = make_runner(tmp_path, dict(interval=0), max_iters=4, probe=probe)
    runner.train()
    before, at, after = probe.weights[1], probe.weights[2], probe.weights[3]
    assert all(torch.equal(before[k], at[k]) for k in before)  # step 3 skipped
    assert all(torch.isfinite(v).all() for v in after.values())
    assert any(not torch.equal(at[k], after[k]) for k in at)  # step 4 trains
    log = log_text(tmp_path)
    assert re.search(rf'Non-finite gradients at iteration 3 in \d+ of \d+ parameters, '
                     rf'first in backward order: {re.escape(first)}', log), log[-2000:]
    assert '1 skipped so far' in log


def test_nonfinite_policy_raise_names_the_parameters(tmp_path):
    from test_hook import make_runner
    runner = make_runner(tmp_path, dict(interval=0, nonfinite='raise'),
                         probe=NaNAt(2, 'loss'))
    with pytest.raises(FloatingPointError, match='iteration 2 .* first in backward order: '
                       'head.bias'):
        runner.train()
