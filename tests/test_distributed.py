"""Distributed and mixed-precision training with reversible backbones, through mmengine's
wrappers as the runner uses them, and ``tools/train.py`` under torchrun.

DDP (gloo, 2 processes): every case is trained in one spawn (process start-up dominates the
time); each test compares a case with one process training on the concatenated batches.
Mixed precision (bf16 autocast; fp16 with loss scaling): reversible against ordinary
backprop, measured against the mixed-precision error itself (ordinary against float32).
"""
import os
import socket
import subprocess
import sys
import warnings
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from mmengine.model import MMDistributedDataParallel
from mmengine.optim import AmpOptimWrapper, OptimWrapper, build_optim_wrapper
from mmengine.registry import DefaultScope
from mmpretrain.models import ImageClassifier
from mmpretrain.structures import DataSample
from PIL import Image

from mmrev.engine.amp import BF16OptimWrapper, amp_optim_wrapper
from mmrev.models import RevViT
from mmrev.testing import relative_error, set_reversible

BACKBONES = {
    'RevViT': dict(type='mmrev.RevViT', img_size=32, arch=dict(
        embed_dims=16, num_layers=2, num_heads=2, feedforward_channels=32, patch_size=8)),
    'RevMViT': dict(type='mmrev.RevMViT', img_size=32, arch=dict(
        embed_dims=16, num_layers=3, num_heads=1, transition_layers=(1, ))),
}
OUT_CHANNELS = {'RevViT': 32, 'RevMViT': 64}
WORLD, RANK_BATCH, ITERS, NUM_CLASSES, LR = 2, 2, 4, 4, 0.1
AMP_STEPS = 6


class Case(NamedTuple):
    backbone: str
    reversible: bool
    find_unused_parameters: bool = False
    accumulative_counts: int = 1
    wrapper: type = OptimWrapper
    frozen_stages: int = -1
    out_scales: Tuple[int, ...] = (-1, )  # RevMViT only

    @property
    def id(self) -> str:
        return (f'{self.backbone}-{"reversible" if self.reversible else "ordinary"}'
                f'-find_unused={self.find_unused_parameters}'
                f'-accumulate={self.accumulative_counts}-{self.wrapper.__name__}'
                f'-frozen_stages={self.frozen_stages}-out_scales={self.out_scales}')


DDP_CASES = [
    *(Case(backbone, reversible, find_unused, counts)
      for backbone in BACKBONES for reversible in (True, False)
      for find_unused, counts in ((False, 1), (True, 1), (False, 2))),
    *(Case(backbone, True, frozen_stages=1) for backbone in BACKBONES),
    *(Case(backbone, True, wrapper=BF16OptimWrapper) for backbone in BACKBONES),
    # an earlier stage as the output: the later ones must not be left without gradients
    Case('RevMViT', True, out_scales=(0, )),
]


def classifier(case: Case) -> ImageClassifier:
    """A tiny classifier, the same in every process (fixed seed)."""
    torch.manual_seed(0)
    backbone = dict(BACKBONES[case.backbone], frozen_stages=case.frozen_stages)
    channels = OUT_CHANNELS[case.backbone]
    if case.out_scales != (-1, ):
        backbone['out_scales'] = case.out_scales
        channels = 2 * backbone['arch']['embed_dims']  # stage 0
    model = ImageClassifier(
        backbone=backbone,
        head=dict(type='LinearClsHead', num_classes=NUM_CLASSES, in_channels=channels))
    model.init_weights()
    set_reversible(model, case.reversible)
    return model


def global_batch(index: int) -> Dict[str, torch.Tensor]:
    """Batch ``index`` of all ranks together (``WORLD * RANK_BATCH`` samples)."""
    generator = torch.Generator().manual_seed(index)
    return dict(inputs=torch.randn(WORLD * RANK_BATCH, 3, 32, 32, generator=generator),
                labels=torch.randint(NUM_CLASSES, (WORLD * RANK_BATCH, ),
                                     generator=generator))


def data_batch(inputs: torch.Tensor, labels: torch.Tensor) -> dict:
    return dict(inputs=inputs,
                data_samples=[DataSample().set_gt_label(int(y)) for y in labels])


def rank_batch(index: int, rank: int) -> dict:
    batch = global_batch(index)
    part = slice(rank * RANK_BATCH, (rank + 1) * RANK_BATCH)
    return data_batch(batch['inputs'][part], batch['labels'][part])


