"""Reversible backprop combined with PyTorch features: module hooks, running statistics,
partial, repeated and double backward, empty batches, tracing, export, torch.compile and
other devices. Each gives the gradients of ordinary backprop or an error that names the
feature and the way out."""
import copy
import io
from functools import partial

import pytest
import torch
import torch._inductor.config
from torch import nn

from mmrev.models import RevMViT, RevViT
from mmrev.reversible import ForwardState, ReversibleBlock, ReversibleSequence, recompute
from mmrev.reversible.diagnostics import reconstruction_errors
from mmrev.testing import (
    backprop_gradients,
    gradient_errors,
    projection_loss,
    set_reversible,
)

TINY = dict(embed_dims=32, num_layers=4, num_heads=2, feedforward_channels=64, patch_size=8)


def tiny_revvit(**kwargs):
    return RevViT(arch=TINY, img_size=32, **kwargs)


def tiny_revmvit(**kwargs):
    arch = dict(embed_dims=8, num_layers=3, num_heads=1, transition_layers=[1])
    return RevMViT(arch=arch, img_size=32, **kwargs)


def assert_same_gradients(model, x, loss_fn=projection_loss, tol=1e-5):
    expected = backprop_gradients(model, x, reversible=False, loss_fn=loss_fn)
    actual = backprop_gradients(model, x, reversible=True, loss_fn=loss_fn)
    errors = gradient_errors(actual, expected)
    assert max(errors.values()) <= tol, errors


class Stack(nn.Module):
    """Two-stream toy stack on (N, 8) features."""

    def __init__(self, f, g, depth=2):
        super().__init__()
        self.layers = ReversibleSequence([
            ReversibleBlock(copy.deepcopy(f), copy.deepcopy(g), drop_path=0.2)
            for _ in range(depth)])

    def forward(self, x):
        return torch.cat(self.layers(x, x), -1)


# module hooks ---------------------------------------------------------------------------

@pytest.mark.parametrize('hook', [
    lambda block: block.register_forward_hook(lambda m, args, out: (2 * out[0], out[1])),
    lambda block: block.register_forward_pre_hook(lambda m, args: (args[0] / 2, *args[1:])),
], ids=['forward hook changes the output', 'pre-hook changes the input'])
def test_hooks_that_change_a_block_act_as_under_ordinary_backprop(hook):
    model = tiny_revvit(drop_rate=0.1, drop_path_rate=0.2).train()
    hook(model.layers[1])
    x = torch.randn(2, 3, 32, 32)
    with pytest.warns(UserWarning, match=r'Module hooks act on reversible blocks \[1\]'):
        assert_same_gradients(model, x)


def test_full_backward_hook_on_a_block_fires_as_under_ordinary_backprop():
    model = tiny_revvit().train()
    calls = []
    model.layers[2].register_full_backward_hook(lambda m, grad_in, grad_out: calls.append(
        grad_out[0].clone()))
    x = torch.randn(2, 3, 32, 32)
    with pytest.warns(UserWarning, match='ordinary backprop'):
        assert_same_gradients(model, x)
    assert len(calls) == 2
    torch.testing.assert_close(calls[1], calls[0], rtol=1e-5, atol=1e-6)


def test_hooks_keeping_sub_module_outputs_see_them_once_and_unchanged():
    """Hooks that keep (not clone) outputs of the branches and their layers, the
    tensors the engine's in-place sums and GELU would write into: each fires once per
    forward, and what it keeps is never overwritten, in training and in eval."""
    model = tiny_revvit(drop_rate=0.1).train()
    kept = {}

    def keep(name, module, args, out):
        kept.setdefault(name, []).append((out, out.detach().clone()))

    names = ['f', 'f.attn.proj', 'g', 'g.mlp', 'g.mlp.fc1']
    for name in names:
        model.layers[1].get_submodule(name).register_forward_hook(partial(keep, name))
    x = torch.randn(2, 3, 32, 32)
    with pytest.warns(UserWarning, match='ordinary backprop'):
        backprop_gradients(model, x, reversible=True)
    assert {name: len(outs) for name, outs in kept.items()} == dict.fromkeys(names, 1)
    with torch.no_grad():
        model.eval()(x)
    for name in names:
        for out, copy_at_hook in kept[name]:
            assert torch.equal(out, copy_at_hook), name


# running statistics ---------------------------------------------------------------------

