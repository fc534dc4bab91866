"""mmrev's CUDA paths, marked ``cuda`` and skipped without a GPU; on a GPU machine
``tools/analysis_tools/gpu_validation.sh`` runs them (``pytest -m cuda tests/test_cuda.py``).

Reversible against ordinary gradients with dropout and drop path (masks drawn from the
CUDA RNG and replayed in backward), tiny and official archs; mixed precision through
mmengine's ``AmpOptimWrapper`` (fp16 with dynamic loss scaling, bf16); the
``ReversibleBackpropHook``'s checks in a Runner on CUDA.
"""
from functools import partial

import pytest
import torch
from mmengine.optim import AmpOptimWrapper
from test_distributed import (
    AMP_STEPS,
    BACKBONES,
    LR,
    Case,
    check_mixed_precision_training,
    classifier,
    concatenated_batch,
    train,
)
from test_hook import TinyClassifier, drifting_model, history, log_text, make_runner
from test_revmvit import four_stages
from test_revvit import tiny

from mmrev.models import RevMViT, RevViT
from mmrev.testing import (
    autocast_gradient_errors,
    backprop_gradients,
    projection_loss,
    relative_error,
    set_reversible,
)

DEVICE = 'cuda'
pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')]

# name: (model with dropout and/or drop path, input size)
MODELS = {
    'RevViT-tiny': (partial(tiny, drop_rate=0.1, drop_path_rate=0.2), 32),
    'RevMViT-tiny': (partial(four_stages, drop_path_rate=0.3), 64),
    'RevViT-S': (partial(RevViT, arch='small', drop_rate=0.1, drop_path_rate=0.1), 224),
    'RevMViT-B': (partial(RevMViT, arch='base', drop_path_rate=0.2), 224),
}
TINY = ['RevViT-tiny', 'RevMViT-tiny']


def build(name: str, batch_size: int = 2):
    """The model ``name`` in training mode on the GPU, and a batch for it."""
    make_model, size = MODELS[name]
    torch.manual_seed(0)
    model = make_model().to(DEVICE).train()
    return model, torch.randn(batch_size, 3, size, size, device=DEVICE)