def concatenated_batch(indices: range) -> dict:
    batches = [global_batch(i) for i in indices]
    return data_batch(*(torch.cat([b[key] for b in batches]) for key in ('inputs', 'labels')))


def train(model, optim_wrapper: OptimWrapper, batches: List[dict]) -> List[float]:
    """Run ``train_step`` over ``batches`` as mmengine's train loop does."""
    optim_wrapper.initialize_count_status(model, 0, len(batches))
    return [model.train_step(batch, optim_wrapper)['loss'].item() for batch in batches]


def make_wrapper(case: Case, model) -> OptimWrapper:
    return case.wrapper(optimizer=torch.optim.SGD(model.parameters(), lr=LR),
                        accumulative_counts=case.accumulative_counts)


def gloo_worker(rank: int, port: int, out_dir: str, train_rank: Callable) -> None:
    """One process of a ``WORLD``-process gloo group: saves ``train_rank(rank)``."""
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group('gloo', rank=rank, world_size=WORLD)
    torch.save(train_rank(rank), os.path.join(out_dir, f'rank{rank}.pth'))
    dist.destroy_process_group()


def spawn_ranks(train_rank: Callable, out_dir: Path) -> List[dict]:
    """What ``train_rank`` returns on each process of a gloo group, by rank."""
    mp.spawn(gloo_worker, args=(free_port(), str(out_dir), train_rank), nprocs=WORLD)
    return [torch.load(out_dir / f'rank{rank}.pth', weights_only=True)
            for rank in range(WORLD)]


def ddp_rank(rank: int) -> dict:
    results = {}
    for case in DDP_CASES:
        model = classifier(case)
        ddp = MMDistributedDataParallel(  # mmengine's runner defaults, but find_unused
            model, broadcast_buffers=False,
            find_unused_parameters=case.find_unused_parameters)
        losses = train(ddp, make_wrapper(case, model),
                       [rank_batch(i, rank) for i in range(ITERS)])
        results[case.id] = dict(params=model.state_dict(), losses=torch.tensor(losses))
    return results


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


@pytest.fixture(scope='module')
def ddp_results(tmp_path_factory) -> List[dict]:
    return spawn_ranks(ddp_rank, tmp_path_factory.mktemp('ddp'))


def one_process_training(case: Case) -> Dict[str, torch.Tensor]:
    """Train without DDP, one step per ``accumulative_counts`` global batches."""
    model = classifier(case)
    counts = case.accumulative_counts
    batches = [concatenated_batch(range(step, step + counts))
               for step in range(0, ITERS, counts)]
    train(model, make_wrapper(case._replace(accumulative_counts=1), model), batches)
    return model.state_dict()


def parameter_errors(actual: dict, expected: dict, floor: float = 1e-4) -> Dict[str, float]:
    """Per tensor, ``max|actual - expected| / max(max|expected|, floor)``. The floor keeps
    tensors that stay at zero up to rounding (the key norms' biases: softmax ignores a
    shift shared by all keys, so their exact gradient is 0) from turning rounding into
    error: below it, tensors are compared absolutely (to ``1e-5 * floor``)."""
    return {name: (actual[name] - value).abs().max().item()
            / max(value.abs().max().item(), floor) for name, value in expected.items()}


@pytest.mark.parametrize('case', [c for c in DDP_CASES if c.wrapper is OptimWrapper],
                         ids=lambda case: case.id)
def test_ddp_matches_one_process_on_concatenated_batches(ddp_results, case):
    rank0, rank1 = (results[case.id]['params'] for results in ddp_results)
    for name, value in rank0.items():
        assert torch.equal(value, rank1[name]), f'ranks differ in {name}'
    expected = one_process_training(case)
    initial = classifier(case).state_dict()
    assert max(parameter_errors(expected, initial).values()) > 1e-2, 'nothing trained'
    errors = parameter_errors(rank0, expected)
    assert max(errors.values()) <= 1e-5, errors


@pytest.mark.parametrize('case', [c for c in DDP_CASES if c.wrapper is BF16OptimWrapper],
                         ids=lambda case: case.id)
def test_ddp_with_bf16_autocast_trains_in_step(ddp_results, case):
    rank0, rank1 = (results[case.id] for results in ddp_results)
    for name, value in rank0['params'].items():
        assert torch.equal(value, rank1['params'][name]), f'ranks differ in {name}'
    for results in (rank0, rank1):
        assert torch.isfinite(results['losses']).all(), results['losses']


