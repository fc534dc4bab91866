"""Training memory, training step time and eval throughput of mmrev's backbones and the
alternatives a user would pick instead.

``--model revvit`` compares, for every depth x batch size x image size, at the same width:

    mmrev-rev             mmrev RevViT with reversible backprop
    mmrev-exact           the same in exact mode (``exact_bits=24``: fixed-point streams)
    mmrev-ordinary        the same blocks, ordinary backprop (``reversible=False``)
    mmrev-ckpt            the same blocks, ordinary backprop, each block under
                          ``torch.utils.checkpoint`` (non-reentrant)
    mmpretrain-revvit     mmpretrain's ``RevVisionTransformer``
    mmpretrain-vit        mmpretrain's ``VisionTransformer`` (class token, as users run it)

and, only when named in ``--cases``, ``mmrev-rev-compiled``, ``mmrev-ordinary-compiled`` and
``mmpretrain-vit-compiled``: ``torch.compile`` (inductor) of that case, with the graph
breaks of its training forward (``graph breaks``, from ``torch._dynamo.explain``).

``--model revmvit`` (RevMViT; depth: its layers, the last transition moved with it):

    mmrev-rev             mmrev RevMViT with reversible backprop
    mmrev-rev-keep        the same, keeping the maps inside the stage transitions
                          (``keep_transition_maps=True``)
    mmrev-ordinary        the same model, ordinary backprop
    mmrev-ckpt            the same model, ordinary backprop, every reversible block and
                          stage transition under ``torch.utils.checkpoint``
    mmpretrain-mvit       mmpretrain's ``MViT`` (MViTv2, ``--mvit-arch``)
    mmpretrain-mvit-ckpt  the same, each block under ``torch.utils.checkpoint``

``--model video``: the video RevMViT (``video-base``, clips of ``--num-frames``) in the
cases of ``revmvit``, against mmaction2's ``MViT`` (``mmaction-mvit``, ``-ckpt``).

``--model maskrcnn``: one Mask R-CNN training step with base-size backbones (see
:class:`MaskRCNNFamily`): ``revmvit-rev``/``-ordinary`` and ``revvit-rev``/``-ordinary``
against mmpretrain's MViTv2-B and ViT-B, ordinary and per-block checkpointed.

A training step is forward + backward of ``output.square().mean()`` (for Mask R-CNN, of
the detector's losses), gradients kept.

Memory: the extra memory of one training step over the resting state (model, gradients and
input allocated), median of a few steps after a warm-up, each case in a fresh subprocess.
CUDA: peak allocated. CPU: peak resident memory (VmHWM after resetting it through
/proc/self/clear_refs), run under MALLOC_MMAP_THRESHOLD_=65536 so that freed tensors go back
to the system and resident memory tracks live tensors.

Time: median training step and eval (no_grad forward) time after warm-up, the cases
alternated in one process; ratios are against ``--baseline`` measured in the same run. Per
setting, one fresh process times the training steps and then eval (as validation runs,
after training), and another times eval alone (as inference runs): on CPU both depend on
how much freed memory the process keeps, and hence on what ran before in it. Beside each
time, the median minor page faults of the step (``faults/step``, ``faults/eval``): the
4 KiB pages of host memory it had to map afresh, memory that the allocator had given back
to the system since the last step.

With two or more batch sizes it fits memory per image and, with ``--budget-mib``, the
largest batch per case within that budget. On CPU it checks the targets of the issues
that set them (RevViT-S width at 224x224, batch 8: issue 10; RevMViT-B: issue 16) and
shows by how much each missed one is missed.

Examples (the README's tables)::

    python tools/analysis_tools/benchmark_memory_speed.py --arch small \\
        --depths 12 24 48 --batch-sizes 8 --img-sizes 224 --threads 1 --clock cpu \\
        --steps 7 --mem-repeats 2 --out-dir docs/benchmark
    python tools/analysis_tools/benchmark_memory_speed.py --model revmvit \\
        --batch-sizes 2 4 --img-sizes 224 --threads 1 --clock cpu --steps 5 \\
        --mem-repeats 2 --out-dir docs/benchmark/revmvit
    python tools/analysis_tools/benchmark_memory_speed.py --arch small --depths 12 \\
        --batch-sizes 8 --img-sizes 224 --threads 1 --clock cpu --steps 5 --no-memory \\
        --cases mmrev-rev mmrev-rev-compiled mmrev-ordinary mmrev-ordinary-compiled \\
        mmpretrain-vit mmpretrain-vit-compiled --out-dir docs/benchmark/compile
"""
import argparse
import csv
import gc
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from functools import partial
from typing import Callable, Dict, List, Tuple

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

MIB = 2**20


def _checkpointed(module: nn.Module, *args):
    return checkpoint(module, *args, use_reentrant=False)


