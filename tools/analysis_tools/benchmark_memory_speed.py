"""Training memory, training step time and eval throughput of RevViT and its alternatives.

For every depth x batch size x image size, at the same width, it compares:

    mmrev-rev          mmrev RevViT with reversible backprop
    mmrev-ordinary     the same blocks, ordinary backprop (``reversible=False``)
    mmrev-ckpt         the same blocks, ordinary backprop, each block under
                       ``torch.utils.checkpoint`` (non-reentrant)
    mmpretrain-revvit  mmpretrain's ``RevVisionTransformer``
    mmpretrain-vit     mmpretrain's ``VisionTransformer`` (class token, as users run it)

A training step is forward + backward of ``output.square().mean()``, gradients kept.

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
largest batch per case within that budget. At RevViT-S width, 224x224, batch 8 on CPU it
also checks issue 10's targets and shows by how much each missed one is missed.

Example (the README's table)::

    python tools/analysis_tools/benchmark_memory_speed.py --arch small \\
        --depths 12 24 48 --batch-sizes 8 --img-sizes 224 --threads 1 --clock cpu \\
        --steps 7 --mem-repeats 2 --out-dir docs/benchmark
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
from typing import Dict, List, Tuple

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

CASES = ('mmrev-rev', 'mmrev-ordinary', 'mmrev-ckpt', 'mmpretrain-revvit', 'mmpretrain-vit')
EVAL_CASES = ('mmrev-rev', 'mmpretrain-revvit', 'mmpretrain-vit')  # the others are the same
MIB = 2**20


class CheckpointedBlock(nn.Module):
    """Runs a two-stream block under non-reentrant ``torch.utils.checkpoint``."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.block = block

    def forward(self, x1: torch.Tensor, x2: torch.Tensor):
        return checkpoint(self.block, x1, x2, use_reentrant=False)


def revvit_kwargs(arch: str, config: str = None) -> dict:
    """mmrev.RevViT keyword arguments (arch resolved to a dict) from an arch or a config."""
    from mmrev.models import RevViT
    kwargs = dict(arch=arch)
    if config:
        from mmengine.config import Config
        backbone = Config.fromfile(config).model.backbone.to_dict()
        if backbone.pop('type').split('.')[-1] != 'RevViT':
            raise ValueError(f'{config}: model.backbone must be a RevViT to benchmark it')
        backbone.pop('init_cfg', None)
        kwargs = backbone
    return dict(kwargs, arch=RevViT._parse_arch(kwargs.get('arch', 'base')))


def build_model(case: str, kwargs: dict, depth: int, img_size: int) -> nn.Module:
    """The model of ``case`` with ``kwargs``'s width and ``depth`` blocks."""
    from mmpretrain.models import RevVisionTransformer, VisionTransformer

    from mmrev.models import RevViT
    arch = dict(kwargs['arch'], num_layers=depth)
    if case.startswith('mmrev'):
        model = RevViT(**dict(kwargs, arch=arch, img_size=img_size,
                              reversible=case == 'mmrev-rev'))
        if case == 'mmrev-ckpt':
            for i, block in enumerate(model.layers):
                model.layers[i] = CheckpointedBlock(block)
    elif case in ('mmpretrain-revvit', 'mmpretrain-vit'):
        cls = RevVisionTransformer if case == 'mmpretrain-revvit' else VisionTransformer
        same = {k: kwargs[k] for k in ('patch_size', 'drop_rate', 'drop_path_rate',
                                       'qkv_bias') if k in kwargs}
        model = cls(arch=arch, img_size=img_size, **same)
    else:
        raise ValueError(f'Unknown case {case!r}; choose from {CASES}')
    return model


def set_mode(model: nn.Module, training: bool) -> nn.Module:
    model.train(training)  # mmpretrain's backbones return None from train()
    return model


def train_step(model: nn.Module, x: torch.Tensor) -> None:
    model(x)[-1].float().square().mean().backward()


@torch.no_grad()
def eval_step(model: nn.Module, x: torch.Tensor) -> None:
    model(x)


def _proc_status_kib(key: str) -> int:
    with open('/proc/self/status') as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ':'))


def step_memory(model: nn.Module, x: torch.Tensor, repeats: int) -> Dict[str, float]:
    """Median extra memory (MiB) of a training step over the resting state."""
    train_step(model, x)  # warm-up: allocates gradients, pages in kernels
    extras = []
    for _ in range(repeats):
        gc.collect()
        if x.is_cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            rest = torch.cuda.memory_allocated()
            train_step(model, x)
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
        else:
            with open('/proc/self/clear_refs', 'w') as f:
                f.write('5')  # reset the peak RSS (VmHWM) to the current RSS
            rest = _proc_status_kib('VmRSS') * 1024
            train_step(model, x)
            peak = _proc_status_kib('VmHWM') * 1024
        extras.append(peak - rest)
    return dict(extra_mem_mib=statistics.median(extras) / MIB, rest_mem_mib=rest / MIB)


