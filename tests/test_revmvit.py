import json
import re
from functools import partial

import pytest
import torch
from mmpretrain.registry import MODELS as MMPRETRAIN_MODELS

from mmrev.models import RevMViT
from mmrev.models.backbones.revmvit import StageTransition
from mmrev.reversible.diagnostics import reconstruction_errors
from mmrev.testing import (
    autocast_gradient_errors,
    backprop_gradients,
    gradient_errors,
    projection_loss,
    saved_tensor_bytes,
)

from conftest import SLOWFAST_FIXTURES

MANIFEST = SLOWFAST_FIXTURES / 'REV_MVIT_B_16_CONV_keys.txt'
FUSIONS = ['concat_linear_2', 'concat_linear_0.5', 'concat', 'avg', 'max', 'min', 'add']


def tiny(img_size=32, **kwargs):
    """Two transitions (stride 16); ``arch_*`` keyword arguments override the arch."""
    arch = dict(embed_dims=8, num_layers=5, num_heads=1, transition_layers=[1, 3],
                mlp_ratio=1.0)
    arch.update({k[5:]: kwargs.pop(k) for k in list(kwargs) if k.startswith('arch_')})
    return RevMViT(arch=arch, img_size=img_size, **kwargs)


def four_stages(**kwargs):
    """Three transitions (stride 32, like ``base``)."""
    return tiny(img_size=64, arch_num_layers=7, arch_transition_layers=[1, 3, 5], **kwargs)


def is_softmax_invariant(name):
    """k's norm bias shifts every key alike, which the softmax ignores: its exact
    gradient is 0 and the computed one rounding noise, so no relative error applies."""
    return name.endswith('.norm_k.bias')


def assert_same_gradients(model, x, tol=1e-5):
    expected = backprop_gradients(model, x, reversible=False)
    actual = backprop_gradients(model, x, reversible=True)
    errors = gradient_errors(actual, expected)
    relative = {k: v for k, v in errors.items() if not is_softmax_invariant(k)}
    assert max(relative.values()) <= tol, relative
    scale = max(g.abs().max() for g in expected.values())
    for name in set(errors) - set(relative):
        assert (actual[name] - expected[name]).abs().max() <= tol * scale, name
    return actual


@pytest.mark.parametrize('fusion,res_path', [(f, 'conv') for f in FUSIONS] + [
    ('concat_linear_2', 'max'), ('avg', 'max')])
def test_gradients_match_ordinary_backprop(fusion, res_path):
    torch.manual_seed(0)
    model = tiny(arch_pre_q_fusion=fusion, arch_res_path=res_path, drop_path_rate=0.3)
    model.init_weights()
    model.train()
    grads = assert_same_gradients(model, torch.randn(2, 3, 32, 32))
    assert set(grads) == {n for n, _ in model.named_parameters()} | {'input'}
    # the residual projection exists only where the fused width differs from the output
    has_res_proj = model.stages[1].transition.res_proj is not None
    assert has_res_proj == (fusion in ('avg', 'max', 'min', 'add'))


@pytest.mark.parametrize('keep_transition_maps', [False, True])
def test_gradients_with_per_transition_knobs_and_residual_projection(keep_transition_maps):
    torch.manual_seed(0)
    model = four_stages(arch_dim_mul=[1.5, 2., 1.], arch_head_mul=[2, 1, 2],
                        arch_q_stride=2, arch_kv_stride=8, drop_path_rate=0.2,
                        keep_transition_maps=keep_transition_maps).train()
    assert model.stage_channels == [16, 24, 48, 48]
    assert [s.transition.res_proj is not None for s in model.stages[1:]] == [True, False, True]
    assert_same_gradients(model, torch.randn(2, 3, 64, 64))


def test_multiscale_featmaps_same_gradients_and_shapes():
    torch.manual_seed(0)
    model = four_stages(out_type='featmap', out_scales=(0, 1, 2, 3),
                        drop_path_rate=0.2).train()
    x = torch.randn(2, 3, 64, 96)
    shapes = [tuple(out.shape) for out in model(x)]
    assert shapes == [(2, 16, 16, 24), (2, 32, 8, 12), (2, 64, 4, 6), (2, 128, 2, 3)]
    grads = assert_same_gradients(model, x)
    assert {'norm0.weight', 'norm3.weight'} <= set(grads)


@pytest.mark.parametrize('size', [(64, 64), (64, 96), (128, 32)])
def test_output_types_for_other_sizes(size):
    x = torch.randn(1, 3, *size)
    h, w = size[0] // 32, size[1] // 32
    for out_type, shape in [('avg_featmap', (1, 128)), ('featmap', (1, 128, h, w)),
                            ('raw', (1, h * w, 128))]:
        assert four_stages(out_type=out_type)(x)[0].shape == shape
    assert [o.shape for o in four_stages(out_scales=[-1, 1])(x)] == [(1, 32), (1, 128)]