class CheckpointedBlock(nn.Module):
    """Runs a block (any arguments and outputs) under non-reentrant
    ``torch.utils.checkpoint``: what a user adds to save memory without reversibility."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.block = block

    def forward(self, *args):
        return _checkpointed(self.block, *args)


def checkpoint_blocks(blocks: nn.ModuleList) -> None:
    """Put each block of ``blocks`` under ``torch.utils.checkpoint``, in place."""
    for i, block in enumerate(blocks):
        blocks[i] = CheckpointedBlock(block)


def _backbone_of_config(config: str, type_name: str) -> dict:
    """``model.backbone`` of ``config`` as keyword arguments (no type, no init_cfg)."""
    from mmengine.config import Config
    backbone = Config.fromfile(config).model.backbone.to_dict()
    if backbone.pop('type').split('.')[-1] != type_name:
        raise ValueError(f'{config}: model.backbone must be a {type_name} to benchmark it')
    backbone.pop('init_cfg', None)
    return backbone


class Family:
    """What is benchmarked: the cases, how each is built at a depth and image size, and
    the targets the measurements are checked against."""

    cases: Tuple[str, ...] = ()
    eval_cases: Tuple[str, ...] = ()  # the others compute the same eval
    compiled_cases: Tuple[str, ...] = ()  # run only when named in --cases
    baseline: str = ''
    default_arch: str = ''

    def __init__(self, arch: str = None, config: str = None):
        self.kwargs = self.backbone_kwargs(arch or self.default_arch, config)

    def backbone_kwargs(self, arch: str, config: str = None) -> dict:
        raise NotImplementedError

    @property
    def default_depths(self) -> List[int]:
        raise NotImplementedError

    def build(self, case: str, depth: int, img_size: int) -> nn.Module:
        raise NotImplementedError

    def targets(self, rows: List[dict], per_image: List[dict], device: str) -> List[dict]:
        return []

    def make_input(self, batch_size: int, img_size: int, device: str):
        """A fixed batch of images (B, 3, S, S)."""
        generator = torch.Generator().manual_seed(0)
        return torch.randn(batch_size, 3, img_size, img_size,
                           generator=generator).to(device)

    def loss(self, model: nn.Module, x) -> torch.Tensor:
        """``output.square().mean()``, the loss of a training step."""
        return model(x)[-1].float().square().mean()

    def train_step(self, model: nn.Module, x) -> None:
        self.loss(model, x).backward()

    @torch.no_grad()
    def eval_step(self, model: nn.Module, x) -> None:
        model(x)

    def check_case(self, case: str) -> None:
        if case not in self.cases + self.compiled_cases:
            raise ValueError(f'Unknown case {case!r}; choose from '
                             f'{self.cases + self.compiled_cases}')


class RevViTFamily(Family):
    """RevViT against ordinary backprop, per-block checkpointing, mmpretrain's
    ``RevVisionTransformer`` and ``VisionTransformer`` (class token, as users run it),
    at the same width; ``depth`` is the number of blocks."""

    cases = ('mmrev-rev', 'mmrev-exact', 'mmrev-ordinary', 'mmrev-ckpt',
             'mmpretrain-revvit', 'mmpretrain-vit')
    compiled_cases = ('mmrev-rev-compiled', 'mmrev-ordinary-compiled',
                      'mmpretrain-vit-compiled')  # torch.compile (inductor) of the case
    eval_cases = ('mmrev-rev', 'mmrev-exact', 'mmpretrain-revvit', 'mmpretrain-vit',
                  'mmrev-rev-compiled', 'mmpretrain-vit-compiled')
    baseline = 'mmpretrain-vit'
    default_arch = 'small'
    default_depths = [12, 24, 48]

    def backbone_kwargs(self, arch: str, config: str = None) -> dict:
        from mmrev.models import RevViT
        kwargs = _backbone_of_config(config, 'RevViT') if config else dict(arch=arch)
        return dict(kwargs, arch=RevViT._parse_arch(kwargs.get('arch', 'base')))

    @property
    def embed_dims(self) -> int:
        return self.kwargs['arch']['embed_dims']

    def build(self, case: str, depth: int, img_size: int) -> nn.Module:
        from mmpretrain.models import RevVisionTransformer, VisionTransformer

        from mmrev.models import RevViT
        self.check_case(case)
        if case in self.compiled_cases:
            return torch.compile(self.build(case.removesuffix('-compiled'), depth,
                                            img_size))
        arch = RevViT._parse_arch(dict(self.kwargs['arch'], num_layers=depth))
        if case.startswith('mmrev'):
            exact = dict(exact_bits=24) if case == 'mmrev-exact' else {}
            model = RevViT(**dict(self.kwargs, arch=arch, img_size=img_size,
                                  reversible=case in ('mmrev-rev', 'mmrev-exact'), **exact))
            if case == 'mmrev-ckpt':
                for i, block in enumerate(model.layers):
                    model.layers[i] = CheckpointedBlock(block)
            return model
        cls = RevVisionTransformer if case == 'mmpretrain-revvit' else VisionTransformer
        same = {k: self.kwargs[k] for k in ('drop_rate', 'drop_path_rate')
                if k in self.kwargs}
        return cls(arch={k: arch[k] for k in RevViT.REQUIRED_ARCH_KEYS}, img_size=img_size,
                   patch_size=arch['patch_size'], qkv_bias=arch['qkv_bias'], **same)

    def targets(self, rows: List[dict], per_image: List[dict], device: str) -> List[dict]:
        return targets_in(rows, self.embed_dims, device)


class RevMViTFamily(Family):
    """RevMViT (stage transitions regenerating their maps, or keeping them) against
    ordinary backprop and per-block checkpointing (every reversible
    block and stage transition) of the same model, and mmpretrain's ``MViT`` (MViTv2)
    ordinary and with per-block checkpointing. ``depth``: RevMViT layers, the stage
    transitions at layers 1, 3 and depth - 2 (``base``: 16 layers, 1, 3, 14); mmpretrain's
    MViT keeps the depth of its arch (``--mvit-arch``)."""

    cases = ('mmrev-rev', 'mmrev-rev-keep', 'mmrev-ordinary', 'mmrev-ckpt',
             'mmpretrain-mvit', 'mmpretrain-mvit-ckpt')
    eval_cases = ('mmrev-rev', 'mmpretrain-mvit')
    baseline = 'mmpretrain-mvit'
    default_arch = 'base'

    def __init__(self, arch: str = None, config: str = None, mvit_arch: str = 'base'):
        super().__init__(arch, config)
        self.mvit_arch = mvit_arch

    def backbone_kwargs(self, arch: str, config: str = None) -> dict:
        from mmrev.models import RevMViT
        kwargs = _backbone_of_config(config, 'RevMViT') if config else dict(arch=arch)
        for key in ('out_type', 'out_scales', 'frozen_stages', 'reversible',
                    'keep_transition_maps'):
            kwargs.pop(key, None)
        return dict(kwargs, arch=RevMViT._parse_arch(kwargs.get('arch', 'base')))

    @property
    def default_depths(self) -> List[int]:
        return [self.kwargs['arch']['num_layers']]

    def arch_of_depth(self, depth: int) -> dict:
        arch = self.kwargs['arch']
        if depth == arch['num_layers']:
            return arch
        transitions = sorted(arch['transition_layers'])
        return dict(arch, num_layers=depth,
                    transition_layers=transitions[:-1] + [depth - 2])

    def build(self, case: str, depth: int, img_size: int) -> nn.Module:
        from mmpretrain.models import MViT
        self.check_case(case)
        if case.startswith('mmrev'):
            return self.build_mmrev(case, depth, img_size)
        model = MViT(arch=self.mvit_arch, img_size=img_size,
                     drop_path_rate=self.kwargs.get('drop_path_rate', 0.))
        if case.endswith('-ckpt'):
            checkpoint_blocks(model.blocks)
        return model

    def build_mmrev(self, case: str, depth: int, img_size: int, **kwargs) -> nn.Module:
        from mmrev.models import RevMViT
        model = RevMViT(**dict(self.kwargs, arch=self.arch_of_depth(depth),
                               img_size=img_size, reversible=case.startswith('mmrev-rev'),
                               keep_transition_maps=case == 'mmrev-rev-keep', **kwargs))
        if case == 'mmrev-ckpt':
            for stage in model.stages:
                if stage.transition is not None:
                    stage.transition = CheckpointedBlock(stage.transition)
                checkpoint_blocks(stage.blocks)
        return model

    def targets(self, rows: List[dict], per_image: List[dict], device: str) -> List[dict]:
        if device != 'cpu' or self.kwargs['arch']['embed_dims'] != 96:
            return []
        return check_revmvit_targets(rows, per_image)


class VideoFamily(RevMViTFamily):
    """Video RevMViT (``video-base``: Rev-MViT-B 16x4) against ordinary backprop and
    per-block checkpointing of the same model, and mmaction2's ``MViT`` (MViTv2,
    ``--mvit-arch``) ordinary and with per-block checkpointing, on clips of
    ``num_frames`` square frames; memory per image is memory per clip."""

    cases = ('mmrev-rev', 'mmrev-ordinary', 'mmrev-ckpt', 'mmaction-mvit',
             'mmaction-mvit-ckpt')
    eval_cases = ('mmrev-rev', 'mmaction-mvit')
    baseline = 'mmaction-mvit'
    default_arch = 'video-base'

    def __init__(self, arch: str = None, config: str = None, mvit_arch: str = 'base',
                 num_frames: int = 16):
        super().__init__(arch, config, mvit_arch)
        self.num_frames = num_frames

    def build(self, case: str, depth: int, img_size: int) -> nn.Module:
        from mmrev.openmmlab import patch_mmaction_drn
        patch_mmaction_drn()  # mmaction2 1.2.0 as published lacks a package
        from mmaction.models import MViT
        self.check_case(case)
        if case.startswith('mmrev'):
            return self.build_mmrev(case, depth, img_size, num_frames=self.num_frames)
        model = MViT(arch=self.mvit_arch, spatial_size=img_size,
                     temporal_size=self.num_frames, output_cls_token=False,
                     drop_path_rate=self.kwargs.get('drop_path_rate', 0.))
        if case.endswith('-ckpt'):
            checkpoint_blocks(model.blocks)
        return model

    def make_input(self, batch_size: int, img_size: int, device: str):
        """A fixed batch of clips (B, 3, T, S, S)."""
        generator = torch.Generator().manual_seed(0)
        return torch.randn(batch_size, 3, self.num_frames, img_size, img_size,
                           generator=generator).to(device)

    def targets(self, rows: List[dict], per_image: List[dict], device: str) -> List[dict]:
        return check_video_targets(per_image) if device == 'cpu' else []


DETECTION_CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..',
                                 'configs', 'detection')


class MaskRCNNFamily(Family):
    """One Mask R-CNN training step (backbone, neck, RPN and RoI heads: mmrev's LSJ
    configs, full-size heads) on a batch of images with three instances each, for
    base-size backbones: Rev-MViT-B + FPN and RevViT-B + SimpleFPN, reversible and
    ordinary, and mmpretrain's MViTv2-B (``MViT(arch='base')``) + FPN and ViT-B
    (``VisionTransformer(arch='base')``) + SimpleFPN, ordinary and with per-block
    checkpointing, in the same detector. ``depth`` is not used (the archs' own)."""

    cases = ('revmvit-rev', 'revmvit-ordinary', 'mmpretrain-mvit', 'mmpretrain-mvit-ckpt',
             'revvit-rev', 'revvit-ordinary', 'mmpretrain-vit', 'mmpretrain-vit-ckpt')
    baseline = 'revmvit-ordinary'
    default_depths = [0]

    def backbone_kwargs(self, arch: str, config: str = None) -> dict:
        return dict(arch='base')

    def build(self, case: str, depth: int, img_size: int) -> nn.Module:
        from mmdet.registry import MODELS
        from mmengine.config import Config
        from mmengine.registry import init_default_scope
        self.check_case(case)
        mvit = 'mvit' in case
        config = ('mask-rcnn_revmvit-base_fpn_lsj-100e_coco.py' if mvit else
                  'mask-rcnn_revvit-base_simplefpn_lsj-100e_coco.py')
        cfg = Config.fromfile(os.path.join(DETECTION_CONFIGS, config)).model
        cfg.data_preprocessor.batch_augments = None  # no padding to 1024
        backbone = dict(cfg.backbone, img_size=img_size, init_cfg=None)
        if case.startswith('mmpretrain'):
            import mmpretrain.models  # noqa: F401  registers mmpretrain's backbones
            backbone = (dict(type='mmpretrain.MViT', arch='base', img_size=img_size,
                             drop_path_rate=0.2, out_scales=[0, 1, 2, 3]) if mvit else
                        dict(type='mmpretrain.VisionTransformer', arch='base',
                             img_size=img_size, drop_path_rate=0.1, out_type='featmap',
                             with_cls_token=False))
            cfg.neck.in_channels = [96, 192, 384, 768] if mvit else 768
        else:
            backbone['reversible'] = case.endswith('-rev')
        cfg.backbone = backbone
        init_default_scope('mmdet')
        model = MODELS.build(cfg)
        if case.endswith('-ckpt'):
            checkpoint_blocks(model.backbone.blocks if mvit else model.backbone.layers)
        return model

    def make_input(self, batch_size: int, img_size: int, device: str):
        """Packed data (uint8 images, three boxes and masks each), as a data loader
        gives it to the detector's data preprocessor."""
        from mmdet.testing import demo_mm_inputs
        torch.manual_seed(0)
        return demo_mm_inputs(batch_size, [(3, img_size, img_size)] * batch_size,
                              num_items=[3] * batch_size, num_classes=80, with_mask=True)

    def train_step(self, model: nn.Module, x) -> None:
        data = model.data_preprocessor(x, True)
        losses = model.loss(data['inputs'], data['data_samples'])
        loss, _ = model.parse_losses(losses)
        loss.backward()

    def targets(self, rows: List[dict], per_image: List[dict], device: str) -> List[dict]:
        return check_detector_targets(rows) if device == 'cpu' else []


FAMILIES = {'revvit': RevViTFamily, 'revmvit': RevMViTFamily, 'video': VideoFamily,
            'maskrcnn': MaskRCNNFamily}


def set_mode(model: nn.Module, training: bool) -> nn.Module:
    model.train(training)  # mmpretrain's backbones return None from train()
    return model


def _proc_status_kib(key: str) -> int:
    with open('/proc/self/status') as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ':'))


