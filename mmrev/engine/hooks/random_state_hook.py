"""Random number generator states saved with checkpoints, so that a resumed run is the
run that was interrupted."""
import random
from typing import Optional

import numpy as np
import torch
from mmengine.hooks import Hook

from mmrev.registry import FUNCTIONS, HOOKS


def get_random_state() -> dict:
    """The states of Python's, numpy's and torch's global generators (CUDA's too, when
    initialised)."""
    state = dict(python=random.getstate(), numpy=np.random.get_state(),
                 torch=torch.get_rng_state())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_random_state(state: dict) -> None:
    """Put back the states :func:`get_random_state` returned."""
    random.setstate(state['python'])
    np.random.set_state(state['numpy'])
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


@FUNCTIONS.register_module()
def seed_worker(worker_id: int) -> None:
    """A data loader ``worker_init_fn`` (``worker_init_fn=dict(type='mmrev.seed_worker')``)
    that seeds a worker's numpy and Python generators from its torch seed, which the data
    loader draws for each epoch's workers from the main process's generator: the
    augmentations differ from epoch to epoch (mmengine's default seeds every epoch's
    workers alike) and, with :class:`RandomStateHook`, a resumed run's workers draw what
    the uninterrupted run's drew. For workers that are not persistent."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


@HOOKS.register_module()
class RandomStateHook(Hook):
    """Makes ``--resume`` continue the interrupted run exactly.

    mmengine restores a run's seed on resume, not its generators' positions: after a
    resume, dropout and drop-path masks and data augmentations (those drawn in the main
    process) differ from those of the run that never stopped, so the weights do too.
    This hook saves the global generators' states (Python, numpy, torch, CUDA) in every
    checkpoint and puts them back when training resumes from it, right before the first
    epoch; and it keeps validation and testing from moving the training generators
    (a run with validation draws what one without it draws).

    With it, a run killed at any point and resumed from its last epoch checkpoint ends
    with the weights of the uninterrupted run, bit for bit, given deterministic kernels
    (CPU, or ``randomness=dict(deterministic=True)``) and a data pipeline in the main
    process or in workers that are not persistent and seeded by :func:`seed_worker`
    (``persistent_workers=True`` workers keep generators of their own, which restart
    with the run).
    """
    priority = 'LOWEST'  # restore after every other hook's before_train_epoch

    def __init__(self):
        self._resumed: Optional[dict] = None
        self._outside_eval: Optional[dict] = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint['random_state'] = get_random_state()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        self._resumed = checkpoint.get('random_state') if runner._resume else None
        if runner._resume and self._resumed is None:
            runner.logger.warning('The checkpoint holds no random_state (saved without '
                                  'mmrev.RandomStateHook): the resumed run draws other '
                                  'random numbers than the interrupted one')

    def before_train_epoch(self, runner) -> None:
        if self._resumed is not None:
            set_random_state(self._resumed)
            self._resumed = None

    def before_val(self, runner) -> None:
        self._outside_eval = get_random_state()

    def after_val(self, runner) -> None:
        set_random_state(self._outside_eval)

    before_test = before_val
    after_test = after_val
