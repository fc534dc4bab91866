"""The largest batches and the report of ``gpu_validation.sh`` (issue 20), from the
benchmark tool's JSON files.

``gpu_validation.sh`` runs ``benchmark_memory_speed.py`` several times, each run into
``WORK/NAME/`` and listed in ``WORK/runs.tsv`` (name, kind, exit status, seconds). Kinds:
``memory`` (training memory at two or more batch sizes), ``time`` (step and eval time at
one batch) and ``throughput`` (the same, at a model's largest batch).

Memory per image and its fixed part are fitted over batch size, as the tool does, to the
whole memory of a training step (the tool's resting state, model, gradients and input,
plus its extra memory); no optimizer state. The largest batch within a budget is where
that line crosses it.

Subcommands::

    python gpu_validation_report.py batches --work WORK --runs RUN [RUN ...] \\
        --budget-mib 16384 --cap 4096 --cases mmrev-rev mmpretrain-vit
        # per memory RUN and batch: "RUN BATCH CASE [CASE ...]", one line per batch
    python gpu_validation_report.py report --work WORK --out OUT --budgets 16384 81920 \\
        --throughput-budget 16384
        # OUT/gpu_validation.{md,json,csv,png}
"""
import argparse
import csv
import importlib.util
import json
import platform
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, List, Optional

import torch

HERE = Path(__file__).parent
_spec = importlib.util.spec_from_file_location('benchmark_memory_speed',
                                               HERE / 'benchmark_memory_speed.py')
bm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bm)

# Mangalam et al., CVPR 2022, training memory per image (MB) at 224x224: the
# non-reversible model and its reversible counterpart, keyed by (family, width, depth).
PAPER_MB_PER_IMAGE = {
    ('revvit', 384, 12): dict(ordinary=('ViT-S', 66.5), rev=('Rev-ViT-S', 8.8)),
    ('revvit', 768, 12): dict(ordinary=('ViT-B', 129.7), rev=('Rev-ViT-B', 17.0)),
    ('revvit', 1024, 24): dict(ordinary=('ViT-L', 349.3), rev=('Rev-ViT-L', 22.6)),
    ('revmvit', 96, 16): dict(ordinary=('MViT-B', 153.6), rev=('Rev-MViT-B', 66.8)),
}
REV_CASE = 'mmrev-rev'
WIDTH_NAMES = {384: 'S', 768: 'B', 1024: 'L'}


def load_runs(work: Path) -> List[dict]:
    """Each run of ``runs.tsv`` with its JSON (``None`` where it wrote none)."""
    runs = []
    for line in (work / 'runs.tsv').read_text().splitlines():
        name, kind, rc, seconds = line.split('\t')
        path = work / name / 'benchmark_memory_speed.json'
        runs.append(dict(name=name, kind=kind, rc=int(rc), seconds=int(seconds),
                         result=json.loads(path.read_text()) if path.is_file() else None))
    return runs


def model_key(result: dict, depth: int) -> tuple:
    return result['meta']['model'], result['meta']['arch']['embed_dims'], depth


def model_label(key: tuple) -> str:
    family, width, depth = key
    if family == 'revvit':
        return f'RevViT-{WIDTH_NAMES.get(width, width)}, {depth} blocks'
    return 'RevMViT-B' if (width, depth) == (96, 16) else f'RevMViT {width}-d, {depth}'


def total_memory_fits(rows: List[dict]) -> List[dict]:
    """The tool's per-image fit of the whole step's memory, resting state included."""
    return bm.per_image_memory([dict(r, extra_mem_mib=r['extra_mem_mib'] + r['rest_mem_mib'])
                                for r in rows if 'extra_mem_mib' in r])


