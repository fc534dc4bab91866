"""Faults injected into training: a process killed while it writes a checkpoint."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mmrev.engine import load_checkpoint_file

# Trains a tiny model for 3 iterations, saving a checkpoint after each one with the hook
# named by argv[2] (max_keep_ckpts=1); the third save is killed (SIGKILL) half way
# through writing its file. argv[1]: the work folder; argv[3] 'resume': resume instead.
TRAIN = '''
import os, signal, sys
import torch
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