def step_memory(model: nn.Module, x, repeats: int, step: Callable,
                cuda: bool = False) -> Dict[str, float]:
    """Median extra memory (MiB) of a training ``step(model, x)`` over the resting
    state."""
    step(model, x)  # warm-up: allocates gradients, pages in kernels
    extras = []
    for _ in range(repeats):
        gc.collect()
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            rest = torch.cuda.memory_allocated()
            step(model, x)
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
        else:
            with open('/proc/self/clear_refs', 'w') as f:
                f.write('5')  # reset the peak RSS (VmHWM) to the current RSS
            rest = _proc_status_kib('VmRSS') * 1024
            step(model, x)
            peak = _proc_status_kib('VmHWM') * 1024
        extras.append(peak - rest)
    return dict(extra_mem_mib=statistics.median(extras) / MIB, rest_mem_mib=rest / MIB)


def _minor_page_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def graph_breaks(family: Family, model: nn.Module, x) -> int:
    """The graph breaks ``torch.compile`` makes in the forward of a training step of
    ``model`` (a compiled module: its original one is traced)."""
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(partial(family.loss, model._orig_mod))(x)
    torch._dynamo.reset()
    return explanation.graph_break_count


def median_times(models: Dict[str, nn.Module], x, step: Callable, steps: int, warmup: int,
                 clock=time.perf_counter, cuda: bool = False
                 ) -> Dict[str, Tuple[float, float]]:
    """Median seconds and minor page faults of ``step(model, x)`` per model, models
    alternated every round."""
    times = {name: [] for name in models}
    faults = {name: [] for name in models}
    for round_ in range(warmup + steps):
        order = list(models) if round_ % 2 == 0 else list(reversed(models))
        for name in order:
            if cuda:
                torch.cuda.synchronize()
            faults_before, start = _minor_page_faults(), clock()
            step(models[name], x)
            if cuda:
                torch.cuda.synchronize()
            if round_ >= warmup:
                times[name].append(clock() - start)
                faults[name].append(_minor_page_faults() - faults_before)
    return {name: (statistics.median(times[name]), statistics.median(faults[name]))
            for name in models}


