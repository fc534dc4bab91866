"""A hook that switches reversible backprop and watches how faithfully it inverts."""
import sys
from functools import partial
from typing import Dict, List, Optional, Tuple

import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.optim import AmpOptimWrapper, OptimWrapper, OptimWrapperDict

from mmrev.registry import HOOKS
from mmrev.reversible import ReversibleSequence
from mmrev.reversible.diagnostics import gradient_error, reconstruction_errors

POLICIES = ('warn', 'switch', 'raise')
NONFINITE_POLICIES = ('skip', 'raise', 'off')


def _peak_memory_mb(device: torch.device) -> float:
    """CUDA peak allocated memory since the last reset; on CPU, the process's peak
    resident memory (it never decreases)."""
    if device.type == 'cuda':
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource  # not on Windows
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return max_rss / 2**20 if sys.platform == 'darwin' else max_rss / 2**10


def _reset_peak_memory(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)


@HOOKS.register_module()
class ReversibleBackpropHook(Hook):
    """Switches reversible backprop on or off and monitors its reconstruction error.

    Every ``interval`` training iterations, each reversible stack recomputes its input
    streams from its outputs on the current batch (under the batch's autocast state) and
    the error is logged as ``rev/recon_err`` (relative, max over the stacks) and
    ``rev/recon_abs_err``, per stack as ``rev/{stack}/recon_err`` if there are several:
    a log line of its own on checked iterations, and the visualizer's scalars at that
    step. Other
    iterations run no extra code in the model: the measuring forward hooks are installed
    only for checked iterations. The check does not touch the training RNG.

    Args:
        reversible (bool): use reversible backprop, from ``begin_iter`` on; False:
            ordinary backprop throughout (e.g. to debug). Overrides the model's own
            setting. Defaults to True.
        begin_iter (int): ordinary backprop before this iteration. Defaults to 0.
        interval (int): check every ``interval`` iterations; 0: never. Defaults to 100.
        tolerance (float, optional): the largest relative reconstruction error
            accepted. None: 1e-3 in float32, and under autocast 4 x the autocast
            dtype's epsilon (bfloat16: 3.1e-2, float16: 3.9e-3), since the recompute
            runs in that dtype: a one-ulp difference in a recomputed float32 input can
            flip a rounding to bfloat16/float16 and hence move the reconstruction by up
            to the autocast dtype's precision. Defaults to None.
        policy (str): when a stack's error exceeds ``tolerance`` (or is NaN) while it
            runs reversible backprop: ``'warn'``; ``'switch'`` every stack to ordinary
            backprop for the rest of the run, from the failing stack of this
            iteration on; ``'raise'`` a RuntimeError before the backward.
            Defaults to ``'warn'``.
        check_grad (bool): on checked iterations, also log ``rev/grad_err``, the
            largest relative difference between reversible and ordinary gradients of
            each stack on the batch (costs an ordinary forward and two backward passes
            of the stacks; off, with a warning, under DDP with ``static_graph=True``).
            Defaults to False.
        log_memory (bool): log the iteration's peak memory as ``rev/peak_mem_mb``:
            CUDA peak allocated (the checks excluded), or the process's peak resident
            memory on CPU. Defaults to True.
        nonfinite (str): what to do before an optimizer step when a gradient is NaN or
            infinite (a non-finite loss, or a reversible recompute gone wrong):
            ``'skip'`` the step, weights unchanged, with a warning naming the first
            parameters with non-finite gradients in backward order (the block where
            they appeared); ``'raise'`` a FloatingPointError naming them; ``'off'``.
            Optimizer wrappers with a loss scaler (mmengine's ``AmpOptimWrapper``)
            are left to the scaler, which skips such steps itself. Defaults to
            ``'skip'``.
    """
    priority = 'NORMAL'

    def __init__(self,
                 reversible: bool = True,
                 begin_iter: int = 0,
                 interval: int = 100,
                 tolerance: Optional[float] = None,
                 policy: str = 'warn',
                 check_grad: bool = False,
                 log_memory: bool = True,
                 nonfinite: str = 'skip'):
        if policy not in POLICIES:
            raise ValueError(f'policy must be one of {POLICIES}, got {policy!r}')
        if nonfinite not in NONFINITE_POLICIES:
            raise ValueError(f'nonfinite must be one of {NONFINITE_POLICIES}, got '
                             f'{nonfinite!r}')
        if begin_iter < 0 or interval < 0:
            raise ValueError(f'begin_iter and interval must be >= 0, got {begin_iter} '
                             f'and {interval}')
        if tolerance is not None and not tolerance > 0:
            raise ValueError(f'tolerance must be > 0 or None, got {tolerance}')
        self.reversible = reversible
        self.begin_iter = begin_iter
        self.interval = interval
        self.tolerance = tolerance
        self.policy = policy
        self.check_grad = check_grad
        self._check_grad = check_grad
        self.log_memory = log_memory
        self.nonfinite = nonfinite
        self.skipped_steps = 0
        self._guarded: List[OptimWrapper] = []
        self.switched_off = False
        self._stacks: Dict[str, ReversibleSequence] = {}
        self._handles: Dict[str, torch.utils.hooks.RemovableHandle] = {}
        self._errors: Dict[str, Tuple[float, ...]] = {}
        self._peak_mb = 0.
        self._device = torch.device('cpu')

    def before_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        self._stacks = {name: module for name, module in model.named_modules()
                        if isinstance(module, ReversibleSequence)}
        if not self._stacks:
            raise TypeError(f'ReversibleBackpropHook found no ReversibleSequence in '
                            f'{type(model).__name__}: use it with a reversible model '
                            f'(e.g. mmrev.RevViT) or remove it from custom_hooks')
        self._device = next(model.parameters()).device
        self._check_grad = self.check_grad and not getattr(runner.model, 'static_graph',
                                                           False)
        if self.check_grad and not self._check_grad:
            runner.logger.warning(
                'ReversibleBackpropHook: check_grad is off under DDP with '
                'static_graph=True, which reduces each gradient once per iteration and '
                'fails on the check\'s extra backward passes; rev/recon_err is still '
                'measured (use static_graph=False to check gradients)')
        if self.nonfinite != 'off':
            wrappers = (runner.optim_wrapper.values()
                        if isinstance(runner.optim_wrapper, OptimWrapperDict)
                        else [runner.optim_wrapper])
            for wrapper in wrappers:
                if not isinstance(wrapper, AmpOptimWrapper):  # its loss scaler skips
                    wrapper.step = partial(self._guarded_step, runner, model, wrapper.step)
                    self._guarded.append(wrapper)

    def after_train(self, runner) -> None:
        for wrapper in self._guarded:
            del wrapper.step  # the class's own again
        self._guarded = []

    def _guarded_step(self, runner, model: torch.nn.Module, step, **kwargs) -> None:
        """The optimizer step, unless a gradient is not finite (``nonfinite``)."""
        grads = [(name, p.grad) for name, p in model.named_parameters()
                 if p.grad is not None]
        if not grads or bool(torch.stack([g.isfinite().all() for _, g in grads]).all()):
            return step(**kwargs)
        bad = [name for name, grad in reversed(grads) if not grad.isfinite().all()]
        message = (f'Non-finite gradients at iteration {runner.iter + 1} in {len(bad)} of '
                   f'{len(grads)} parameters, first in backward order: '
                   f'{", ".join(bad[:3])}')
        if self.nonfinite == 'raise':
            raise FloatingPointError(f'{message}. Look at the loss and the inputs of '
                                     f'this batch, or train with nonfinite=\'skip\'.')
        self.skipped_steps += 1
        runner.logger.warning(f'{message}: the step is skipped, weights unchanged '
                              f'({self.skipped_steps} skipped so far)')

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        reversible = (self.reversible and runner.iter >= self.begin_iter
                      and not self.switched_off)
        for stack in self._stacks.values():
            stack.reversible = reversible
        if self.log_memory:
            self._peak_mb = 0.
            _reset_peak_memory(self._device)
        if self.every_n_train_iters(runner, self.interval):
            self._handles = {name: stack.register_forward_hook(
                partial(self._check, runner, name), with_kwargs=True)
                for name, stack in self._stacks.items()}

    def _check(self, runner, name: str, stack: ReversibleSequence, inputs: tuple,
               kwargs: dict, outputs) -> Optional[tuple]:
        """Forward hook of a checked iteration: measure, then apply the policy."""
        self._handles.pop(name).remove()  # once per stack and iteration
        if self.log_memory:  # the check's own memory is not the training's
            self._peak_mb = max(self._peak_mb, _peak_memory_mb(self._device))
        x1, x2 = inputs
        errors = reconstruction_errors(stack, x1, x2)
        if self._check_grad:
            errors += (gradient_error(stack, x1, x2), )
        self._errors[name] = errors
        if self.log_memory:
            _reset_peak_memory(self._device)
        abs_err, rel_err = errors[:2]
        tolerance = self._tolerance(x1.device.type)
        if not stack.reversible or rel_err <= tolerance:
            return None
        message = (f'Reversible stack {name!r} recomputes its inputs with relative error '
                   f'{rel_err:.2e} (max abs {abs_err:.2e}) > tolerance {tolerance:.1e} '
                   f'at iteration {runner.iter + 1}: reversible backprop gives wrong '
                   f'gradients.')
        if self.policy == 'raise':
            raise RuntimeError(
                f'{message} Train with ordinary backprop (ReversibleBackpropHook('
                f'reversible=False)), in fp32 rather than low precision, or use '
                f"policy='switch'.")
        if self.policy == 'warn':
            runner.logger.warning(message)
            return None
        self.switched_off = True
        for each in self._stacks.values():
            each.reversible = False
        runner.logger.warning(f'{message} Switched every reversible stack to ordinary '
                              f'backprop for the rest of the run, this iteration included.')
        return stack.forward(x1, x2, **kwargs)  # redone with ordinary autograd

    def _tolerance(self, device_type: str) -> float:
        """The tolerance under the current (the forward's) autocast state."""
        if self.tolerance is not None:
            return self.tolerance
        if torch.is_autocast_enabled(device_type):
            return 4 * torch.finfo(torch.get_autocast_dtype(device_type)).eps
        return 1e-3

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        for handle in self._handles.values():  # stacks this iteration did not run
            handle.remove()
        self._handles = {}
        if self._errors:
            self._log_errors(runner)
            self._errors = {}
        if self.log_memory:
            peak_mb = max(self._peak_mb, _peak_memory_mb(self._device))
            runner.message_hub.update_scalar('train/rev/peak_mem_mb', peak_mb)

    def _log_errors(self, runner) -> None:
        keys = ('recon_abs_err', 'recon_err', 'grad_err')
        scalars = {f'rev/{key}': torch.tensor(values).max().item()  # NaN propagates
                   for key, values in zip(keys, zip(*self._errors.values()))}
        if len(self._errors) > 1:
            scalars.update({f'rev/{stack}/{key}': value
                            for stack, errors in self._errors.items()
                            for key, value in zip(keys, errors)})
        # to the visualizer at this step only, not to the message hub: the runner's log
        # line would show them at 4 decimals (0.0000) and repeat a stale value
        runner.visualizer.add_scalars(scalars, step=runner.iter + 1)
        runner.logger.info(f'Iter(train) {runner.iter + 1}: ' + ', '.join(
            f'{key}: {value:.3e}' for key, value in scalars.items()))