def _minor_page_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def median_times(models: Dict[str, nn.Module], x: torch.Tensor, step, steps: int,
                 warmup: int, clock=time.perf_counter) -> Dict[str, Tuple[float, float]]:
    """Median seconds and minor page faults of ``step(model, x)`` per model, models
    alternated every round."""
    times = {name: [] for name in models}
    faults = {name: [] for name in models}
    for round_ in range(warmup + steps):
        order = list(models) if round_ % 2 == 0 else list(reversed(models))
        for name in order:
            if x.is_cuda:
                torch.cuda.synchronize()
            faults_before, start = _minor_page_faults(), clock()
            step(models[name], x)
            if x.is_cuda:
                torch.cuda.synchronize()
            if round_ >= warmup:
                times[name].append(clock() - start)
                faults[name].append(_minor_page_faults() - faults_before)
    return {name: (statistics.median(times[name]), statistics.median(faults[name]))
            for name in models}


def make_input(batch_size: int, img_size: int, device: str) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(batch_size, 3, img_size, img_size, generator=generator).to(device)


def build_models(cases, kwargs: dict, depth: int, img_size: int, device: str,
                 training: bool) -> Dict[str, nn.Module]:
    torch.manual_seed(0)
    return {case: set_mode(build_model(case, kwargs, depth, img_size).to(device), training)
            for case in cases}


def worker(args, kwargs: dict) -> Dict[str, dict]:
    """Child process: one task's figures, per case.

    ``memory:CASE:D:B:S``: :func:`step_memory` of one case. ``train:D:B:S``: the step
    time of every case, then the eval time of the eval cases in the same process (as
    validation runs after training). ``eval:D:B:S``: the eval time of the eval cases in a
    process that does nothing else (as inference runs).
    """
    task, *case, depth, batch_size, img_size = args.worker.split(':')
    depth, batch_size, img_size = int(depth), int(batch_size), int(img_size)
    x = make_input(batch_size, img_size, args.device)
    clock = time.thread_time if args.clock == 'cpu' else time.perf_counter
    eval_cases = [c for c in args.cases if c in EVAL_CASES]
    if task == 'memory':
        (model, ) = build_models(case, kwargs, depth, img_size, args.device, True).values()
        return {case[0]: step_memory(model, x, args.mem_repeats)}
    results = {}
    if task == 'train':
        models = build_models(args.cases, kwargs, depth, img_size, args.device, True)
        for case, (t, faults) in median_times(models, x, train_step, args.steps,
                                              args.warmup, clock).items():
            results[case] = dict(step_s=t, step_faults=faults)
        models = {c: set_mode(models[c], False) for c in eval_cases}
        key = 'eval_after_train'
    else:
        models = build_models(eval_cases, kwargs, depth, img_size, args.device, False)
        key = 'eval'
    for case, (t, faults) in median_times(models, x, eval_step, args.steps, args.warmup,
                                          clock).items():
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

    def ratio(numerator, denominator):
        return numerator / denominator if numerator and denominator else None

    checks = []

    def check(name: str, depth: str, value, op: str, limit: float) -> None:
        if value is None:
            return
        shortfall = value / limit - 1 if op == '<=' else 1 - value / limit
        checks.append(dict(target=f'{name} {op} {limit:g}', depth=depth, value=value,
                           met=shortfall <= 0, shortfall=max(shortfall, 0.)))

    mem = 'extra_mem_mib'
    check('mmrev-rev extra MiB', '24', get(rev, mem, 24), '<=', 55)
    check('memory: mmpretrain-revvit / mmrev-rev', '24',
          ratio(get(mmpretrain_rev, mem, 24), get(rev, mem, 24)), '>=', 1.25)
    check('memory: mmpretrain-vit / mmrev-rev', '24',
          ratio(get(vit, mem, 24), get(rev, mem, 24)), '>=', 16)
    if len(depths) > 1:
        check('memory: deepest / shallowest', f'{depths[-1]}/{depths[0]}',
              ratio(get(rev, mem, depths[-1]), get(rev, mem, depths[0])), '<=', 1.05)
    for depth in depths:
        check('step: mmrev-rev / mmpretrain-vit', str(depth),
              ratio(get(rev, 'step_s', depth), get(vit, 'step_s', depth)), '<=', 1.25)
        check('step: mmpretrain-revvit / mmrev-rev', str(depth),
              ratio(get(mmpretrain_rev, 'step_s', depth), get(rev, 'step_s', depth)), '>=',
              1.05)
        check('eval: mmrev-rev / mmpretrain-vit', str(depth),
              ratio(get(rev, 'eval_img_s', depth), get(vit, 'eval_img_s', depth)), '>=',
              1.05)
    return checks