@pytest.fixture
def exact_fp32():
    """No TF32 (cuDNN's default for convolutions): fp32 products as on CPU, so that the
    rounding of recomputed inputs is not amplified to TF32's 1e-3."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def floored_errors(actual: dict, expected: dict, floor: float = 1e-3) -> dict:
    """Per tensor, ``max|actual - expected|`` relative to the tensor's own largest value,
    floored at ``floor`` times the largest gradient of the model: a gradient that is 0
    up to rounding (k's norm bias, which the softmax ignores) is measured at the model's
    scale, not at its own."""
    assert actual.keys() == expected.keys()
    scale = max(grad.abs().max().item() for grad in expected.values())
    return {name: (actual[name] - grad).abs().max().item()
            / max(grad.abs().max().item(), floor * scale) for name, grad in expected.items()}


@pytest.mark.parametrize('name', MODELS)
def test_gradients_match_ordinary_backprop_with_cuda_rng_replay(name, exact_fp32):
    model, x = build(name)
    expected = backprop_gradients(model, x, reversible=False, seed=1)
    actual = backprop_gradients(model, x, reversible=True, seed=1)
    errors = floored_errors(actual, expected)
    # CPU: at most 2e-5 (k's norm biases, rounding noise), 3e-7 elsewhere; a mask not
    # replayed, or replayed from the wrong RNG, is an error of order 1
    assert max(errors.values()) <= 1e-3, sorted(errors.items(), key=lambda e: -e[1])[:5]
    # the masks come from the CUDA RNG: another seed draws others
    other = backprop_gradients(model, x, reversible=True, seed=2)
    assert max(floored_errors(other, actual).values()) > 1e-2


@pytest.mark.parametrize('name', TINY)
def test_cuda_rng_untouched_by_eval_and_advanced_as_ordinary_in_training(name):
    model, x = build(name)
    state = torch.cuda.get_rng_state()
    with torch.no_grad():
        model.eval()(x)
    assert torch.equal(torch.cuda.get_rng_state(), state)
    model.train()
    after = {}
    for reversible in (False, True):
        set_reversible(model, reversible)
        torch.cuda.set_rng_state(state)
        projection_loss(model(x)).backward()
        after[reversible] = torch.cuda.get_rng_state()
    assert torch.equal(after[True], after[False])


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
@pytest.mark.parametrize('name', TINY)
def test_autocast_gradients_within_mixed_precision_noise(name, dtype):
    model, x = build(name)
    error, noise = autocast_gradient_errors(model, x, dtype)
    assert error <= noise, dict(error=error, noise=noise)


@pytest.mark.parametrize('dtype', ['float16', 'bfloat16'])
@pytest.mark.parametrize('backbone', BACKBONES)
def test_amp_optim_wrapper_training_within_mixed_precision_noise(backbone, dtype):
    check_mixed_precision_training(
        backbone, partial(AmpOptimWrapper, dtype=dtype, loss_scale='dynamic'), DEVICE)


@pytest.mark.parametrize('backbone', BACKBONES)
def test_fp16_overflow_skips_the_steps_and_lowers_the_loss_scale(backbone):
    """Inf gradients from an oversized loss scale pass through reversible backprop:
    every step is skipped, the scale halved each time, the parameters left as they were."""
    model = classifier(Case(backbone, reversible=True)).to(DEVICE)
    initial = [p.detach().clone() for p in model.parameters()]
    wrapper = AmpOptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=LR),
                              dtype='float16', loss_scale=dict(init_scale=2.**40))
    train(model, wrapper, [concatenated_batch(range(1))] * AMP_STEPS)
    assert wrapper.loss_scaler.get_scale() == 2.**(40 - AMP_STEPS)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), initial))


@pytest.mark.parametrize('dtype', [None, 'float16', 'bfloat16'])
def test_hook_checks_in_a_runner_on_cuda(tmp_path, dtype):
    """Reconstruction (and in fp32 the gradient check) within tolerance, with drop
    path, fp32 or under AmpOptimWrapper; CUDA peak memory logged every iteration."""
    optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.1))
    if dtype:
        optim_wrapper.update(type='AmpOptimWrapper', dtype=dtype)
    torch.manual_seed(0)
    runner = make_runner(tmp_path, dict(interval=2, check_grad=dtype is None),
                         model=TinyClassifier(drop_path_rate=0.3),
                         optim_wrapper=optim_wrapper)
    runner.train()
    assert next(runner.model.parameters()).is_cuda
    assert max(history(runner, 'rev/recon_err')) < 1e-5
    if dtype is None:
        assert max(history(runner, 'rev/grad_err')) < 1e-4
    peaks = history(runner, 'rev/peak_mem_mb')
    assert len(peaks) == 4 and min(peaks) > 0


def test_hook_check_leaves_the_cuda_rng_and_training_unchanged(tmp_path):
    """The check draws its masks from a fork of the CUDA RNG: the drop path masks of
    training, and hence its updates, are those of a run without checks."""
    params = []
    for interval in (0, 1):
        torch.manual_seed(0)
        runner = make_runner(tmp_path / str(interval), dict(interval=interval),
                             model=TinyClassifier(drop_path_rate=0.3))
        runner.train()
        params.append(torch.cat([p.flatten() for p in runner.model.parameters()]))
    # CUDA kernels may sum in another order from run to run: not bitwise
    assert relative_error(params[1], params[0]) <= 1e-6


def test_hook_switches_a_drifting_model_to_ordinary_backprop_on_cuda(tmp_path):
    runner = make_runner(tmp_path, dict(interval=2, policy='switch'), model=drifting_model())
    runner.train()
    assert min(history(runner, 'rev/recon_err')) > 1e-3
    assert 'Switched every reversible stack to ordinary backprop' in log_text(tmp_path)