FSDP_WRAPPINGS = ('root', 'blocks', 'branches')


def fsdp_backbone(wrapping: Optional[str] = None, num_layers: int = 2):
    """A RevViT (drop rates 0: ranks draw their own masks) sharded with FSDP2's
    ``fully_shard`` on the root and, by ``wrapping``, on each block or each F and G."""
    from torch.distributed.fsdp import fully_shard
    torch.manual_seed(0)
    arch = dict(BACKBONES['RevViT']['arch'], num_layers=num_layers)
    model = RevViT(img_size=BACKBONES['RevViT']['img_size'], arch=arch).train()
    if wrapping is None:
        return model
    for block in model.layers:
        modules = {'root': [], 'blocks': [block], 'branches': [block.f, block.g]}[wrapping]
        for module in modules:
            fully_shard(module)
    return fully_shard(model)


def fsdp_step(model, inputs: torch.Tensor) -> None:
    loss = sum(out.pow(2).mean() for out in model(inputs))
    loss.backward()
    with torch.no_grad():
        for param in model.parameters():
            if param.grad is not None:  # FSDP1: none for an empty shard
                param -= LR * param.grad
                param.grad = None


def saved_bytes(model, inputs: torch.Tensor) -> int:
    """The bytes a training step's forward saves for backward, each saved tensor by its
    own size (:func:`mmrev.testing.saved_tensor_bytes` counts storages, which FSDP2's
    sharded parameters, DTensors, do not expose)."""
    sizes = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        sizes.append(tensor.numel() * tensor.element_size())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = sum(out.pow(2).mean() for out in model(inputs))
    loss.backward()
    return sum(sizes)


FSDP1_WRAPPINGS = [(use_orig_params, blocks) for use_orig_params in (False, True)
                   for blocks in (False, True)]


def fsdp1_backbone(use_orig_params: bool, blocks: bool, reversible: bool):
    """The backbone of :func:`fsdp_backbone` under FSDP1 (``FullyShardedDataParallel``),
    on the root and, with ``blocks``, on each block."""
    from torch.distributed.fsdp import FullyShardedDataParallel
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy

    from mmrev.reversible import ReversibleBlock
    model = fsdp_backbone()
    set_reversible(model, reversible)
    return FullyShardedDataParallel(
        model, device_id=torch.device('cpu'), use_orig_params=use_orig_params,
        auto_wrap_policy=ModuleWrapPolicy({ReversibleBlock}) if blocks else None)


def fsdp1_rank(rank: int) -> dict:
    """For each FSDP1 wrapping: the error of a reversible step, and the parameters after
    training with ordinary backprop."""
    from torch.distributed.fsdp import FullyShardedDataParallel
    results = {}
    for wrapping in FSDP1_WRAPPINGS:
        inputs = [global_batch(i)['inputs'].chunk(WORLD)[rank] for i in range(ITERS)]
        try:
            fsdp_step(fsdp1_backbone(*wrapping, reversible=True), inputs[0])
            error = ''
        except RuntimeError as caught:
            error = str(caught)
        model = fsdp1_backbone(*wrapping, reversible=False)
        for batch in inputs:
            fsdp_step(model, batch)
        with FullyShardedDataParallel.summon_full_params(model):
            params = {name.replace('_fsdp_wrapped_module.', ''): param.detach().clone()
                      for name, param in model.named_parameters()}
        results[str(wrapping)] = dict(error=error, params=params)
    return results


def fsdp_rank(rank: int) -> dict:
    results = dict(fsdp1=fsdp1_rank(rank))
    for wrapping in FSDP_WRAPPINGS:
        model = fsdp_backbone(wrapping)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            for i in range(ITERS):
                fsdp_step(model, global_batch(i)['inputs'].chunk(WORLD)[rank])
        results[wrapping] = dict(
            params={name: param.full_tensor() for name, param in model.named_parameters()},
            warned=any('ordinary backprop' in str(w.message) for w in caught),
            saved=[saved_bytes(fsdp_backbone(wrapping, depth),
                               global_batch(0)['inputs'].chunk(WORLD)[rank])
                   for depth in (2, 4)])
    return results


@pytest.fixture(scope='module')
def fsdp_results(tmp_path_factory) -> List[dict]:
    return spawn_ranks(fsdp_rank, tmp_path_factory.mktemp('fsdp'))


