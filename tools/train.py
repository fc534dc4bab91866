"""Train a model from an OpenMMLab config with mmengine's Runner (mmrev plugged in).

Works for mmrev's classification configs (default scope ``mmpretrain``) and for detection
configs (default scope ``mmdet``): the runner uses the config's own ``default_scope``.
Arguments follow mmpretrain's and mmdet's ``tools/train.py``.
"""
import argparse
import os
import os.path as osp
import resource

import torch
from mmengine.config import Config, DictAction
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

import mmrev  # noqa: F401  registers the mmrev scope and its checkpoint loading
from mmrev.engine import amp_optim_wrapper, setup_cpu_distributed


def parse_args():
    parser = argparse.ArgumentParser(description='Train a model (mmrev)')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and checkpoints')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from this checkpoint; without a path, from the latest checkpoint '
        'in the work dir')
    parser.add_argument('--amp', action='store_true',
                        help='automatic mixed precision training')
    parser.add_argument('--no-validate', action='store_true',
                        help='do not evaluate during training')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the learning rate by the real total batch size '
                        '(relative to the config\'s auto_scale_lr.base_batch_size)')
    parser.add_argument('--no-pin-memory', action='store_true',
                        help='disable pin_memory in the dataloaders')
    parser.add_argument('--no-persistent-workers', action='store_true',
                        help='disable persistent_workers in the dataloaders')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override settings in the config, as key=value pairs (a list as '
        'key="[a,b]" or key=a,b), e.g. train_cfg.max_epochs=2')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    # torch.distributed.launch passes --local-rank (torch >= 2.0) or --local_rank
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def merge_args(cfg: Config, args) -> Config:
    """Apply the command line to the config (command line wins)."""
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])

    if args.amp:  # float16 with loss scaling on GPU, bfloat16 on CPU
        cfg.optim_wrapper = amp_optim_wrapper(cfg.optim_wrapper)

    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        cfg.resume, cfg.load_from = True, args.resume

    if args.no_validate:
        cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None

    if args.auto_scale_lr:
        if 'base_batch_size' not in cfg.get('auto_scale_lr', {}):
            raise ValueError('--auto-scale-lr needs auto_scale_lr.base_batch_size in the '
                             'config: the total batch size its learning rate is for')
        cfg.auto_scale_lr.enable = True

    for field in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = cfg.get(field)
        if loader is None:
            continue
        if args.no_pin_memory:
            loader.pin_memory = False
        if args.no_persistent_workers:
            loader.persistent_workers = False

    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    return cfg


def peak_memory() -> str:
    """Peak memory of this process: CUDA allocated on GPU, resident set size on CPU."""
    if torch.cuda.is_available() and torch.cuda.max_memory_allocated():
        return f'{torch.cuda.max_memory_allocated() / 2**20:.1f} MiB (CUDA, allocated)'
    return f'{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10:.1f} MiB (CPU, RSS)'


def main():
    args = parse_args()
    cfg = merge_args(Config.fromfile(args.config), args)
    setup_cpu_distributed(cfg)
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    runner.train()
    runner.logger.info(f'Peak training memory: {peak_memory()}')


if __name__ == '__main__':
    main()