def test_bad_inputs_and_settings_raise():
    with pytest.raises(ValueError, match='48x64 is not a multiple of 32'):
        four_stages()(torch.randn(1, 3, 48, 64))
    with pytest.raises(ValueError, match='pre_q_fusion|fusion mode'):
        tiny(arch_pre_q_fusion='mean')
    with pytest.raises(ValueError, match='res_path'):
        tiny(arch_res_path='avg')
    for transitions in ([0, 3], [1, 2], [1, 4]):
        with pytest.raises(ValueError, match='transition_layers'):
            tiny(arch_transition_layers=transitions)
    with pytest.raises(ValueError, match='one value per transition'):
        tiny(arch_dim_mul=[2., 2., 2.])
    with pytest.raises(ValueError, match='keys'):
        RevMViT(arch=dict(embed_dims=8, num_layers=3, num_heads=1, transition_layers=[1],
                          depth=3))
    with pytest.raises(ValueError, match='arch'):
        RevMViT(arch='huge')
    with pytest.raises(ValueError, match='out_scales'):
        tiny(out_scales=3)
    with pytest.raises(ValueError, match='out_type'):
        tiny(out_type='cls_token')


def test_transition_drops_whole_block_output():
    torch.manual_seed(0)
    transition = StageTransition(16, 16, 2, mlp_ratio=1., qkv_bias=True, pool_kernel=3,
                                 q_stride=2, kv_stride=1, fusion='concat_linear_2',
                                 res_path='conv', drop_path_rate=0.5,
                                 norm_cfg=dict(type='LN', eps=1e-6))
    x1, x2 = torch.randn(2, 16, 4, 4, 8).unbind(0)
    kept = transition.eval()(x1, x2) / 0.5
    dropped = transition.train()(x1, x2)
    is_zero = dropped.flatten(1).eq(0).all(1)
    assert 0 < is_zero.sum() < 16  # some samples dropped entirely, residual included
    torch.testing.assert_close(dropped[~is_zero], kept[~is_zero])


@pytest.mark.parametrize('frozen_stages', [0, 1])
def test_frozen_stages_still_train_reversible_layers(frozen_stages):
    torch.manual_seed(0)
    model = tiny(drop_path_rate=0.1, frozen_stages=frozen_stages).train()
    assert not model.patch_embed.projection.weight.requires_grad
    grads = assert_same_gradients(model, torch.randn(2, 3, 32, 32))
    trained = {int(n.split('.')[1]) for n in grads if n.startswith('stages.')}
    assert trained == set(range(frozen_stages, 3))
    assert [s.training for s in model.stages] == [i >= frozen_stages for i in range(3)]


def test_bf16_autocast_backward_outside_context():
    torch.manual_seed(0)
    model = tiny(drop_path_rate=0.1).train()
    error, amp_noise = autocast_gradient_errors(model, torch.randn(2, 3, 32, 32))
    assert error <= amp_noise


def test_rng_untouched_by_eval():
    model = tiny(drop_path_rate=0.2).eval()
    x = torch.randn(2, 3, 32, 32)
    state = torch.get_rng_state()
    model(x)
    assert torch.equal(torch.get_rng_state(), state)


def test_loads_checkpoint_of_another_resolution():
    low, high = tiny(img_size=32).eval(), tiny(img_size=64).eval()
    high.load_state_dict(low.state_dict())
    assert high.pos_embed.shape == (1, 256, 8)
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(high(x)[0], low(x)[0], rtol=1e-5, atol=1e-5)


def build_base_classifier():
    return MMPRETRAIN_MODELS.build(dict(
        type='ImageClassifier', backbone=dict(type='mmrev.RevMViT', arch='base'),
        head=dict(type='LinearClsHead', num_classes=1000, in_channels=1536)))


def test_official_parameter_count():
    model = build_base_classifier()
    assert sum(p.numel() for p in model.parameters()) == 39_689_320


def slowfast_to_mmrev(key, shape, transitions=(1, 3, 14)):
    """The renaming and reshaping rules of the revmvit module docstring."""
    key = re.sub(r'^patch_embed\.proj\.', 'patch_embed.projection.', key)
    key = re.sub(r'^norm\.', f'norm{len(transitions)}.', key)
    key = re.sub(r'^head\.projection\.', 'head.fc.', key)
    match = re.fullmatch(r'rev_backbone\.layers\.(\d+)\.(F|G|pre_q_fuse|res_proj)(\..*)', key)
    if match:
        i, part, rest = int(match.group(1)), match.group(2), match.group(3)
        stage = sum(t <= i for t in transitions)
        if stage and i == transitions[stage - 1]:
            prefix = f'stages.{stage}.transition.'
        else:
            prefix = f'stages.{stage}.blocks.{i - (transitions[stage - 1] + 1 if stage else 0)}.'
        part = {'F': 'f', 'G': 'g'}.get(part, part)
        key = prefix + part + rest.replace('.fuse_fn.', '.mlp.')
        if re.search(r'\.attn\.pool_[qkv]\.weight$', key):
            shape = shape[:2] + shape[3:]
    key = key if key.startswith('head.') else 'backbone.' + key
    return key, shape


