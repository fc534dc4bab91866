"""The benchmark tool's logic (not its timings): every case builds and trains, ratios."""
import importlib.util
import mmap
import os
from pathlib import Path

import pytest
import torch

TOOL = Path(__file__).parents[1] / 'tools/analysis_tools/benchmark_memory_speed.py'
spec = importlib.util.spec_from_file_location('benchmark_memory_speed', TOOL)
bm = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bm)

TINY = dict(arch=dict(embed_dims=32, num_layers=4, num_heads=2, feedforward_channels=64,
                     patch_size=8))
TINY_MVIT = dict(embed_dims=8, num_layers=5, num_heads=1, transition_layers=[1, 3],
                 mlp_ratio=1.0)


def revvit(**kwargs):
    family = bm.RevViTFamily()
    family.kwargs = dict(TINY, **kwargs)
    return family


def revmvit():
    """Tiny RevMViT, and the smallest MViT of mmpretrain."""
    family = bm.RevMViTFamily(mvit_arch='tiny')
    family.kwargs = dict(arch=TINY_MVIT)
    return family


TINY_VIDEO_MVIT = dict(TINY_MVIT, q_stride=(1, 2, 2), kv_stride=(1, 4, 4),
                       pool_kernel=(3, 3, 3), patch_kernel=(3, 7, 7),
                       patch_stride=(2, 4, 4), patch_padding=(1, 3, 3))
FAMILY_CASES = [('revvit', case) for case in bm.RevViTFamily.cases] + [
    ('revmvit', case) for case in bm.RevMViTFamily.cases] + [
    ('video', case) for case in bm.VideoFamily.cases]


@pytest.mark.parametrize('family_name, case', FAMILY_CASES)
def test_every_case_builds_and_runs_a_training_and_eval_step(family_name, case):
    family = dict(revvit=revvit, revmvit=revmvit, video=video)[family_name]()
    depth, size = (1, 32) if family_name == 'revvit' else (5, 64)
    model = bm.set_mode(family.build(case, depth=depth, img_size=size), True)
    assert model.training
    x = family.make_input(2, size, 'cpu')
    assert x.shape == ((2, 3, 4, 64, 64) if family_name == 'video' else (2, 3, size, size))
    family.train_step(model, x)
    params = [p for p in model.parameters() if p.requires_grad]
    assert params and all(p.grad is not None for p in params)
    family.eval_step(bm.set_mode(model, False), x)
    assert not model.training


@pytest.mark.parametrize('case', ['revmvit-rev', 'mmpretrain-vit-ckpt'])
def test_detector_cases_train_a_mask_rcnn_step(case):
    family = bm.MaskRCNNFamily()
    model = bm.set_mode(family.build(case, 0, 64), True)
    family.train_step(model, family.make_input(1, 64, 'cpu'))
    backbone = [p for p in model.backbone.parameters()]
    assert all(p.grad is not None for p in backbone)
    if case == 'revmvit-rev':
        assert model.backbone.reversible and len(model.backbone.stages) == 4
    else:
        assert all(isinstance(b, bm.CheckpointedBlock) for b in model.backbone.layers)


def test_detector_targets():
    def row(case, mem):
        return dict(case=case, img_size=1024, batch_size=1, depth=0, extra_mem_mib=mem)
    rows = [row('revmvit-rev', 400.), row('revmvit-ordinary', 1000.),
            row('mmpretrain-mvit-ckpt', 900.), row('revvit-rev', 600.),
            row('revvit-ordinary', 1000.), row('mmpretrain-vit-ckpt', 500.)]
    checks = {c['target']: c for c in bm.check_detector_targets(rows)}
    assert checks['memory: revmvit-rev / revmvit-ordinary <= 0.5']['met']
    assert checks['memory: mmpretrain-mvit-ckpt / revmvit-rev > 1']['met']
    assert not checks['memory: revvit-rev / revvit-ordinary <= 0.5']['met']
    assert not checks['memory: mmpretrain-vit-ckpt / revvit-rev > 1']['met']


def video():
    """Tiny video RevMViT on 4-frame clips, and mmaction2's smallest MViT."""
    family = bm.VideoFamily(mvit_arch='tiny', num_frames=4)
    family.kwargs = dict(arch=dict(TINY_VIDEO_MVIT, pre_q_fusion='avg', sep_pos_embed=True))
    return family