def build_models(family: Family, cases, depth: int, img_size: int, device: str,
                 training: bool) -> Dict[str, nn.Module]:
    torch.manual_seed(0)
    return {case: set_mode(family.build(case, depth, img_size).to(device), training)
            for case in cases}


def worker(args, family: Family) -> Dict[str, dict]:
    """Child process: one task's figures, per case.

    ``memory:CASE:D:B:S``: :func:`step_memory` of one case. ``train:D:B:S``: the step
    time of every case, then the eval time of the eval cases in the same process (as
    validation runs after training). ``eval:D:B:S``: the eval time of the eval cases in a
    process that does nothing else (as inference runs).
    """
    task, *case, depth, batch_size, img_size = args.worker.split(':')
    depth, batch_size, img_size = int(depth), int(batch_size), int(img_size)
    x = family.make_input(batch_size, img_size, args.device)
    clock = time.thread_time if args.clock == 'cpu' else time.perf_counter
    cuda = args.device.startswith('cuda')
    eval_cases = [c for c in args.cases if c in family.eval_cases]
    if task == 'memory':
        (model, ) = build_models(family, case, depth, img_size, args.device, True).values()
        return {case[0]: step_memory(model, x, args.mem_repeats, family.train_step, cuda)}
    results = {}
    if task == 'train':
        models = build_models(family, args.cases, depth, img_size, args.device, True)
        breaks = {case: graph_breaks(family, models[case], x) for case in models
                  if case in family.compiled_cases}
        for case, (t, faults) in median_times(models, x, family.train_step, args.steps,
                                              args.warmup, clock, cuda).items():
            results[case] = dict(step_s=t, step_faults=faults)
            if case in breaks:
                results[case]['graph_breaks'] = breaks[case]
        models = {c: set_mode(models[c], False) for c in eval_cases}
        key = 'eval_after_train'
    else:
        models = build_models(family, eval_cases, depth, img_size, args.device, False)
        key = 'eval'
    for case, (t, faults) in median_times(models, x, family.eval_step, args.steps,
                                          args.warmup, clock, cuda).items():
        results.setdefault(case, {}).update(
            {f'{key}_img_s': batch_size / t, f'{key}_faults': faults})
    return results