def test_official_manifest_maps_onto_state_dict():
    with open(MANIFEST) as f:
        rows = [line.rstrip('\n').split('\t') for line in f]
    assert rows[-1] == ['total_params', '39689320']
    mapped = dict(slowfast_to_mmrev(key, json.loads(shape)) for key, shape, _ in rows[:-1])
    assert len(mapped) == len(rows) - 1 == 380
    ours = {k: list(v.shape) for k, v in build_base_classifier().state_dict().items()}
    assert mapped == ours


def test_activation_memory_constant_in_stack_depth():
    x = torch.randn(2, 3, 32, 32)
    for reversible in (True, False):
        models = [tiny(arch_num_layers=n, reversible=reversible).train() for n in (5, 11)]
        shallow, deep = (saved_tensor_bytes(m, partial(m, x)) for m in models)
        assert shallow == deep if reversible else deep > shallow


@pytest.mark.parametrize('fusion', ['concat_linear_2', 'avg'])
def test_reversible_training_keeps_the_stack_outputs_and_one_map_per_transition(fusion):
    # The transitions' parts regenerate in backward what they take, but for the MLP's
    # input, a map of the transition's output shape; the output norms rerun from the
    # streams. Nothing at a transition's input resolution is kept, whatever the fusion
    # (avg: with a residual projection) and the outputs.
    model = four_stages(arch_pre_q_fusion=fusion, out_type='featmap',
                        out_scales=(0, 1, 2, 3)).train()
    streams = []
    for stage in model.stages:
        stage.blocks.register_forward_hook(lambda stack, args, out: streams.append(out))
    x = torch.randn(2, 3, 64, 64)
    kept = saved_tensor_bytes(model, lambda: model(x))
    transition_maps = [y1 for y1, _ in streams[1:]]  # the shape of each transition's output
    assert kept == sum(t.nbytes for t in [x, *sum(streams, ()), *transition_maps])
    for stage in model.stages[1:]:
        stage.transition.keep_maps = True  # keep_transition_maps=True
    assert saved_tensor_bytes(model, lambda: model(x)) > 1.5 * kept
    model.reversible = False
    assert saved_tensor_bytes(model, lambda: model(x)) > 5 * kept


def test_chunked_recompute_matches_ordinary_backprop():
    torch.manual_seed(0)
    model = four_stages(g_chunks=2, drop_path_rate=0.2).train()
    assert model.stages[0].blocks[0].g_chunks == 2
    assert model.stages[1].transition.fusion_chunks == 2
    assert model.stages[2].transition.fusion_chunks == 1
    assert_same_gradients(model, torch.randn(2, 3, 64, 64))


def test_rng_advanced_in_training_as_with_ordinary_backprop():
    model = tiny(drop_path_rate=0.3).train()
    x = torch.randn(2, 3, 32, 32)
    states = []
    for reversible in (True, False):
        model.reversible = reversible
        torch.manual_seed(5)
        projection_loss(model(x)).backward()
        states.append(torch.get_rng_state())
    assert torch.equal(*states)


def test_stages_after_the_last_output_are_not_built():
    torch.manual_seed(0)
    full = four_stages(out_scales=(1, 3)).eval()
    early = four_stages(out_scales=(1, )).eval()
    assert len(early.stages) == 2 and not hasattr(early, 'norm3')
    # a full model's weights load strictly: those of the stages not built are skipped
    early.load_state_dict(full.state_dict())
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(early(x)[0], full(x)[0], rtol=0, atol=0)
    assert early(torch.randn(1, 3, 16, 24))[0].shape == (1, 32)  # stride 8, not 32


def test_reconstruction_check_under_autocast_measures_what_training_runs():
    # The transitions hand bf16 maps to the stacks under autocast; training promotes
    # them to float32 streams, and the check must measure that, not bf16 streams.
    torch.manual_seed(0)
    model = tiny(drop_path_rate=0.1).train()
    inputs = {}
    model.stages[1].blocks.register_forward_hook(
        lambda stack, args, out: inputs.setdefault('streams', args))
    with torch.autocast('cpu', dtype=torch.bfloat16):
        model(torch.randn(2, 3, 32, 32))
        assert inputs['streams'][0].dtype == torch.bfloat16
        _, rel_err = reconstruction_errors(model.stages[1].blocks, *inputs['streams'])
    assert rel_err < 1e-5


def test_exact_mode_gradients_equal_ordinary_backprop():
    model = tiny(drop_path_rate=0.2, exact_bits=24).train()
    x = torch.randn(2, 3, 32, 32)
    expected = backprop_gradients(model, x, reversible=False, seed=2)
    actual = backprop_gradients(model, x, reversible=True, seed=2)
    assert all(torch.equal(actual[name], expected[name]) for name in expected)