def test_video_family_measures_per_clip_against_mmaction2():
    args = bm.parse_args(['--model', 'video', '--num-frames', '8'])
    family = bm.make_family(args)
    assert family.num_frames == 8 and family.kwargs['arch']['num_layers'] == 16
    assert args.baseline == 'mmaction-mvit' and args.depths == [16]
    per_clip = [dict(case='mmrev-rev', img_size=224, mib_per_image=100.),
                dict(case='mmaction-mvit', img_size=224, mib_per_image=250.),
                dict(case='mmaction-mvit-ckpt', img_size=224, mib_per_image=120.)]
    checks = {c['target']: c for c in family.targets([], per_clip, 'cpu')}
    assert not checks['per clip: mmaction-mvit / mmrev-rev >= 3']['met']
    assert checks['per clip: mmaction-mvit-ckpt / mmrev-rev > 1']['met']


def test_checkpointed_case_wraps_every_block_and_keeps_reversible_off():
    model = revvit().build('mmrev-ckpt', depth=2, img_size=32)
    assert not model.reversible
    assert all(isinstance(b, bm.CheckpointedBlock) for b in model.layers)
    assert revvit().build('mmrev-rev', depth=2, img_size=32).reversible
    model = revmvit().build('mmrev-ckpt', depth=5, img_size=64)
    assert not model.reversible
    assert all(isinstance(b, bm.CheckpointedBlock) for s in model.stages for b in s.blocks)
    assert all(isinstance(s.transition, bm.CheckpointedBlock) for s in model.stages[1:])
    mvit = revmvit().build('mmpretrain-mvit-ckpt', depth=5, img_size=64)
    assert all(isinstance(b, bm.CheckpointedBlock) for b in mvit.blocks)
    for case in ('mmrev-rev', 'mmrev-rev-keep'):
        model = revmvit().build(case, depth=5, img_size=64)
        assert model.reversible
        assert all(s.transition.keep_maps == case.endswith('keep') for s in model.stages[1:])


def test_revmvit_depth_moves_the_last_transition():
    family = revmvit()
    assert family.default_depths == [5]
    model = family.build('mmrev-rev', depth=9, img_size=64)
    assert model.arch_settings['transition_layers'] == [1, 7]
    assert [len(stage.blocks) for stage in model.stages] == [1, 5, 1]