@pytest.mark.parametrize('wrapping', FSDP_WRAPPINGS)
def test_fsdp2_matches_one_process(fsdp_results, wrapping):
    """FSDP2 on the root, on every block, or on every F and G (2 gloo processes, half the
    batch each): the parameters of one process training on the whole batch. The root and
    sharded blocks keep reversible backprop (saved activations constant in depth);
    sharded branches run with ordinary backprop, with a warning (FSDP2's hooks act inside
    the blocks), and keep activations that grow with depth."""
    model = fsdp_backbone()
    for i in range(ITERS):
        fsdp_step(model, global_batch(i)['inputs'])
    expected = {name: param.detach() for name, param in model.named_parameters()}
    for results in fsdp_results:
        errors = parameter_errors(results[wrapping]['params'], expected)
        assert max(errors.values()) <= 1e-5, errors
        assert results[wrapping]['warned'] == (wrapping == 'branches')
        shallow, deep = results[wrapping]['saved']
        assert (deep > shallow) if wrapping == 'branches' else (deep == shallow), (
            shallow, deep)


@pytest.mark.parametrize('use_orig_params, blocks', FSDP1_WRAPPINGS)
def test_fsdp1_refused_with_reversible_backprop_trains_with_ordinary(
        fsdp_results, use_orig_params, blocks):
    """FSDP1 on the root or on each block, with or without ``use_orig_params``: a
    reversible step raises an error that names FSDP2's ``fully_shard`` and
    ``reversible=False`` (it failed unclearly, or trained the blocks on no gradients);
    with ordinary backprop, the parameters of one process."""
    model = fsdp_backbone()
    set_reversible(model, False)
    for i in range(ITERS):
        fsdp_step(model, global_batch(i)['inputs'])
    expected = {name: param.detach() for name, param in model.named_parameters()}
    for results in fsdp_results:
        case = results['fsdp1'][str((use_orig_params, blocks))]
        assert 'FSDP1' in case['error'] and 'fully_shard' in case['error'] and (
            'reversible=False' in case['error']), case['error']
        errors = parameter_errors(case['params'], expected)
        assert max(errors.values()) <= 1e-5, errors


MOMENTUM = 0.9  # optimizer state, which resuming must restore


def fully_shard_runner(work_dir: str, rank: int, resume: bool = False):
    """mmengine's FlexibleRunner with mmrev's FSDP2 strategy on a tiny RevViT classifier
    (``rank``'s half of each global batch), checkpointing every other iteration."""
    from mmengine.dataset import pseudo_collate
    from mmengine.runner import FlexibleRunner
    samples = [dict(inputs=inputs, data_samples=sample) for i in range(ITERS)
               for inputs, sample in zip(*rank_batch(i, rank).values())]
    return FlexibleRunner(
        model=classifier(Case('RevViT', True)), work_dir=work_dir, launcher='pytorch',
        strategy=dict(type='mmrev.FullyShardStrategy'),
        experiment_name='resumed' if resume else 'run', default_scope='mmpretrain',
        env_cfg=dict(dist_cfg=dict(backend='gloo')),
        train_dataloader=torch.utils.data.DataLoader(samples, batch_size=RANK_BATCH,
                                                     collate_fn=pseudo_collate),
        train_cfg=dict(by_epoch=False, max_iters=ITERS),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=LR, momentum=MOMENTUM)),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=ITERS // 2,
                                           by_epoch=False)),
        resume=resume)


def fully_shard_rank(rank: int) -> dict:
    """Train with FullyShardStrategy; then resume the half-way checkpoint in a second
    work dir and train to the end again. The checkpoints' state dicts, from rank 0."""
    import shutil

    from torch.distributed.fsdp import FSDPModule
    work_dir = Path(os.environ['FULLY_SHARD_DIR'])
    runner = fully_shard_runner(str(work_dir / 'run'), rank)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        runner.train()
    resumed = work_dir / 'resumed'
    if rank == 0:
        resumed.mkdir()
        shutil.copy(work_dir / 'run' / f'iter_{ITERS // 2}.pth', resumed)
        (resumed / 'last_checkpoint').write_text(str(resumed / f'iter_{ITERS // 2}.pth'))
    dist.barrier()
    fully_shard_runner(str(resumed), rank, resume=True).train()
    results = dict(warned=any('ordinary backprop' in str(w.message) for w in caught),
                   sharded=[isinstance(block, FSDPModule)
                            for block in runner.model.backbone.layers])
    if rank == 0:
        for name in ('run', 'resumed'):
            checkpoint = torch.load(work_dir / name / f'iter_{ITERS}.pth', weights_only=False)
            results[name] = dict(
                params=checkpoint['state_dict'], iter=checkpoint['meta']['iter'],
                momenta={key: state['momentum_buffer']
                         for key, state in checkpoint['optimizer']['state'].items()})
    return results