def run_worker(task: str, argv: List[str], env: dict = None) -> Dict[str, dict]:
    """Run :func:`worker` on ``task`` in a fresh process with the arguments ``argv``."""
    command = [sys.executable, __file__, *argv, '--worker', task]
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f'benchmark task {task} failed:\n{result.stderr}')
    return json.loads(result.stdout.strip().splitlines()[-1])


class Progress:
    """One line per finished task on stderr: count, label, elapsed time, estimate left."""

    def __init__(self, total: int):
        self.total, self.done, self.start = total, 0, time.time()

    def __call__(self, label: str) -> None:
        self.done += 1
        elapsed = time.time() - self.start
        left = elapsed / self.done * (self.total - self.done)
        print(f'[{self.done}/{self.total}] {label}  ({elapsed:.0f}s elapsed, '
              f'~{left:.0f}s left)', file=sys.stderr, flush=True)


def benchmark(args) -> List[dict]:
    """Every task of the sweep, each in a fresh process, so that no case or setting runs
    on memory another one's allocations left behind."""
    grid = list(itertools.product(args.depths, args.batch_sizes, args.img_sizes))
    memory_env = dict(os.environ, MALLOC_MMAP_THRESHOLD_='65536')
    progress = Progress(len(grid) * ((len(args.cases) if args.memory else 0)
                                     + (2 if args.time else 0)))
    rows = []
    for depth, batch_size, img_size in grid:
        setting = f'{depth}:{batch_size}:{img_size}'
        label = f'depth={depth} batch={batch_size} img={img_size}'
        results = {case: dict(depth=depth, batch_size=batch_size, img_size=img_size,
                              case=case) for case in args.cases}
        tasks = [(f'memory:{case}:{setting}', memory_env, f'memory {case} {label}')
                 for case in (args.cases if args.memory else ())]
        if args.time:
            tasks += [(f'train:{setting}', None, f'train step time, all cases, {label}'),
                      (f'eval:{setting}', None, f'eval time, eval cases, {label}')]
        for task, env, description in tasks:
            for case, figures in run_worker(task, args.argv, env).items():
                results[case].update(figures)
            progress(description)
        rows += add_ratios(list(results.values()), args.baseline)
    return rows


def add_ratios(rows: List[dict], baseline: str) -> List[dict]:
    """Add ratios against the baseline row: memory 'x below', step time, eval speed-up."""
    base = next((r for r in rows if r['case'] == baseline), {})
    for row in rows:
        for ratio, key, inverse in (('mem_x_below_baseline', 'extra_mem_mib', True),
                                    ('step_vs_baseline', 'step_s', False),
                                    ('eval_vs_baseline', 'eval_img_s', False),
                                    ('eval_after_train_vs_baseline', 'eval_after_train_img_s',
                                     False)):
            if row.get(key) and base.get(key):
                row[ratio] = base[key] / row[key] if inverse else row[key] / base[key]
    return rows


