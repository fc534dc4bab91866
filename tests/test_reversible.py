"""The engine alone, on toy sub-functions: coupling, inverse, reversible backprop."""
from contextlib import nullcontext
from functools import partial

import pytest
import torch
from torch import nn

from mmrev.reversible import (
    ForwardState,
    InvertibleBlock,
    ReversibleBlock,
    ReversibleSequence,
    affine,
    call,
    momentum,
    recompute,
)
from mmrev.testing import backprop_gradients, gradient_errors, saved_tensor_bytes


class Stack(nn.Module):
    """Both streams start from the input; the output is their concatenation."""

    def __init__(self, depth, p=0.2, drop_path=0.3, g_chunks=1, identity_branches=False):
        super().__init__()

        def branches():
            if identity_branches:
                return nn.Identity(), nn.Identity()
            return (nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Dropout(p)),
                    nn.Sequential(nn.Linear(8, 8), nn.GELU()))

        self.layers = ReversibleSequence([
            ReversibleBlock(*branches(), drop_path, g_chunks) for _ in range(depth)])

    def forward(self, x):
        return torch.cat(self.layers(x, x), -1)


def test_inverse_recovers_inputs():
    block = ReversibleBlock(nn.Linear(8, 8), nn.Linear(8, 8)).double()
    x1, x2 = torch.randn(2, 3, 8, dtype=torch.double).unbind(0)
    y1, y2 = block(x1, x2)
    torch.testing.assert_close(y1, x1 + block.f(x2))
    torch.testing.assert_close(y2, x2 + block.g(y1))
    r1, r2 = block.inverse(y1, y2)
    torch.testing.assert_close(r1, x1, rtol=0, atol=1e-12)
    torch.testing.assert_close(r2, x2, rtol=0, atol=1e-12)


@pytest.mark.parametrize('depth', [1, 3])
@pytest.mark.parametrize('g_chunks', [1, 2])
def test_gradients_match_ordinary_backprop(depth, g_chunks):
    model = Stack(depth, p=0.2, g_chunks=g_chunks).train()
    x = torch.randn(2, 4, 8)
    expected = backprop_gradients(model, x, reversible=False, seed=1)
    actual = backprop_gradients(model, x, reversible=True, seed=1)
    errors = gradient_errors(actual, expected)
    assert max(errors.values()) <= 1e-5, errors


@pytest.mark.parametrize('drop_path', [0., 0.5])
def test_gradients_match_when_branches_return_their_inputs(drop_path):
    # Identity branches alias the streams and pass gradients through unchanged: the
    # in-place sums of the engine must not write into those shared buffers.
    model = Stack(3, drop_path=drop_path, identity_branches=True).train()
    x = torch.randn(16, 4, 8)
    expected = backprop_gradients(model, x, reversible=False, seed=1)
    actual = backprop_gradients(model, x, reversible=True, seed=1)
    torch.testing.assert_close(actual['input'], expected['input'])


class Recording(nn.Linear):
    """Keeps its last output (no hook: a hook would turn the in-place sums off)."""

    def forward(self, x):
        self.output = super().forward(x)
        return self.output


def test_no_grad_sums_reuse_fresh_branch_outputs_only():
    block = ReversibleBlock(Recording(8, 8), nn.Linear(8, 8)).eval()
    x = torch.randn(3, 8)
    with torch.no_grad():
        y1, _ = block(x, x)
    assert y1.data_ptr() == block.f.output.data_ptr()
    y1, _ = block(x, x)
    assert y1.data_ptr() != block.f.output.data_ptr()

    identity = ReversibleBlock(nn.Identity(), nn.Identity()).eval()
    x1, x2 = torch.randn(2, 3, 8).unbind(0)
    copies = x1.clone(), x2.clone()
    with torch.no_grad():
        y1, y2 = identity(x1, x2)
        outputs = y1.clone(), y2.clone()
        r1, r2 = identity.inverse(y1, y2)
    assert torch.equal(x1, copies[0]) and torch.equal(x2, copies[1])
    assert torch.equal(y1, x1 + x2) and torch.equal(y2, x2 + y1)
    assert torch.equal(y1, outputs[0]) and torch.equal(y2, outputs[1])
    torch.testing.assert_close(r1, x1)
    torch.testing.assert_close(r2, x2)


def test_eval_and_no_grad_use_ordinary_path_with_same_numbers():
    model = Stack(2, p=0., drop_path=0.)
    x = torch.randn(2, 4, 8)
    model.train()
    train_out = model(x)
    assert 'Reversible' in model.layers(x, x)[0].grad_fn.name()
    model.eval()
    eval_out = model(x)
    assert 'Reversible' not in model.layers(x, x)[0].grad_fn.name()
    with torch.no_grad():
        model.train()
        no_grad_out = model(x)
    torch.testing.assert_close(train_out, eval_out, rtol=0, atol=0)
    torch.testing.assert_close(no_grad_out, eval_out, rtol=0, atol=0)


