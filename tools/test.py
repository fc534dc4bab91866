"""Test (and evaluate) a checkpoint with mmengine's Runner (mmrev plugged in).

Works for mmrev's classification configs (default scope ``mmpretrain``) and for detection
configs (default scope ``mmdet``, evaluated with the config's mmdet metrics). Arguments
follow mmpretrain's and mmdet's ``tools/test.py``.
"""
import argparse
import os
import os.path as osp
from copy import deepcopy

import mmengine
from mmengine.config import Config, ConfigDict, DictAction
from mmengine.evaluator import DumpResults
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

import mmrev  # noqa: F401  registers the mmrev scope and its checkpoint loading
from mmrev.engine import setup_cpu_distributed


def parse_args():
    parser = argparse.ArgumentParser(description='Test a model (mmrev)')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the dir to save the metrics')
    parser.add_argument('--out', help='dump the predictions (or the metrics) to this file')
    parser.add_argument('--out-item', choices=['metrics', 'pred'],
                        help='what --out holds; defaults to the predictions')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override settings in the config, as key=value pairs (a list as '
        'key="[a,b]" or key=a,b), e.g. test_dataloader.batch_size=32')
    parser.add_argument('--amp', action='store_true',
                        help='automatic mixed precision testing')
    parser.add_argument('--show-dir', help='save images with the predictions drawn here')
    parser.add_argument('--show', action='store_true',
                        help='show the predictions in a window')
    parser.add_argument('--interval', type=int, default=1,
                        help='visualise every this many samples')
    parser.add_argument('--wait-time', type=float, default=2,
                        help='seconds each window is shown')
    parser.add_argument('--no-pin-memory', action='store_true',
                        help='disable pin_memory in the dataloader')
    parser.add_argument(
        '--tta', action='store_true',
        help='test-time augmentation with the config\'s tta_model and tta_pipeline; '
        'for classification configs without them, the mean score over a flip')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    if args.out_item is not None and args.out is None:
        parser.error('--out-item needs --out: the file to write')
    return args


def is_detection(cfg: Config) -> bool:
    return cfg.get('default_scope') == 'mmdet'


def enable_visualization(cfg: Config, args) -> None:
    """Switch the VisualizationHook on; mmdet's and mmpretrain's name it differently."""
    hook = cfg.get('default_hooks', {}).get('visualization')
    if hook is None:
        raise ValueError('--show/--show-dir need a VisualizationHook: add '
                         'default_hooks.visualization=dict(type="VisualizationHook")')
    hook.update(show=args.show, wait_time=args.wait_time, interval=args.interval)
    if is_detection(cfg):
        hook.update(draw=True, test_out_dir=args.show_dir)
    else:
        hook.update(enable=True, out_dir=args.show_dir)


def innermost_dataset(cfg: Config) -> ConfigDict:
    """The test dataset config, inside dataset wrappers if any."""
    dataset = cfg.test_dataloader.dataset
    while 'dataset' in dataset:
        dataset = dataset.dataset
    return dataset


def enable_tta(cfg: Config) -> None:
    """Wrap the model in the config's TTA model and test with the TTA pipeline."""
    if 'tta_model' not in cfg or 'tta_pipeline' not in cfg:
        if is_detection(cfg):
            raise ValueError('--tta needs tta_model and tta_pipeline in a detection '
                             'config (see mmdet\'s DetTTAModel)')
        cfg.setdefault('tta_model', dict(type='mmpretrain.AverageClsScoreTTA'))
        if 'tta_pipeline' not in cfg:
            pipeline = deepcopy(innermost_dataset(cfg).pipeline)
            flips = [dict(type='RandomFlip', prob=1.), dict(type='RandomFlip', prob=0.)]
            pipeline[-1] = dict(type='TestTimeAug', transforms=[flips, [pipeline[-1]]])
            cfg.tta_pipeline = pipeline
    cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
    innermost_dataset(cfg).pipeline = cfg.tta_pipeline


def merge_args(cfg: Config, args) -> Config:
    """Apply the command line to the config (command line wins)."""
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    cfg.load_from = args.checkpoint
    if args.amp:
        cfg.test_cfg.fp16 = True
    if args.show or args.show_dir:
        enable_visualization(cfg, args)
    if args.tta:
        if (args.show or args.show_dir) and not is_detection(cfg):
            raise ValueError('--tta cannot be combined with --show/--show-dir: '
                             'mmpretrain\'s VisualizationHook draws single views only')
        enable_tta(cfg)
    if args.no_pin_memory:
        cfg.test_dataloader.pin_memory = False
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    return cfg


def dump_metric(cfg: Config, out_file: str):
    """A metric that writes the raw predictions (mmdet's encodes masks first)."""
    if is_detection(cfg):
        if not out_file.endswith(('.pkl', '.pickle')):
            raise ValueError(f'--out must be a .pkl file for detection, got {out_file}')
        from mmdet.evaluation import DumpDetResults
        return DumpDetResults(out_file_path=out_file)
    return DumpResults(out_file_path=out_file)


def main():
    args = parse_args()
    cfg = merge_args(Config.fromfile(args.config), args)
    setup_cpu_distributed(cfg)
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    if args.out and args.out_item != 'metrics':
        runner.test_evaluator.metrics.append(dump_metric(cfg, args.out))
    metrics = runner.test()
    if args.out and args.out_item == 'metrics':
        mmengine.dump(metrics, args.out)


if __name__ == '__main__':
    main()