def test_fully_shard_strategy_trains_saves_and_resumes(tmp_path, monkeypatch):
    """FlexibleRunner(strategy=dict(type='mmrev.FullyShardStrategy')) on 2 gloo processes:
    every block sharded on its own, reversible backprop kept (no fallback warning), the
    parameters and SGD momenta of one process on the whole batches (1e-5), saved as full
    state dicts; resuming the half-way checkpoint ends where training straight through
    did."""
    monkeypatch.setenv('FULLY_SHARD_DIR', str(tmp_path))
    results = spawn_ranks(fully_shard_rank, tmp_path)
    assert not any(r['warned'] for r in results)
    assert all(all(r['sharded']) for r in results), results
    model = classifier(Case('RevViT', True))
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    train(model, OptimWrapper(optimizer=optimizer),
          [concatenated_batch(range(i, i + 1)) for i in range(ITERS)])
    expected = model.state_dict()
    momenta = {name: optimizer.state[param]['momentum_buffer']
               for name, param in model.named_parameters()}
    for name in ('run', 'resumed'):
        saved = results[0][name]
        errors = parameter_errors(saved['params'], expected)
        assert max(errors.values()) <= 1e-5, (name, errors)
        errors = parameter_errors(saved['momenta'], momenta)
        assert max(errors.values()) <= 1e-5, (name, errors)
        assert saved['iter'] == ITERS


def train_on_one_batch(backbone: str, reversible: bool, wrapper: Callable,
                       device: str = 'cpu') -> Tuple[torch.Tensor, torch.Tensor]:
    """``AMP_STEPS`` SGD steps on one batch; the losses and the parameters' update."""
    model = classifier(Case(backbone, reversible)).to(device)
    initial = torch.cat([p.detach().flatten() for p in model.parameters()])
    losses = train(model, wrapper(optimizer=torch.optim.SGD(model.parameters(), lr=LR)),
                   [concatenated_batch(range(1))] * AMP_STEPS)
    update = torch.cat([p.detach().flatten() for p in model.parameters()]) - initial
    return torch.tensor(losses), update


def check_mixed_precision_training(backbone: str, amp_wrapper: Callable,
                                   device: str = 'cpu') -> None:
    """Ordinary and reversible backprop under ``amp_wrapper``: finite, falling losses, and
    reversible within 1% of the mixed-precision error itself (ordinary amp vs fp32)."""
    _, fp32_update = train_on_one_batch(backbone, False, OptimWrapper, device)
    ordinary_losses, ordinary_update = train_on_one_batch(backbone, False, amp_wrapper,
                                                          device)
    reversible_losses, reversible_update = train_on_one_batch(backbone, True, amp_wrapper,
                                                              device)
    for losses in (ordinary_losses, reversible_losses):
        assert torch.isfinite(losses).all() and losses[-1] < losses[0], losses
    noise = relative_error(ordinary_update, fp32_update)
    assert noise > 1e-4, 'mixed precision changed nothing'
    # Reversible backprop must add nothing to the mixed-precision error. A recompute
    # outside the forward's autocast state, or streams rounded to half precision (exact
    # inverse lost), make a gap of the order of the noise itself.
    gap = relative_error(reversible_update, ordinary_update)
    assert gap <= 0.01 * noise, dict(gap=gap, noise=noise)


@pytest.mark.parametrize('backbone', BACKBONES)
def test_bf16_autocast_reversible_training_within_bf16_noise(backbone):
    check_mixed_precision_training(backbone, BF16OptimWrapper)


