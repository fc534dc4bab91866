from functools import partial

import pytest
import torch
from mmpretrain.models import ImageClassifier
from mmpretrain.registry import MODELS as MMPRETRAIN_MODELS

from mmrev.models import RevViT
from mmrev.models.layers import Mlp
from mmrev.testing import (
    autocast_gradient_errors,
    backprop_gradients,
    gradient_errors,
    saved_tensor_bytes,
)

TINY = dict(embed_dims=32, num_layers=4, num_heads=2, feedforward_channels=64, patch_size=8)


def tiny(num_layers=4, **kwargs):
    kwargs.setdefault('img_size', 32)
    return RevViT(arch=dict(TINY, num_layers=num_layers), **kwargs)


def assert_same_gradients(model, x, seed=0, tol=1e-5):
    expected = backprop_gradients(model, x, reversible=False, seed=seed)
    actual = backprop_gradients(model, x, reversible=True, seed=seed)
    errors = gradient_errors(actual, expected)
    assert max(errors.values()) <= tol, errors
    return actual


def test_mlp_in_place_activation_without_graph_keeps_input_and_output():
    mlp, x = Mlp(8, 16), torch.randn(3, 8)
    expected = mlp.fc2(torch.nn.functional.gelu(mlp.fc1(x)))
    with torch.no_grad():
        x_before = x.clone()
        assert torch.allclose(mlp(x), expected) and torch.equal(x, x_before)
    assert torch.allclose(mlp(x.requires_grad_()), expected)


@pytest.mark.parametrize('depth', [1, 4, 12])
def test_gradients_match_ordinary_backprop(depth):
    torch.manual_seed(depth)
    model = tiny(depth, drop_rate=0.1, drop_path_rate=0.2)
    model.init_weights()
    model.train()
    grads = assert_same_gradients(model, torch.randn(2, 3, 32, 32))
    assert set(grads) == {n for n, _ in model.named_parameters()} | {'input'}


def test_chunked_mlp_recompute_matches_ordinary_backprop():
    torch.manual_seed(0)
    model = tiny(3, drop_path_rate=0.3, g_chunks=3).train()
    assert_same_gradients(model, torch.randn(2, 3, 48, 32))
    with pytest.raises(ValueError, match='drop_rate'):
        tiny(g_chunks=2, drop_rate=0.1)


def train_two_steps(seed):
    torch.manual_seed(seed)
    model = tiny(drop_rate=0.1, drop_path_rate=0.2).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(4, 3, 32, 32)
    losses, grads = [], []
    for _ in range(2):
        optimizer.zero_grad()
        loss = model(x)[0].pow(2).mean()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        grads.append([p.grad.clone() for p in model.parameters()])
    return losses, grads


def test_same_seed_same_training():
    losses_a, grads_a = train_two_steps(3)
    losses_b, grads_b = train_two_steps(3)
    assert losses_a == losses_b
    for step_a, step_b in zip(grads_a, grads_b):
        for a, b in zip(step_a, step_b):
            assert torch.equal(a, b)


def test_rng_untouched_by_eval_and_advanced_as_ordinary_in_training():
    model = tiny(drop_rate=0.1, drop_path_rate=0.2)
    x = torch.randn(2, 3, 32, 32)
    state = torch.get_rng_state()
    model.eval()(x)
    assert torch.equal(torch.get_rng_state(), state)

    model.train()
    after = {}
    for reversible in (False, True):
        model.reversible = reversible
        torch.set_rng_state(state)
        model(x)[0].sum().backward()
        after[reversible] = torch.get_rng_state()
    assert torch.equal(after[True], after[False])


@pytest.mark.parametrize('frozen_stages', [0, 2])
def test_frozen_stages_still_train_reversible_layers(frozen_stages):
    torch.manual_seed(0)
    model = tiny(drop_path_rate=0.1, frozen_stages=frozen_stages).train()
    assert not model.patch_embed.projection.weight.requires_grad
    grads = assert_same_gradients(model, torch.randn(2, 3, 32, 32))
    trained_layers = {int(n.split('.')[1]) for n in grads if n.startswith('layers.')}
    assert trained_layers == set(range(frozen_stages, 4))
    assert [b.training for b in model.layers] == [i >= frozen_stages for i in range(4)]


def test_bf16_autocast_backward_outside_context():
    torch.manual_seed(0)
    model = tiny(drop_path_rate=0.1).train()
    error, amp_noise = autocast_gradient_errors(model, torch.randn(2, 3, 32, 32))
    assert error <= amp_noise