def largest_batch(fit: dict, budget_mib: float, cap: Optional[int] = None) -> Optional[int]:
    """Largest batch whose fitted memory fits in ``budget_mib``, at most ``cap`` (which
    also stands for 'any' where memory does not grow with the batch)."""
    if fit['fixed_mib'] > budget_mib:
        return 0
    if fit['mib_per_image'] <= 0:
        return cap
    batch = int((budget_mib - fit['fixed_mib']) // fit['mib_per_image'])
    return batch if cap is None else min(batch, cap)


def batches(args) -> None:
    runs = {run['name']: run for run in load_runs(Path(args.work))}
    for name in args.runs:
        result = runs.get(name, {}).get('result')
        groups: Dict[int, List[str]] = {}
        for fit in total_memory_fits(result['rows']) if result else []:
            batch = largest_batch(fit, args.budget_mib, args.cap)
            if fit['case'] in args.cases and batch:
                groups.setdefault(batch, []).append(fit['case'])
        for batch, cases in sorted(groups.items()):
            print(name, batch, *cases)


def memory_table(runs: List[dict], budgets: List[float],
                 throughput: Dict[tuple, dict]) -> List[dict]:
    """Per memory run and case: memory per image beside the paper, the largest batch
    within each budget, and what the throughput runs measured for that model and case."""
    table = []
    for run in runs:
        result = run['result']
        if run['kind'] != 'memory' or not result:
            continue
        extra = {f['case']: f for f in result['per_image']}
        for fit in total_memory_fits(result['rows']):
            key = model_key(result, fit['depth'])
            role = {REV_CASE: 'rev', bm.FAMILIES[key[0]].baseline: 'ordinary'}.get(fit['case'])
            paper_model, paper_mb = PAPER_MB_PER_IMAGE.get(key, {}).get(role, ('', None))
            measured = throughput.get(key + (fit['case'], ), {})
            table.append(dict(
                model=model_label(key), key=list(key), case=fit['case'],
                mib_per_image=extra[fit['case']]['mib_per_image'],
                paper=f'{paper_model} {paper_mb}' if paper_mb else '',
                fixed_mib=fit['fixed_mib'],
                **{f'max_batch_{b / 1024:g}GiB': largest_batch(fit, b) for b in budgets},
                throughput_batch=measured.get('batch_size'),
                train_img_s=(measured['batch_size'] / measured['step_s']
                             if 'step_s' in measured else None),
                eval_img_s=measured.get('eval_img_s'),
                predicted_gib=(fit['fixed_mib'] + fit['mib_per_image'] * measured['batch_size'])
                / 1024 if measured else None))
    return table


def time_table(runs: List[dict], memory_fits: Dict[tuple, dict]) -> List[dict]:
    """Per time run, depth and case: step and eval time, beside the memory runs' figures
    for the same model and case."""
    table = []
    for run in runs:
        result = run['result']
        if run['kind'] != 'time' or not result:
            continue
        ordinary = {(r['depth'], r['batch_size']): r.get('step_s') for r in result['rows']
                    if r['case'] == 'mmrev-ordinary'}
        for row in result['rows']:
            key = model_key(result, row['depth'])
            fit = memory_fits.get(key + (row['case'], ), {})
            ordinary_step = ordinary.get((row['depth'], row['batch_size']))
            table.append(dict(
                model=model_label(key), key=list(key), case=row['case'],
                batch_size=row['batch_size'], step_s=row.get('step_s'),
                step_vs_baseline=row.get('step_vs_baseline'),
                step_vs_ordinary=(row['step_s'] / ordinary_step
                                  if row.get('step_s') and ordinary_step else None),
                eval_img_s=row.get('eval_img_s'), mib_per_image=fit.get('mib_per_image')))
    return table


def pytest_summary(junit: Path) -> dict:
    """Counts and failed tests of pytest's JUnit XML (``ran=False`` if it wrote none)."""
    if not junit.is_file():
        return dict(ran=False)
    suite = ET.parse(junit).getroot()
    suite = suite if suite.tag == 'testsuite' else suite.find('testsuite')
    counts = {k: int(suite.get(k, 0)) for k in ('tests', 'failures', 'errors', 'skipped')}
    failed = [f"{case.get('classname')}.{case.get('name')}" for case in suite.iter('testcase')
              if case.find('failure') is not None or case.find('error') is not None]
    return dict(ran=True, passed=counts['tests'] - counts['failures'] - counts['errors']
                - counts['skipped'], failed=failed, **counts)


def _cell(value, fmt: str) -> str:
    return '' if value is None or value == '' else fmt.format(value)


def markdown(meta: dict, tests: dict, memory: List[dict], times: List[dict],
             runs: List[dict], budgets: List[float]) -> str:
    budget_cols = [f'max_batch_{b / 1024:g}GiB' for b in budgets]
    lines = [f"GPU validation (issue 20), {meta['date']}, {meta['device_name']}, torch "
             f"{meta['torch']}, Python {meta['python']}: `{meta['command']}`"
             + (' (CPU DRY RUN: tiny models, figures meaningless)' if meta['dry_run'] else ''),
             '']
    if tests.get('ran'):
        lines += [f"CUDA tests (`pytest -m cuda tests/test_cuda.py`): {tests['passed']} "
                  f"passed, {len(tests['failed'])} failed, {tests['skipped']} skipped"
                  + ''.join(f'\n- FAILED {name}' for name in tests['failed']), '']
    lines += ['Training memory (fp32, whole step: model, gradients, input and activations; '
              'no optimizer state), largest batch and training throughput at the largest '
              f"batch within {meta['throughput_budget_mib'] / 1024:g} GiB:",
              '',
              '| model | case | MiB per image | paper, MB per image | fixed MiB | '
              + ' | '.join(f'max batch {b / 1024:g} GiB' for b in budgets)
              + ' | batch run | train img/s | eval img/s | GiB fitted at that batch |',
              '|:--|:--|--:|--:|--:|' + '--:|' * len(budgets) + '--:|--:|--:|--:|']
    for row in memory:
        cells = [row['model'], row['case'], _cell(row['mib_per_image'], '{:.1f}'),
                 row['paper'], _cell(row['fixed_mib'], '{:.0f}'),
                 *(_cell(row[col], '{:d}') for col in budget_cols),
                 _cell(row['throughput_batch'], '{:d}'), _cell(row['train_img_s'], '{:.0f}'),
                 _cell(row['eval_img_s'], '{:.0f}'), _cell(row['predicted_gib'], '{:.1f}')]
        lines.append('| ' + ' | '.join(cells) + ' |')
    lines += ['', 'Step time, same batch for every case (ratios within one run):', '',
              '| model | case | batch | step s | step / baseline | step / ordinary '
              '| eval img/s | MiB per image |', '|:--|:--|--:|--:|--:|--:|--:|--:|']
    for row in times:
        cells = [row['model'], row['case'], str(row['batch_size']),
                 _cell(row['step_s'], '{:.3f}'), _cell(row['step_vs_baseline'], '{:.2f}'),
                 _cell(row['step_vs_ordinary'], '{:.2f}'), _cell(row['eval_img_s'], '{:.0f}'),
                 _cell(row['mib_per_image'], '{:.1f}')]
        lines.append('| ' + ' | '.join(cells) + ' |')
    problems = [f"- {run['name']} ({run['kind']}): "
                + ('skipped, past the deadline' if run['rc'] < 0 else f"exit status {run['rc']}")
                for run in runs if run['rc']]
    if problems:
        lines += ['', 'Runs that did not complete:', *problems]
    return '\n'.join(lines) + '\n'


def plot(memory: List[dict], times: List[dict], path: Path) -> None:
    """Memory per image and step time against depth (the model run at most depths),
    and training throughput at the largest batch."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.5))
    for ax, rows, key, label in ((axes[0], memory, 'mib_per_image', 'MiB per image'),
                                 (axes[1], times, 'step_s', 'step time (s)')):
        depths = {}
        for row in rows:
            depths.setdefault(tuple(row['key'][:2]), set()).add(row['key'][2])
        if not depths:
            continue
        family = max(depths, key=lambda k: len(depths[k]))
        for case in dict.fromkeys(r['case'] for r in rows):
            points = sorted((r['key'][2], r[key]) for r in rows if r['case'] == case
                            and tuple(r['key'][:2]) == family and r[key] is not None)
            if points:
                ax.plot(*zip(*points), marker='o', label=case)
        ax.set(xlabel=f'depth ({family[0]}, width {family[1]})', ylabel=label, yscale='log')
        ax.grid(alpha=.3)
        ax.legend(fontsize=8)
    measured = [r for r in memory if r['train_img_s']]
    axes[2].barh([f"{r['model']}: {r['case']} (batch {r['throughput_batch']})"
                  for r in measured], [r['train_img_s'] for r in measured])
    axes[2].set(xlabel='training images/s at the largest batch')
    axes[2].tick_params(axis='y', labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def report(args) -> None:
    work, out = Path(args.work), Path(args.out)
    runs = load_runs(work)
    throughput = {}
    for run in runs:
        if run['kind'] == 'throughput' and run['result']:
            for row in run['result']['rows']:
                throughput[model_key(run['result'], row['depth']) + (row['case'], )] = row
    memory = memory_table(runs, args.budgets, throughput)
    memory_fits = {tuple(row['key']) + (row['case'], ): row for row in memory}
    times = time_table(runs, memory_fits)
    tests = pytest_summary(out / 'pytest_cuda.xml')
    meta = dict(date=time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
                command=args.command, dry_run=args.dry_run, torch=torch.__version__,
                python=platform.python_version(),
                device_name=(torch.cuda.get_device_name() if torch.cuda.is_available()
                             else 'CPU'),
                budgets_mib=args.budgets, throughput_budget_mib=args.throughput_budget)
    out.mkdir(parents=True, exist_ok=True)
    (out / 'gpu_validation.md').write_text(
        markdown(meta, tests, memory, times, runs, args.budgets))
    with open(out / 'gpu_validation.json', 'w') as f:
        json.dump(dict(meta=meta, tests=tests, memory=memory, time=times, runs=runs), f,
                  indent=1)
    columns = ['run', 'kind'] + [key for key, _, _ in bm.COLUMNS] + ['rest_mem_mib']
    with open(out / 'gpu_validation.csv', 'w', newline='') as f:
        writer = csv.DictWriter(f, columns, extrasaction='ignore')
        writer.writeheader()
        for run in runs:
            for row in (run['result'] or {}).get('rows', []):
                writer.writerow(dict(row, run=run['name'], kind=run['kind']))
    plot(memory, times, out / 'gpu_validation.png')
    print((out / 'gpu_validation.md').read_text())


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    commands = parser.add_subparsers(dest='command_name', required=True)
    largest = commands.add_parser('batches', help='the largest batch per memory run and case')
    largest.add_argument('--runs', nargs='+', required=True)
    largest.add_argument('--budget-mib', type=float, required=True)
    largest.add_argument('--cap', type=int, required=True, help='never more than this')
    largest.add_argument('--cases', nargs='+', required=True)
    tables = commands.add_parser('report', help='OUT/gpu_validation.{md,json,csv,png}')
    tables.add_argument('--out', required=True)
    tables.add_argument('--budgets', type=float, nargs='+', default=[16384., 81920.])
    tables.add_argument('--throughput-budget', type=float, default=16384.)
    tables.add_argument('--command', default='bash tools/analysis_tools/gpu_validation.sh')
    tables.add_argument('--dry-run', action='store_true')
    for sub in (largest, tables):
        sub.add_argument('--work', required=True, help='the runs: WORK/runs.tsv')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    batches(args) if args.command_name == 'batches' else report(args)


if __name__ == '__main__':
    main()
