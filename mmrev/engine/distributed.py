"""Distributed training and testing on CPU-only machines with mmengine's Runner."""
import torch
import torch.distributed as dist
from mmengine.config import Config


def setup_cpu_distributed(cfg: Config) -> None:
    """Make ``launcher='pytorch'`` (torchrun, ``tools/dist_train.sh``) work without a GPU.

    mmengine's pytorch launcher binds each process to a GPU and its runner gives DDP
    ``device_ids=[LOCAL_RANK]``. Without a GPU, join the process group over gloo here (the
    runner then keeps it) and wrap the model for CPU. Does nothing on GPU machines or
    without the pytorch launcher.
    """
    if cfg.get('launcher') != 'pytorch' or torch.cuda.is_available():
        return
    if not dist.is_initialized():
        dist.init_process_group('gloo')
    cfg.model_wrapper_cfg = {
        'type': 'MMDistributedDataParallel', 'broadcast_buffers': False,
        'find_unused_parameters': cfg.get('find_unused_parameters', False),
        **(cfg.get('model_wrapper_cfg') or {}), 'device_ids': None}