class CPULossScaledFP16Wrapper(OptimWrapper):
    """``AmpOptimWrapper``'s recipe (float16 autocast, dynamic loss scaling, skipped steps
    on overflow) on CPU, where mmengine's wrapper refuses to run."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.loss_scaler = torch.amp.GradScaler('cpu')

    def backward(self, loss: torch.Tensor, **kwargs) -> None:
        self.loss_scaler.scale(loss).backward(**kwargs)
        self._inner_count += 1

    def step(self, **kwargs) -> None:
        self.loss_scaler.step(self.optimizer, **kwargs)
        self.loss_scaler.update()

    @contextmanager
    def optim_context(self, model):
        with super().optim_context(model), torch.autocast('cpu', dtype=torch.float16):
            yield


@pytest.mark.parametrize('device', [
    'cpu',
    pytest.param('cuda', marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                  reason='needs CUDA'))])
@pytest.mark.parametrize('backbone', BACKBONES)
def test_fp16_loss_scaled_reversible_training_within_fp16_noise(backbone, device):
    wrapper = (CPULossScaledFP16Wrapper if device == 'cpu' else
               partial(AmpOptimWrapper, dtype='float16', loss_scale='dynamic'))
    check_mixed_precision_training(backbone, wrapper, device)


def test_amp_picks_bf16_on_cpu_and_loss_scaled_fp16_on_gpu():
    base = dict(optimizer=dict(type='SGD', lr=0.1), accumulative_counts=2)
    assert amp_optim_wrapper(base, 'cpu') == dict(base, type='mmrev.BF16OptimWrapper')
    assert amp_optim_wrapper(base, 'cuda') == dict(base, type='AmpOptimWrapper',
                                                   loss_scale='dynamic')
    assert amp_optim_wrapper(dict(base, loss_scale=512.), 'cuda')['loss_scale'] == 512.
    chosen = dict(base, type='AmpOptimWrapper', dtype='bfloat16')
    assert amp_optim_wrapper(chosen, 'cuda') is chosen
    with pytest.raises(ValueError, match='ApexOptimWrapper'):
        amp_optim_wrapper(dict(base, type='ApexOptimWrapper'), 'cuda')


def test_bf16_wrapper_builds_from_an_mmpretrain_config():
    model = torch.nn.Linear(4, 4)
    cfg = amp_optim_wrapper(dict(optimizer=dict(type='SGD', lr=0.1)), 'cpu')
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        wrapper = build_optim_wrapper(model, cfg)
    assert isinstance(wrapper, BF16OptimWrapper)
    with wrapper.optim_context(model):
        assert model(torch.randn(2, 4)).dtype == torch.bfloat16
    assert model(torch.randn(2, 4)).dtype == torch.float32


def torchrun_train(tmp_path: Path, config: Path, *options: str,
                   timeout: int = 300) -> subprocess.CompletedProcess:
    """``tools/train.py CONFIG --launcher pytorch`` on 2 CPU processes (gloo), on an
    image folder of 2 classes x 8 random 32x32 images (``tmp_path/data``)."""
    for label in range(2):
        folder = tmp_path / 'data' / 'train' / str(label)
        os.makedirs(folder, exist_ok=True)
        for i in range(8):
            image = torch.randint(256, (32, 32, 3), generator=torch.Generator().manual_seed(i))
            Image.fromarray(image.to(torch.uint8).numpy()).save(folder / f'{i}.png')
    repo = Path(__file__).parents[1]
    command = [
        sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', str(WORLD),
        '--master_port', str(free_port()), str(repo / 'tools' / 'train.py'), str(config),
        '--launcher', 'pytorch', '--no-validate', '--no-persistent-workers',
        '--work-dir', str(tmp_path / 'work'), *options, '--cfg-options',
        'train_cfg.max_epochs=1', f'train_dataloader.dataset.data_root={tmp_path / "data"}',
        'train_dataloader.batch_size=2', 'train_dataloader.num_workers=0',
        'default_hooks.logger.interval=1']
    env = dict(os.environ, OMP_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='',
               PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get('PYTHONPATH', '')]))
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


DIGITS_CONFIG = Path(__file__).parents[1] / 'configs' / 'revvit' / 'revvit-tiny_1xb64_digits.py'


def test_train_tool_under_torchrun_with_amp_on_cpu(tmp_path):
    """``tools/train.py --launcher pytorch --amp`` on 2 CPU processes (gloo, bf16)."""
    result = torchrun_train(tmp_path, DIGITS_CONFIG, '--amp')
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    log = next((tmp_path / 'work').glob('*/*.log')).read_text()
    assert "type='mmrev.BF16OptimWrapper'" in log and 'Distributed training: True' in log
    # 16 images, 2 per process and iteration: 4 iterations when both processes train
    assert 'Epoch(train) [1][4/4]' in log
    assert (tmp_path / 'work' / 'epoch_1.pth').is_file()