def test_stochastic_depth_drops_whole_block_per_sample():
    block = ReversibleBlock(nn.Linear(8, 8), nn.Linear(8, 8), drop_path=0.5).train()
    x1, x2 = torch.randn(2, 64, 3, 8).unbind(0)
    y1, y2 = block(x1, x2)
    f_dropped = (y1 == x1).flatten(1).all(1)
    g_dropped = (y2 == x2).flatten(1).all(1)
    assert 0 < f_dropped.sum() < 64
    assert torch.equal(f_dropped, g_dropped)
    kept = ~f_dropped
    torch.testing.assert_close(y1[kept], x1[kept] + 2 * block.f(x2[kept]))
    assert torch.equal(block.eval()(x1, x2)[0], x1 + block.f(x2))


def test_inverse_of_training_forward_replays_recorded_states():
    block = ReversibleBlock(nn.Sequential(nn.Linear(8, 8), nn.Dropout(0.5)),
                            nn.Linear(8, 8), drop_path=0.5).train().double()
    x1, x2 = torch.randn(2, 16, 3, 8, dtype=torch.double).unbind(0)
    states = []
    y1, y2 = block(x1, x2, states)
    r1, r2 = block.inverse(y1, y2, states[0])
    torch.testing.assert_close(r1, x1, rtol=0, atol=1e-12)
    torch.testing.assert_close(r2, x2, rtol=0, atol=1e-12)


def test_invalid_arguments():
    with pytest.raises(ValueError, match='g_chunks'):
        ReversibleBlock(nn.Identity(), nn.Identity(), g_chunks=0)
    with pytest.raises(ValueError, match='drop_path'):
        ReversibleBlock(nn.Identity(), nn.Identity(), drop_path=1.)


def coupled_stack(coupling, branch_channels=8, depth=3):
    def branch():
        return nn.Sequential(nn.Linear(8, branch_channels), nn.Tanh(), nn.Dropout(0.2))

    class CoupledStack(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = ReversibleSequence([
                ReversibleBlock(branch(), branch(), coupling=coupling) for _ in range(depth)])

        def forward(self, x):
            return torch.cat(self.layers(x, x), -1)

    return CoupledStack()


@pytest.mark.parametrize('coupling, channels', [(momentum(0.9), 8), (affine(), 16)],
                         ids=['momentum', 'affine'])
def test_couplings_invert_and_give_ordinary_gradients(coupling, channels):
    torch.manual_seed(0)
    model = coupled_stack(coupling, channels).train().double()
    x = torch.randn(4, 8, dtype=torch.double)
    records = []
    with torch.no_grad():
        y1, y2 = model.layers(x, x, records=records)
    r1, r2 = model.layers.inverse(y1, y2, records)
    torch.testing.assert_close(r1, x, rtol=0, atol=1e-12)
    torch.testing.assert_close(r2, x, rtol=0, atol=1e-12)
    block = model.layers[0]
    b = block.f(x)
    torch.testing.assert_close(coupling.inverse(coupling.forward(x, b), b), x)
    expected = backprop_gradients(model, x, reversible=False, seed=1)
    actual = backprop_gradients(model, x, reversible=True, seed=1)
    errors = gradient_errors(actual, expected)
    assert max(errors.values()) <= 1e-10, errors


def test_momentum_coupling_is_momentumnet():
    block = ReversibleBlock(nn.Linear(8, 8), nn.Linear(8, 8), coupling=momentum(0.75))
    x1, x2 = torch.randn(2, 3, 8).unbind(0)
    y1, y2 = block(x1, x2)
    torch.testing.assert_close(y1, 0.75 * x1 + 0.25 * block.f(x2))
    torch.testing.assert_close(y2, 0.75 * x2 + 0.25 * block.g(y1))


class Shear(InvertibleBlock):
    """``Y1 = X1 + F(X2)``, ``Y2 = X2``: a block of its own, on the generic backward."""

    def __init__(self):
        super().__init__()
        self.f = nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Dropout(0.3))

    def forward(self, x1, x2, records=None):
        if records is not None:
            records.append(ForwardState(x2))
        return x1 + self.f(x2), x2 * 1

    def rerun(self, x1, x2, record):
        with record.replay():
            return x1 + self.f(x2), x2 * 1

    def inverse(self, y1, y2, record=None):
        with record.replay() if record else nullcontext():
            return y1 - self.f(y2), y2


class Swap(Shear):
    def forward(self, x1, x2, records=None):
        y1, y2 = super().forward(x1, x2, records)
        return y2, y1

    def rerun(self, x1, x2, record):
        y1, y2 = super().rerun(x1, x2, record)
        return y2, y1

    def inverse(self, y1, y2, record=None):
        return super().inverse(y2, y1, record)


def test_a_block_of_its_own_on_the_generic_backward():
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = ReversibleSequence([Swap() for _ in range(4)])

        def forward(self, x):
            return torch.cat(self.layers(x, 2 * x), -1)

    model = Model().train().double()
    x = torch.randn(4, 8, dtype=torch.double)
    expected = backprop_gradients(model, x, reversible=False, seed=1)
    actual = backprop_gradients(model, x, reversible=True, seed=1)
    errors = gradient_errors(actual, expected)
    assert max(errors.values()) <= 1e-10, errors


