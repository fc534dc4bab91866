"""The engine alone, on toy sub-functions: coupling, inverse, reversible backprop."""
import pytest
import torch
from torch import nn

from mmrev.reversible import ReversibleBlock, ReversibleSequence
from mmrev.testing import backprop_gradients, gradient_errors


class Stack(nn.Module):
    """Both streams start from the input; the output is their concatenation."""

    def __init__(self, depth, p=0.2, g_chunks=1):
        super().__init__()
        self.layers = ReversibleSequence([
            ReversibleBlock(nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Dropout(p)),
                            nn.Sequential(nn.Linear(8, 8), nn.GELU()), g_chunks)
            for _ in range(depth)
        ])

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


def test_eval_and_no_grad_use_ordinary_path_with_same_numbers():
    model = Stack(2, p=0.)
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


def test_invalid_chunks():
    with pytest.raises(ValueError, match='g_chunks'):
        ReversibleBlock(nn.Identity(), nn.Identity(), g_chunks=0)