def targets_in(rows: List[dict], embed_dims: int, device: str) -> List[dict]:
    """:func:`check_targets` for the rows of :data:`TARGET_SETTING` (none elsewhere)."""
    if (embed_dims, device) != (TARGET_SETTING['embed_dims'], TARGET_SETTING['device']):
        return []
    return check_targets([r for r in rows if r['batch_size'] == TARGET_SETTING['batch_size']
                          and r['img_size'] == TARGET_SETTING['img_size']])


def format_targets(checks: List[dict]) -> str:
    lines = [f"{c['target']:<45} depth {c['depth']:>5}  {c['value']:8.2f}  "
             + ('met' if c['met'] else f"MISSED by {100 * c['shortfall']:.1f}%")
             for c in checks]
    setting = ', '.join(f'{k}={v}' for k, v in TARGET_SETTING.items())
    return '\n'.join([f'Issue 10 targets ({setting}):', *lines])


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
           ('eval_after_train_faults', 'faults/eval after train', '{:.0f}'))


def format_table(rows: List[dict]) -> str:
    header = [title for _, title, _ in COLUMNS]
    body = [[fmt.format(row[key]) if key in row else '-' for key, _, fmt in COLUMNS]
            for row in rows]
    widths = [max(len(line[i]) for line in [header] + body) for i in range(len(header))]
    lines = [' | '.join(cell.rjust(w) for cell, w in zip(line, widths))
             for line in [header] + body]
    lines.insert(1, '-+-'.join('-' * w for w in widths))
    return '\n'.join(lines)


def plot(rows: List[dict], path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    settings = sorted({(r['batch_size'], r['img_size']) for r in rows})
    for key, ax, label in (('extra_mem_mib', axes[0], 'extra training memory (MiB)'),
                           ('step_s', axes[1], 'training step time (s)')):
        for case, (batch_size, img_size) in itertools.product(CASES, settings):
            points = sorted((r['depth'], r[key]) for r in rows if r['case'] == case and
                            (r['batch_size'], r['img_size']) == (batch_size, img_size)
                            and key in r)
            if points:
                name = case if len(settings) == 1 else f'{case} b{batch_size} {img_size}px'
                ax.plot(*zip(*points), marker='o', label=name)
        ax.set(xlabel='depth (blocks)', ylabel=label)
        ax.grid(alpha=.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(', '.join(f'batch {b}, {i}x{i}' for b, i in settings))
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--arch', default='small', help='RevViT arch (ignored with --config)')
    parser.add_argument('--config', help='a config whose model.backbone is a RevViT')
    parser.add_argument('--depths', type=int, nargs='+', default=[12, 24, 48])
    parser.add_argument('--batch-sizes', type=int, nargs='+', default=[8])
    parser.add_argument('--img-sizes', type=int, nargs='+', default=[224])
    parser.add_argument('--cases', nargs='+', default=list(CASES), choices=CASES)
    parser.add_argument('--baseline', default='mmpretrain-vit', choices=CASES)
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


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    args.argv = argv
    if args.threads:
        torch.set_num_threads(args.threads)
    kwargs = revvit_kwargs(args.arch, args.config)
    if args.worker:
        print(json.dumps(worker(args, kwargs)))
        return
    load_before = os.getloadavg()
    rows = benchmark(args)
    print(format_table(rows))
    per_image = per_image_memory(rows, args.budget_mib)
    if per_image:
        print(format_per_image(per_image, args.budget_mib))
    targets = targets_in(rows, kwargs['arch']['embed_dims'], args.device)
    if targets:
        print(format_targets(targets))
    os.makedirs(args.out_dir, exist_ok=True)
    stem = os.path.join(args.out_dir, 'benchmark_memory_speed')
    meta = dict(command=' '.join(['python', sys.argv[0], *argv]), device=args.device,
                threads=torch.get_num_threads(), torch=torch.__version__,
                date=time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
                loadavg_before=load_before, loadavg_after=os.getloadavg(),
                arch=kwargs['arch'])
    with open(stem + '.json', 'w') as f:
        json.dump(dict(meta=meta, rows=rows, per_image=per_image, targets=targets), f,
                  indent=1)
    with open(stem + '.csv', 'w', newline='') as f:
        writer = csv.DictWriter(f, [key for key, _, _ in COLUMNS] + ['rest_mem_mib'])
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, stem + '.png')
    print(f'Results in {stem}.json, .csv and .png', file=sys.stderr)


if __name__ == '__main__':
    main()