def test_batchnorm_in_a_branch_is_updated_once_per_step():
    torch.manual_seed(0)
    model = Stack(nn.Sequential(nn.Linear(8, 8, bias=False), nn.BatchNorm1d(8), nn.Tanh()),
                  nn.Linear(8, 8)).train()
    x = torch.randn(16, 8)
    twin = copy.deepcopy(model)
    expected = backprop_gradients(model, x, reversible=False)
    actual = backprop_gradients(twin, x, reversible=True)
    assert max(gradient_errors(actual, expected).values()) <= 1e-5
    for (name, ours), theirs in zip(twin.named_buffers(), model.buffers()):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-7, msg=name)
    assert all(bn.num_batches_tracked == 1 for bn in twin.modules()
               if isinstance(bn, nn.BatchNorm1d))
    before = [b.clone() for b in twin.buffers()]
    reconstruction_errors(twin.layers, x, x)  # a measurement: no update
    assert all(torch.equal(a, b) for a, b in zip(before, twin.buffers()))


# backward variants ----------------------------------------------------------------------

def test_frozen_branch_on_a_stream_without_grad_on_both_paths():
    """F frozen and X2 without grad, X1 with grad: F(X2) needs no graph, the sum does."""
    torch.manual_seed(0)
    stack = ReversibleSequence([ReversibleBlock(nn.Linear(8, 8).requires_grad_(False),
                                                nn.Linear(8, 8))]).train()
    x1, x2 = torch.randn(4, 8, requires_grad=True), torch.randn(4, 8)
    grads = []
    for reversible in (False, True):
        stack.reversible = reversible
        grads.append(torch.autograd.grad(projection_loss(stack(x1, x2)),
                                         [x1, *stack[0].g.parameters()]))
    for ordinary, ours in zip(*grads):
        torch.testing.assert_close(ours, ordinary)


def test_branch_that_ignores_its_input():
    class Constant(nn.Module):
        def __init__(self):
            super().__init__()
            self.value = nn.Parameter(torch.randn(8))

        def forward(self, x):
            return self.value.expand_as(x)

    assert_same_gradients(Stack(Constant(), nn.Linear(8, 8)).train(), torch.randn(4, 8))


@pytest.mark.parametrize('make', [tiny_revvit, tiny_revmvit])
def test_double_backward_needs_ordinary_backprop(make):
    model = make(reversible=False).train()
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    (grad, ) = torch.autograd.grad(projection_loss(model(x)), x, create_graph=True)
    assert grad.requires_grad
    set_reversible(model, True)
    with pytest.raises(RuntimeError, match=r'double backward \(create_graph=True.*'
                                           r'set reversible=False'):
        torch.autograd.grad(projection_loss(model(x)), x, create_graph=True)


def test_double_backward_through_recompute_is_refused():
    layer = nn.Linear(4, 4)
    x = torch.randn(2, 4, requires_grad=True)
    with pytest.raises(RuntimeError, match='double backward'):
        torch.autograd.grad(recompute(layer, x).sum(), x, create_graph=True)


def test_backward_from_an_intermediate_output_alone_and_twice():
    model = tiny_revvit(out_indices=(1, 3), drop_path_rate=0.2).train()
    x = torch.randn(2, 3, 32, 32)
    assert_same_gradients(model, x, loss_fn=lambda outs: projection_loss(outs[0]))

    def twice(reversible):
        torch.manual_seed(0)
        model.layers.reversible = reversible
        model.zero_grad()
        outs = model(x)
        projection_loss(outs[0]).backward(retain_graph=True)
        projection_loss(outs[1]).backward(retain_graph=True)
        projection_loss(outs[1]).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    errors = gradient_errors(twice(True), twice(False))
    assert max(errors.values()) <= 1e-5, errors


@pytest.mark.parametrize('make', [tiny_revvit, tiny_revmvit])
@pytest.mark.parametrize('reversible', [True, False])
def test_empty_batch(make, reversible):
    model = make(reversible=reversible).train()
    x = torch.randn(0, 3, 32, 32, requires_grad=True)
    out = model(x)[-1]
    assert out.shape[0] == 0
    out.sum().backward()
    assert x.grad.shape == x.shape


# tracing, export, compile ---------------------------------------------------------------

def test_jit_trace_of_a_training_model_takes_the_ordinary_path():
    model = tiny_revvit().train()
    x = torch.randn(2, 3, 32, 32)
    for _ in range(2):  # a second trace in the same process works too
        traced = torch.jit.trace(model, x, check_trace=False)
        torch.testing.assert_close(traced(x), model(x))


def test_model_complexity_of_a_training_model():
    from mmengine.analysis import get_model_complexity_info
    info = get_model_complexity_info(tiny_revvit().train(), input_shape=(3, 32, 32))
    assert info['flops'] > 0


