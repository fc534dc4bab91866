# Runtime shared by mmrev's classification configs: mmpretrain's registries by default,
# mmrev's models (type='mmrev.RevViT', 'mmrev.RevMViT') through the plugin import.
default_scope = 'mmpretrain'
custom_imports = dict(imports=['mmrev'], allow_failed_imports=False)

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=100),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='mmrev.AtomicCheckpointHook', interval=1, max_keep_ckpts=3),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='VisualizationHook', enable=False),
)

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'),
)

vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='UniversalVisualizer', vis_backends=vis_backends)

log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=None, deterministic=False)

# --resume continues the interrupted run exactly (the generators' states are saved)
custom_hooks = [dict(type='mmrev.RandomStateHook')]