def test_block_contract_is_enforced():
    class Incomplete(InvertibleBlock):
        def forward(self, x1, x2, records=None):
            return x1, x2

    with pytest.raises(TypeError, match='abstract'):
        Incomplete()
    with pytest.raises(ValueError, match='additive coupling'):
        ReversibleBlock(nn.Identity(), nn.Identity(), drop_path=0.1, coupling=momentum(0.9))
    with pytest.raises(ValueError, match='beta'):
        momentum(1.)


def exact_stack(depth, exact_bits=24):
    torch.manual_seed(0)
    return ReversibleSequence([
        ReversibleBlock(nn.Sequential(nn.Linear(8, 8), nn.Dropout(0.2)),
                        nn.Sequential(nn.Linear(8, 8), nn.GELU()), drop_path=0.2)
        for _ in range(depth)], exact_bits=exact_bits).train()


@pytest.mark.parametrize('autocast', [None, torch.bfloat16], ids=['fp32', 'bf16'])
def test_exact_mode_inverts_bit_for_bit_and_gives_identical_gradients(autocast):
    """64 unnormalised blocks, whose activations grow until float32 inverses are off by
    far more than their inputs: in exact mode, every input is rebuilt bit for bit and
    the reversible gradients are those of ordinary backprop, exactly."""
    from mmrev.reversible.diagnostics import reconstruction_errors
    x = torch.randn(16, 4, 8)
    with torch.autocast('cpu', dtype=autocast or torch.bfloat16, enabled=bool(autocast)):
        assert reconstruction_errors(exact_stack(64, None), x, x)[1] > 1
        assert reconstruction_errors(exact_stack(64), x, x) == (0., 0.)

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = exact_stack(64)

        def forward(self, x):
            return torch.cat(self.layers(x, x), -1)

    model = Model()
    expected = backprop_gradients(model, x, reversible=False, seed=1, autocast=autocast)
    actual = backprop_gradients(model, x, reversible=True, seed=1, autocast=autocast)
    assert expected.keys() == actual.keys()
    assert all(torch.equal(actual[name], expected[name]) for name in expected)
    assert model(x).dtype == x.dtype


def test_exact_mode_streams_are_fixed_point():
    stack = exact_stack(2, exact_bits=10).eval()
    x = torch.randn(3, 8)
    records = []
    with torch.no_grad():
        (y1, y2), = stack.run_blocks(*stack.input_streams(x, x), [1], records)
    assert y1.dtype == torch.float64
    assert torch.equal(y1 * 2 ** 10, (y1 * 2 ** 10).round())
    with pytest.raises(ValueError, match='additive coupling'):
        ReversibleSequence([ReversibleBlock(nn.Identity(), nn.Identity(),
                                            coupling=momentum(0.5))], exact_bits=8)
    with pytest.raises(ValueError, match='exact_bits must be in'):
        ReversibleSequence([], exact_bits=60)


def test_recompute_chain_with_regenerate_keeps_only_its_inputs():
    """A part made with regenerate=True is not kept by the recomputed parts that take its
    output: in backward it reruns once for all of them (its dropout replayed; chunked as
    asked), so the chain keeps only its input, with the gradients of ordinary backprop."""
    torch.manual_seed(0)
    first = nn.Sequential(nn.Linear(8, 8), nn.Dropout(0.3))
    second = nn.Sequential(nn.Linear(8, 8), nn.GELU())  # token-wise: may rerun in chunks
    last = nn.Sequential(nn.Linear(8, 8), nn.Dropout(0.3))
    model = nn.ModuleList([first, second, last])
    runs = []
    first.register_forward_hook(lambda *_: runs.append('first'))

    def chain(x, run, regenerate):
        a = run(first, x, regenerate=regenerate)
        b = run(second, a, regenerate=regenerate, chunks=2)
        return run(lambda b, a: last(b) * a, b, a, params=list(last.parameters()))

    x = torch.randn(4, 6, 8)
    grads, kept = {}, {}
    for name, run, regenerate in [('ordinary', call, False), ('kept', recompute, False),
                                  ('regenerated', recompute, True)]:
        kept[name] = saved_tensor_bytes(model, partial(chain, x, run, regenerate))
        torch.manual_seed(1)
        inputs = x.clone().requires_grad_()
        out = chain(inputs, run, regenerate)
        runs.clear()
        out.square().sum().backward()
        assert runs == {'ordinary': [], 'kept': ['first'],
                        'regenerated': ['first', 'first']}[name]  # reruns in backward
        grads[name] = [inputs.grad] + [p.grad for p in model.parameters()]
        model.zero_grad(set_to_none=True)
    for name in ('kept', 'regenerated'):
        for actual, expected in zip(grads[name], grads['ordinary']):
            torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6)
    assert kept['regenerated'] == x.nbytes  # the chain's input alone
    assert kept['kept'] == 3 * x.nbytes  # also the outputs of first and second