@pytest.mark.parametrize('make', [tiny_revvit, tiny_revmvit])
def test_torch_export_and_onnx_of_an_eval_model(make):
    pytest.importorskip('onnxscript', reason='the test extras install onnx/onnxscript')
    import onnxruntime
    model = make().eval()
    x = torch.randn(2, 3, 32, 32)
    expected = model(x)[-1]
    exported = torch.export.export(model, (x, ))
    torch.testing.assert_close(exported.module()(x)[-1], expected)
    buffer = io.BytesIO()
    torch.onnx.export(model, (x, ), buffer, dynamo=True, external_data=False)
    session = onnxruntime.InferenceSession(buffer.getvalue())
    outputs = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    torch.testing.assert_close(torch.from_numpy(outputs[-1]), expected, rtol=1e-4,
                               atol=1e-5)


@pytest.mark.parametrize('make', [tiny_revvit, tiny_revmvit])
def test_compiled_backbone_breaks_its_graph_once_and_only_in_reversible_training(make):
    """Embedding compiled, the rest (stacks, stage transitions and output norms, which
    rerun in backward) one uncompiled call; nothing breaks the graph otherwise."""
    x = torch.randn(2, 3, 32, 32)
    for training, reversible, breaks in [(True, True, 1), (True, False, 0),
                                         (False, True, 0)]:
        model = make(reversible=reversible).train(training)
        torch._dynamo.reset()
        def loss(x, model=model):
            return model(x)[-1].square().mean()

        explanation = torch._dynamo.explain(loss)(x)
        assert explanation.graph_break_count == breaks, explanation.break_reasons


@torch._inductor.config.patch(fallback_random=True)
def test_compiled_training_with_dropout_matches_eager():
    """The stacks run uncompiled (a graph break), so their reruns replay the random
    numbers their forward drew; with inductor's eager-RNG fallback for the compiled
    rest, compiled training gives the gradients of eager training."""
    model = tiny_revvit(drop_rate=0.3, drop_path_rate=0.2).train()
    compiled = torch.compile(model)
    x = torch.randn(2, 3, 32, 32)
    expected = backprop_gradients(model, x, reversible=True, seed=3)
    actual = backprop_gradients(compiled, x, reversible=True, seed=3)
    actual = {name.removeprefix('_orig_mod.'): grad for name, grad in actual.items()}
    errors = gradient_errors(actual, expected)
    assert max(errors.values()) <= 1e-5, errors


@torch._inductor.config.patch(fallback_random=True)
def test_mmengine_compile_trains_as_eager():
    """mmengine's ``compile=True``: its runner compiles the model's ``train_step``
    (forward, loss, backward and optimizer step); one SGD step of a classifier with
    dropout and drop path moves every parameter as the eager step does."""
    from mmengine.config import Config
    from mmengine.logging import MMLogger
    from mmengine.optim import OptimWrapper
    from mmengine.runner import Runner
    from mmpretrain.models import ImageClassifier
    from mmpretrain.structures import DataSample
    generator = torch.Generator().manual_seed(0)
    batch = dict(inputs=torch.randn(2, 3, 32, 32, generator=generator),
                 data_samples=[DataSample().set_gt_label(label) for label in (1, 3)])

    def step(compile: bool) -> dict:
        torch.manual_seed(0)
        model = ImageClassifier(
            backbone=dict(type='mmrev.RevViT', arch=TINY, img_size=32, drop_rate=0.3,
                          drop_path_rate=0.2),
            head=dict(type='LinearClsHead', num_classes=4, in_channels=64)).train()
        before = {name: p.detach().clone() for name, p in model.named_parameters()}
        if compile:  # the runner's own code for cfg.compile=True, on this model
            runner = Runner.__new__(Runner)
            runner.cfg, runner.model = Config(dict(compile=True)), model
            runner.logger = MMLogger.get_instance('test_mmengine_compile')
            runner._maybe_compile('train_step')
            assert hasattr(model.train_step, '_torchdynamo_orig_callable')
        torch.manual_seed(1)
        model.train_step(batch, OptimWrapper(torch.optim.SGD(model.parameters(), lr=1.)))
        return {name: before[name] - p.detach() for name, p in model.named_parameters()}

    errors = gradient_errors(step(compile=True), step(compile=False))
    assert max(errors.values()) <= 1e-5, errors


# devices --------------------------------------------------------------------------------

def test_device_without_rng_state_is_refused():
    with pytest.raises(RuntimeError, match='torch.meta has no get_rng_state.*'
                                           'reversible=False'):
        ForwardState(torch.empty(2, device='meta'))