def per_image_memory(rows: List[dict], budget_mib: float = None) -> List[dict]:
    """Per case, depth and image size run at two or more batch sizes: the least-squares
    line of extra memory over batch size (MiB per image, fixed MiB) and, with a budget,
    the largest batch whose extra memory fits in it."""
    points = {}
    for row in rows:
        if 'extra_mem_mib' in row:
            key = (row['case'], row['depth'], row['img_size'])
            points.setdefault(key, []).append((row['batch_size'], row['extra_mem_mib']))
    fits = []
    for (case, depth, img_size), xy in points.items():
        if len(xy) < 2:
            continue
        slope, intercept = statistics.linear_regression(*zip(*xy))
        fit = dict(case=case, depth=depth, img_size=img_size, mib_per_image=slope,
                   fixed_mib=intercept)
        if budget_mib is not None:
            fit['max_batch'] = max(int((budget_mib - intercept) // slope), 0)
        fits.append(fit)
    return fits


def format_per_image(fits: List[dict], budget_mib: float = None) -> str:
    title = 'Extra training memory per image' + (
        f', and the largest batch within {budget_mib:g} MiB' if budget_mib else '') + ':'
    lines = [f"{f['case']:<18} depth {f['depth']:>3} img {f['img_size']:>4}  "
             f"{f['mib_per_image']:8.1f} MiB/image + {f['fixed_mib']:6.1f} MiB"
             + (f"  max batch {f['max_batch']}" if 'max_batch' in f else '') for f in fits]
    return '\n'.join([title, *lines])


def _ratio(numerator, denominator):
    return numerator / denominator if numerator and denominator else None


def _check(checks: List[dict], name: str, where: str, value, op: str,
           limit: float) -> None:
    """Append target ``name op limit`` at ``where`` (met, or by how much missed); left
    out when ``value`` was not measured."""
    if value is None:
        return
    shortfall = value / limit - 1 if op in ('<', '<=') else 1 - value / limit
    checks.append(dict(target=f'{name} {op} {limit:g}', depth=where, value=value,
                       met=shortfall <= 0, shortfall=max(shortfall, 0.)))


# Issue 10's targets, defined for RevViT-S width (384) at 224x224, batch 8, on CPU.
TARGET_SETTING = dict(embed_dims=384, batch_size=8, img_size=224, device='cpu')


def check_targets(rows: List[dict]) -> List[dict]:
    """Issue 10's targets over the rows of one setting: value, limit, met or by how much
    missed. Targets whose cases or depths did not run are left out."""
    at = {(r['case'], r['depth']): r for r in rows}
    depths = sorted({r['depth'] for r in rows})
    rev, vit, mmpretrain_rev = 'mmrev-rev', 'mmpretrain-vit', 'mmpretrain-revvit'

    def get(case: str, key: str, depth: int):
        return at.get((case, depth), {}).get(key)

    checks, mem = [], 'extra_mem_mib'
    _check(checks, 'mmrev-rev extra MiB', '24', get(rev, mem, 24), '<=', 55)
    _check(checks, 'memory: mmpretrain-revvit / mmrev-rev', '24',
           _ratio(get(mmpretrain_rev, mem, 24), get(rev, mem, 24)), '>=', 1.25)
    _check(checks, 'memory: mmpretrain-vit / mmrev-rev', '24',
           _ratio(get(vit, mem, 24), get(rev, mem, 24)), '>=', 16)
    if len(depths) > 1:
        _check(checks, 'memory: deepest / shallowest', f'{depths[-1]}/{depths[0]}',
               _ratio(get(rev, mem, depths[-1]), get(rev, mem, depths[0])), '<=', 1.05)
    for depth in depths:
        _check(checks, 'step: mmrev-rev / mmpretrain-vit', str(depth),
               _ratio(get(rev, 'step_s', depth), get(vit, 'step_s', depth)), '<=', 1.25)
        _check(checks, 'step: mmpretrain-revvit / mmrev-rev', str(depth),
               _ratio(get(mmpretrain_rev, 'step_s', depth), get(rev, 'step_s', depth)),
               '>=', 1.05)
        _check(checks, 'eval: mmrev-rev / mmpretrain-vit', str(depth),
               _ratio(get(rev, 'eval_img_s', depth), get(vit, 'eval_img_s', depth)),
               '>=', 1.05)
    return checks


def targets_in(rows: List[dict], embed_dims: int, device: str) -> List[dict]:
    """:func:`check_targets` for the rows of :data:`TARGET_SETTING` (none elsewhere)."""
    if (embed_dims, device) != (TARGET_SETTING['embed_dims'], TARGET_SETTING['device']):
        return []
    return check_targets([r for r in rows if r['batch_size'] == TARGET_SETTING['batch_size']
                          and r['img_size'] == TARGET_SETTING['img_size']])


def check_revmvit_targets(rows: List[dict], per_image: List[dict]) -> List[dict]:
    """Issue 16's targets for RevMViT-B on CPU: memory per image at 224 (a fit over
    batch sizes), memory at 1024x1024 batch 1 and the step time against ordinary
    backprop at 224 (at every batch size run)."""
    rev, ordinary, ckpt = 'mmrev-rev', 'mmrev-ordinary', 'mmpretrain-mvit-ckpt'
    fit = {(f['case'], f['img_size']): f['mib_per_image'] for f in per_image}
    checks = []
    _check(checks, 'mmrev-rev MiB per image', '224', fit.get((rev, 224)), '<=', 20)
    _check(checks, 'per image: mmrev-rev / mmpretrain-mvit-ckpt', '224',
           _ratio(fit.get((rev, 224)), fit.get((ckpt, 224))), '<=', 0.6)
    _check(checks, 'per image: mmrev-ordinary / mmrev-rev', '224',
           _ratio(fit.get((ordinary, 224)), fit.get((rev, 224))), '>=', 7)
    at = {(r['case'], r['img_size'], r['batch_size']): r for r in rows}

    def get(case: str, img_size: int, batch_size: int, key: str):
        return at.get((case, img_size, batch_size), {}).get(key)

    mem = 'extra_mem_mib'
    _check(checks, 'memory: mmrev-ordinary / mmrev-rev', '1024 b1',
           _ratio(get(ordinary, 1024, 1, mem), get(rev, 1024, 1, mem)), '>=', 5)
    _check(checks, 'memory: mmpretrain-mvit-ckpt / mmrev-rev', '1024 b1',
           _ratio(get(ckpt, 1024, 1, mem), get(rev, 1024, 1, mem)), '>', 1)
    for batch_size in sorted({r['batch_size'] for r in rows if r['img_size'] == 224}):
        _check(checks, 'step: mmrev-rev / mmrev-ordinary', f'224 b{batch_size}',
               _ratio(get(rev, 224, batch_size, 'step_s'),
                      get(ordinary, 224, batch_size, 'step_s')), '<=', 1.4)
    return checks


def check_detector_targets(rows: List[dict]) -> List[dict]:
    """Issue 17's targets for Mask R-CNN, per image size: the reversible detector needs
    at most half the memory of the same detector with ordinary backprop, and less than
    the detector with mmpretrain's backbone under per-block checkpointing."""
    at = {(r['case'], r['img_size'], r['batch_size']): r.get('extra_mem_mib') for r in rows}
    checks = []
    for (case, img_size, batch_size) in sorted(at):
        backbone, _, mode = case.partition('-')
        if mode != 'rev':
            continue
        where = f'{img_size} b{batch_size}'
        rev = at[case, img_size, batch_size]
        _check(checks, f'memory: {backbone}-rev / {backbone}-ordinary', where,
               _ratio(rev, at.get((f'{backbone}-ordinary', img_size, batch_size))), '<=', 0.5)
        ckpt = f'mmpretrain-{backbone[3:]}-ckpt'
        _check(checks, f'memory: {ckpt} / {backbone}-rev', where,
               _ratio(at.get((ckpt, img_size, batch_size)), rev), '>', 1)
    return checks


def check_video_targets(per_image: List[dict]) -> List[dict]:
    """Issue 18's targets for the video RevMViT on CPU, per frame size: memory per clip
    at least 3x below mmaction2's MViT with ordinary backprop, and below it with per-block
    checkpointing."""
    fit = {(f['case'], f['img_size']): f['mib_per_image'] for f in per_image}
    checks = []
    for img_size in sorted({size for _, size in fit}):
        rev = fit.get(('mmrev-rev', img_size))
        _check(checks, 'per clip: mmaction-mvit / mmrev-rev', str(img_size),
               _ratio(fit.get(('mmaction-mvit', img_size)), rev), '>=', 3)
        _check(checks, 'per clip: mmaction-mvit-ckpt / mmrev-rev', str(img_size),
               _ratio(fit.get(('mmaction-mvit-ckpt', img_size)), rev), '>', 1)
    return checks


def format_targets(checks: List[dict], title: str) -> str:
    lines = [f"{c['target']:<45} {c['depth']:>8}  {c['value']:8.2f}  "
             + ('met' if c['met'] else f"MISSED by {100 * c['shortfall']:.1f}%")
             for c in checks]
    return '\n'.join([title, *lines])


COLUMNS = (('depth', 'depth', '{:d}'), ('batch_size', 'batch', '{:d}'),
           ('img_size', 'img', '{:d}'), ('case', 'case', '{}'),
           ('extra_mem_mib', 'extra MiB', '{:.0f}'),
           ('mem_x_below_baseline', 'mem x below', '{:.1f}x'),
           ('step_s', 'step s', '{:.3f}'), ('step_vs_baseline', 'step ratio', '{:.2f}'),
           ('step_faults', 'faults/step', '{:.0f}'),
           ('eval_img_s', 'eval img/s', '{:.1f}'), ('eval_vs_baseline', 'eval ratio', '{:.2f}'),
           ('eval_faults', 'faults/eval', '{:.0f}'),
           ('eval_after_train_img_s', 'eval img/s after train', '{:.1f}'),
           ('eval_after_train_vs_baseline', 'ratio after train', '{:.2f}'),
           ('eval_after_train_faults', 'faults/eval after train', '{:.0f}'),
           ('graph_breaks', 'graph breaks', '{:d}'))


def format_table(rows: List[dict]) -> str:
    header = [title for _, title, _ in COLUMNS]
    body = [[fmt.format(row[key]) if key in row else '-' for key, _, fmt in COLUMNS]
            for row in rows]
    widths = [max(len(line[i]) for line in [header] + body) for i in range(len(header))]
    lines = [' | '.join(cell.rjust(w) for cell, w in zip(line, widths))
             for line in [header] + body]
    lines.insert(1, '-+-'.join('-' * w for w in widths))
    return '\n'.join(lines)


def plot(rows: List[dict], cases: List[str], path: str) -> None:
    """Extra memory and step time per case against the setting that varies most: depth,
    else image size, else batch size (one line per value of the others)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    axes_keys = ('depth', 'img_size', 'batch_size')
    x_key = max(axes_keys, key=lambda k: len({r[k] for r in rows}))
    others = [k for k in axes_keys if k != x_key]
    settings = sorted({tuple(r[k] for k in others) for r in rows})
    panels = [(key, label) for key, label in (('extra_mem_mib', 'extra training memory (MiB)'),
                                              ('step_s', 'training step time (s)'))
              if any(key in r for r in rows)]
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), squeeze=False)
    for (key, label), ax in zip(panels, axes[0]):
        for case, setting in itertools.product(cases, settings):
            points = sorted((r[x_key], r[key]) for r in rows if r['case'] == case and
                            tuple(r[k] for k in others) == setting and key in r)
            if points:
                name = case if len(settings) == 1 else f'{case} ' + ' '.join(
                    f'{k}={v}' for k, v in zip(others, setting))
                ax.plot(*zip(*points), marker='o', label=name)
        ax.set(xlabel=x_key.replace('_', ' '), ylabel=label)
        ax.grid(alpha=.3)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(', '.join(f'{k}={sorted({r[k] for r in rows})}' for k in others))
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--model', choices=FAMILIES, default='revvit',
                        help='the model family: its cases, default arch and depths')
    parser.add_argument('--arch', help="the mmrev arch (default: revvit 'small', revmvit "
                        "'base'; ignored with --config)")
    parser.add_argument('--config', help='a config whose model.backbone is of --model')
    parser.add_argument('--mvit-arch', default='base',
                        help="--model revmvit / video: the arch of mmpretrain's / "
                        "mmaction2's MViT compared")
    parser.add_argument('--num-frames', type=int, default=16,
                        help='--model video: frames per clip')
    parser.add_argument('--depths', type=int, nargs='+',
                        help='default: revvit 12 24 48, revmvit its arch depth')
    parser.add_argument('--batch-sizes', type=int, nargs='+', default=[8])
    parser.add_argument('--img-sizes', type=int, nargs='+', default=[224])
    parser.add_argument('--cases', nargs='+', help='default: all cases of --model')
    parser.add_argument('--baseline', help="default: mmpretrain's model of the family")
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--steps', type=int, default=5, help='timed steps per case')
    parser.add_argument('--warmup', type=int, default=1, help='untimed steps per case')
    parser.add_argument('--mem-repeats', type=int, default=3,
                        help='measured steps per memory run')
    parser.add_argument('--threads', type=int, help='torch CPU threads')
    parser.add_argument('--clock', choices=('wall', 'cpu'), default='wall',
                        help="'cpu': CPU time of the main thread, steadier than wall time "
                        'on a busy machine; meaningful with --threads 1 on CPU only')
    parser.add_argument('--no-memory', dest='memory', action='store_false')
    parser.add_argument('--no-time', dest='time', action='store_false')
    parser.add_argument('--budget-mib', type=float,
                        help='with two or more batch sizes: the largest batch per case '
                        'whose extra training memory fits in this many MiB')
    parser.add_argument('--out-dir', default='work_dirs/benchmark')
    parser.add_argument('--worker', help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def make_family(args) -> Family:
    """The family of ``args.model``; fills in the defaults of the family's cases,
    baseline and depths, and checks the ones given."""
    cls = FAMILIES[args.model]
    extra = dict(mvit_arch=args.mvit_arch) if issubclass(cls, RevMViTFamily) else {}
    if cls is VideoFamily:
        extra['num_frames'] = args.num_frames
    family = cls(args.arch, args.config, **extra)
    args.cases = args.cases or list(family.cases)
    args.baseline = args.baseline or family.baseline
    args.depths = args.depths or family.default_depths
    for case in args.cases + [args.baseline]:
        family.check_case(case)
    return family


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    args.argv = argv
    if args.threads:
        torch.set_num_threads(args.threads)
    family = make_family(args)
    if args.worker:
        print(json.dumps(worker(args, family)))
        return
    load_before = os.getloadavg()
    rows = benchmark(args)
    print(format_table(rows))
    per_image = per_image_memory(rows, args.budget_mib)
    if per_image:
        print(format_per_image(per_image, args.budget_mib))
    targets = family.targets(rows, per_image, args.device)
    if targets:
        print(format_targets(targets, f'Targets of {args.model} ({args.device}):'))
    os.makedirs(args.out_dir, exist_ok=True)
    stem = os.path.join(args.out_dir, 'benchmark_memory_speed')
    meta = dict(command=' '.join(['python', sys.argv[0], *argv]), device=args.device,
                threads=torch.get_num_threads(), torch=torch.__version__,
                date=time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
                loadavg_before=load_before, loadavg_after=os.getloadavg(),
                model=args.model, arch=family.kwargs['arch'])
    with open(stem + '.json', 'w') as f:
        json.dump(dict(meta=meta, rows=rows, per_image=per_image, targets=targets), f,
                  indent=1)
    with open(stem + '.csv', 'w', newline='') as f:
        writer = csv.DictWriter(f, [key for key, _, _ in COLUMNS] + ['rest_mem_mib'])
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, args.cases, stem + '.png')
    print(f'Results in {stem}.json, .csv and .png', file=sys.stderr)


if __name__ == '__main__':
    main()