def test_step_memory_reports_extra_over_resting_state_growing_with_batch():
    """As the tool measures it: a fresh process under the mmap threshold (in this
    process, other tests' freed memory makes a tiny step's extra read as noise)."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_='65536')
    argv = ['--arch', 'small', '--cases', 'mmrev-ordinary', '--mem-repeats', '1',
            '--threads', '1', '--device', 'cpu']
    extra = {}
    for batch_size in (1, 4):
        (result, ) = bm.run_worker(f'memory:mmrev-ordinary:1:{batch_size}:224', argv,
                                   env).values()
        assert result['rest_mem_mib'] > 0
        extra[batch_size] = result['extra_mem_mib']
    assert 0 < extra[1] < extra[4]


def test_compiled_cases_count_their_graph_breaks_and_run_only_when_named():
    family = revvit()
    x = family.make_input(2, 32, 'cpu')
    breaks = {case: bm.graph_breaks(family, bm.set_mode(family.build(case, 2, 32), True), x)
              for case in family.compiled_cases}
    assert breaks['mmrev-rev-compiled'] == 1 and breaks['mmrev-ordinary-compiled'] == 0
    assert breaks['mmpretrain-vit-compiled'] >= 0  # mmpretrain's own
    args = bm.parse_args([])
    bm.make_family(args)
    assert args.cases == list(family.cases)


def test_ratios_against_baseline_and_table():
    rows = bm.add_ratios([
        dict(depth=2, batch_size=1, img_size=32, case='mmrev-rev', extra_mem_mib=10.,
             step_s=1.2, eval_img_s=12.),
        dict(depth=2, batch_size=1, img_size=32, case='mmpretrain-vit', extra_mem_mib=40.,
             step_s=1., eval_img_s=10.),
    ], baseline='mmpretrain-vit')
    assert rows[0]['mem_x_below_baseline'] == 4.
    assert rows[0]['step_vs_baseline'] == pytest.approx(1.2)
    assert rows[0]['eval_vs_baseline'] == pytest.approx(1.2)
    table = bm.format_table(rows)
    assert '4.0x' in table and 'mmpretrain-vit' in table


def test_targets_show_met_and_by_how_much_missed():
    def row(case, depth, mem, step, eval_img_s=None):
        return dict(depth=depth, batch_size=8, img_size=224, case=case, extra_mem_mib=mem,
                    step_s=step, eval_img_s=eval_img_s)
    rows = [row('mmrev-rev', 12, 40., 1.3, 10.5), row('mmrev-rev', 24, 44., 2.6, 5.),
            row('mmpretrain-revvit', 24, 60., 2.8), row('mmpretrain-vit', 12, 450., 1., 10.),
            row('mmpretrain-vit', 24, 900., 2., 5.)]
    checks = {(c['target'], c['depth']): c for c in bm.targets_in(rows, 384, 'cpu')}
    assert checks['mmrev-rev extra MiB <= 55', '24']['met']
    assert checks['memory: mmpretrain-revvit / mmrev-rev >= 1.25', '24']['met']
    flat = checks['memory: deepest / shallowest <= 1.05', '24/12']
    assert not flat['met'] and flat['shortfall'] == pytest.approx(1.1 / 1.05 - 1)
    step = checks['step: mmrev-rev / mmpretrain-vit <= 1.25', '24']
    assert not step['met'] and step['shortfall'] == pytest.approx(1.3 / 1.25 - 1)
    assert checks['eval: mmrev-rev / mmpretrain-vit >= 1.05', '12']['met']
    eval_24 = checks['eval: mmrev-rev / mmpretrain-vit >= 1.05', '24']
    assert not eval_24['met'] and eval_24['shortfall'] == pytest.approx(1 - 1 / 1.05)
    assert ('step: mmpretrain-revvit / mmrev-rev >= 1.05', '12') not in checks  # not run
    assert 'MISSED by 4.0%' in bm.format_targets(list(checks.values()), 'Targets:')
    assert bm.targets_in(rows, 768, 'cpu') == [] and bm.targets_in(rows, 384, 'cuda') == []


def test_revmvit_targets():
    def row(case, img_size, batch_size, mem, step=None):
        return dict(case=case, img_size=img_size, batch_size=batch_size, depth=16,
                    extra_mem_mib=mem, step_s=step)
    rows = [row('mmrev-rev', 224, 4, 80., 1.3), row('mmrev-ordinary', 224, 4, 600., 1.),
            row('mmrev-rev', 1024, 1, 300.), row('mmrev-ordinary', 1024, 1, 1200.),
            row('mmpretrain-mvit-ckpt', 1024, 1, 400.)]
    per_image = [dict(case='mmrev-rev', img_size=224, mib_per_image=18.),
                 dict(case='mmrev-ordinary', img_size=224, mib_per_image=150.),
                 dict(case='mmpretrain-mvit-ckpt', img_size=224, mib_per_image=33.)]
    checks = {(c['target'], c['depth']): c for c in bm.check_revmvit_targets(rows, per_image)}
    assert checks['mmrev-rev MiB per image <= 20', '224']['met']
    assert checks['per image: mmrev-rev / mmpretrain-mvit-ckpt <= 0.6', '224']['met']
    assert checks['per image: mmrev-ordinary / mmrev-rev >= 7', '224']['met']
    below = checks['memory: mmrev-ordinary / mmrev-rev >= 5', '1024 b1']
    assert not below['met'] and below['shortfall'] == pytest.approx(1 - 4 / 5)
    assert checks['memory: mmpretrain-mvit-ckpt / mmrev-rev > 1', '1024 b1']['met']
    assert checks['step: mmrev-rev / mmrev-ordinary <= 1.4', '224 b4']['met']
    assert len(checks) == 6


def test_memory_per_image_and_largest_batch_within_budget():
    rows = [dict(case='mmrev-rev', depth=12, img_size=224, batch_size=b,
                 extra_mem_mib=10. + 5. * b) for b in (2, 4, 8)]
    rows.append(dict(case='mmpretrain-vit', depth=12, img_size=224, batch_size=8,
                     extra_mem_mib=400.))  # one batch size: no fit
    (fit, ) = bm.per_image_memory(rows, budget_mib=100.)
    assert fit['case'] == 'mmrev-rev' and fit['max_batch'] == 18
    assert fit['mib_per_image'] == pytest.approx(5.) and fit['fixed_mib'] == pytest.approx(10.)
    assert 'max batch' not in bm.format_per_image(bm.per_image_memory(rows))
    assert 'max batch 18' in bm.format_per_image([fit], 100.)


def test_config_must_hold_a_backbone_of_the_family(tmp_path):
    config = tmp_path / 'cfg.py'
    config.write_text("model = dict(backbone=dict(type='mmpretrain.VisionTransformer'))\n")
    with pytest.raises(ValueError, match='RevViT'):
        bm.RevViTFamily('small', str(config))
    config.write_text("model = dict(backbone=dict(type='mmrev.RevViT', arch='small', "
                      "drop_path_rate=0.1, init_cfg=dict(type='Pretrained')))\n")
    kwargs = bm.RevViTFamily('base', str(config)).kwargs
    assert kwargs['arch']['embed_dims'] == 384 and kwargs['drop_path_rate'] == 0.1
    assert 'init_cfg' not in kwargs
    assert torch.is_tensor(bm.RevViTFamily().make_input(1, 16, 'cpu'))
    config.write_text("model = dict(backbone=dict(type='mmrev.RevMViT', g_chunks=4, "
                      "out_type='featmap', out_scales=(0, 1, 2, 3)))\n")
    kwargs = bm.RevMViTFamily(config=str(config)).kwargs
    assert kwargs['g_chunks'] == 4 and 'out_scales' not in kwargs
    with pytest.raises(ValueError, match='Unknown case'):
        bm.make_family(bm.parse_args(['--model', 'revmvit', '--cases', 'mmpretrain-vit']))


CASES_2 = ['mmrev-rev', 'mmrev-ckpt']  # mmrev-ckpt has no eval figures


@pytest.mark.parametrize('task, keys', [
    ('memory:mmrev-rev:1:2:32', {'mmrev-rev': {'extra_mem_mib', 'rest_mem_mib'}}),
    ('train:1:2:32', {'mmrev-rev': {'step_s', 'step_faults', 'eval_after_train_img_s',
                                    'eval_after_train_faults'},
                      'mmrev-ckpt': {'step_s', 'step_faults'}}),
    ('eval:1:2:32', {'mmrev-rev': {'eval_img_s', 'eval_faults'}}),
])
def test_worker_measures_its_task_for_its_cases(task, keys):
    args = bm.parse_args(['--cases', *CASES_2, '--steps', '1', '--warmup', '0',
                          '--mem-repeats', '1', '--device', 'cpu', '--worker', task])
    results = bm.worker(args, revvit())
    assert {case: set(figures) for case, figures in results.items()} == keys
    assert all(value > 0 for figures in results.values() for key, value in figures.items()
               if key != 'extra_mem_mib' and not key.endswith('faults'))
    assert all(value >= 0 and value == int(value) for figures in results.values()
               for key, value in figures.items() if key.endswith('faults'))


def test_every_task_runs_in_a_fresh_process_memory_under_the_mmap_threshold(monkeypatch):
    tasks = []

    def fake_worker(task, argv, env=None):
        tasks.append((task, (env or {}).get('MALLOC_MMAP_THRESHOLD_')))
        kind, *case, depth, _, _ = task.split(':')
        if kind == 'memory':
            return {case[0]: dict(extra_mem_mib=float(depth))}
        key = 'step_s' if kind == 'train' else 'eval_img_s'
        return {'mmrev-rev': {key: 2.}, 'mmpretrain-vit': {key: 1.}}

    monkeypatch.setattr(bm, 'run_worker', fake_worker)
    args = bm.parse_args(['--cases', 'mmrev-rev', 'mmpretrain-vit', '--depths', '1', '2'])
    args.argv = []
    bm.make_family(args)
    rows = bm.benchmark(args)
    assert [t for t, _ in tasks[:4]] == ['memory:mmrev-rev:1:8:224',
                                         'memory:mmpretrain-vit:1:8:224',
                                         'train:1:8:224', 'eval:1:8:224']
    assert [env for _, env in tasks[:4]] == ['65536', '65536', None, None]
    assert len(tasks) == 8 and len(rows) == 4
    rev_2 = next(r for r in rows if r['case'] == 'mmrev-rev' and r['depth'] == 2)
    assert rev_2['extra_mem_mib'] == 2. and rev_2['step_vs_baseline'] == 2.
    assert rev_2['eval_vs_baseline'] == 2.


def test_median_times_counts_the_pages_each_step_maps_afresh():
    def step(model, x):
        model()

    def fresh_pages():  # 64 MiB mapped anew by every call, whatever malloc does
        memory = mmap.mmap(-1, 2**26)
        memory[::4096] = bytes(2**26 // 4096)
        memory.close()

    models = {'fresh 64 MiB': fresh_pages, 'nothing': lambda: None}
    (fresh_s, fresh_faults), (_, no_faults) = bm.median_times(
        models, None, step, steps=3, warmup=1).values()
    assert fresh_s > 0 and fresh_faults > 16 and no_faults < 16