def test_activation_memory_constant_in_depth():
    x = torch.randn(2, 3, 32, 32)
    for reversible in (True, False):
        models = [tiny(d, reversible=reversible).train() for d in (2, 8)]
        shallow, deep = (saved_tensor_bytes(m, partial(m, x)) for m in models)
        if reversible:
            assert shallow == deep
        else:
            assert deep > shallow * 2


def test_output_types_and_other_sizes():
    x = torch.randn(2, 3, 48, 64)
    for out_type, shape in [('avg_featmap', (2, 64)), ('featmap', (2, 64, 6, 8)),
                            ('raw', (2, 48, 64))]:
        assert tiny(out_type=out_type)(x)[0].shape == shape
    with pytest.raises(ValueError, match='36x32 is not a multiple of the patch size 8'):
        tiny()(torch.randn(1, 3, 36, 32))
    with pytest.raises(ValueError, match='out_type'):
        tiny(out_type='cls_token')
    with pytest.raises(ValueError, match='arch'):
        RevViT(arch='huge')
    with pytest.raises(ValueError, match='keys'):
        RevViT(arch=dict(embed_dims=8))


def test_loads_checkpoint_of_another_resolution():
    low = tiny(img_size=32).eval()
    high = tiny(img_size=64).eval()
    high.load_state_dict(low.state_dict())
    assert high.pos_embed.shape == (1, 64, 32)
    x = torch.randn(1, 3, 64, 64)
    # both interpolate the same 4x4 embedding to 8x8
    torch.testing.assert_close(high(x)[0], low(x)[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('arch,params', [('small', 22_434_664), ('base', 87_335_656)])
def test_official_parameter_counts(arch, params):
    model = MMPRETRAIN_MODELS.build(dict(
        type='ImageClassifier',
        backbone=dict(type='mmrev.RevViT', arch=arch),
        head=dict(type='LinearClsHead', num_classes=1000,
                  in_channels=2 * RevViT.arch_zoo[arch]['embed_dims'])))
    assert isinstance(model, ImageClassifier)
    assert sum(p.numel() for p in model.parameters()) == params


@pytest.mark.parametrize('out_indices, built', [((1, 3), 4), ((-3, -1), 4), (2, 3), ((0, 1), 2)])
def test_out_indices_gradients_match_ordinary_backprop(out_indices, built):
    # the gradient of each intermediate output enters the backward at its block
    torch.manual_seed(0)
    model = tiny(4, drop_rate=0.1, drop_path_rate=0.2, out_indices=out_indices,
                 out_type='featmap').train()
    x = torch.randn(2, 3, 32, 32)
    outs = model(x)
    assert len(outs) == (1 if isinstance(out_indices, int) else 2)
    assert all(out.shape == (2, 64, 4, 4) for out in outs)
    assert len(model.layers) == built and hasattr(model, 'norm') == (built == 4)
    grads = assert_same_gradients(model, x)
    assert set(grads) == {n for n, _ in model.named_parameters()} | {'input'}


def test_out_indices_match_the_full_model_and_load_its_weights():
    torch.manual_seed(0)
    full = tiny(4, out_type='raw', out_indices=(0, 1, 2, 3)).eval()
    early = tiny(4, out_type='raw', out_indices=1).eval()
    early.load_state_dict(full.state_dict())  # layers 2, 3 and the final norm skipped
    x = torch.randn(1, 3, 32, 32)
    outs = full(x)
    torch.testing.assert_close(early(x)[0], outs[1], rtol=0, atol=0)
    streams = full.layers(full.embed(x), full.embed(x))
    torch.testing.assert_close(outs[-1], full.norm(torch.cat(streams, -1)).flatten(1, 2))
    with pytest.raises(ValueError, match='out_indices'):
        tiny(4, out_indices=4)


def test_out_indices_keep_only_their_outputs_whatever_the_depth():
    x = torch.randn(2, 3, 32, 32)
    models = [tiny(d, out_indices=(0, -1)).train() for d in (3, 9)]
    shallow, deep = (saved_tensor_bytes(m, partial(m, x)) for m in models)
    assert shallow == deep


def test_exact_mode_gradients_equal_ordinary_backprop():
    model = tiny(drop_rate=0.1, drop_path_rate=0.2, exact_bits=24).train()
    x = torch.randn(2, 3, 32, 32)
    expected = backprop_gradients(model, x, reversible=False, seed=2)
    actual = backprop_gradients(model, x, reversible=True, seed=2)
    assert all(torch.equal(actual[name], expected[name]) for name in expected)
    assert model(x)[0].dtype == torch.float32
