# SlowFast's Rev-ViT / Rev-MViT ImageNet solver (configs/ImageNet/REV_*.yaml).
# SlowFast's BASE_LR is 5e-4 per 512 images (2.5e-4 per 256 for Rev-MViT-B) and is scaled
# linearly with the number of machines; for a total batch of 2048 (8 GPUs x 256) that is
# 2e-3. With `--auto-scale-lr`, mmengine rescales it to the real total batch size.
optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05),
    # SOLVER.ZERO_WD_1D_PARAM: no weight decay on biases and norm weights
    paramwise_cfg=dict(flat_decay_mult=0.0),
    # SOLVER.CLIP_GRAD_L2NORM
    clip_grad=dict(max_norm=1.0),
)

# linear warm-up from 1e-8 (WARMUP_START_LR; ratio 1e-8 / 5e-4) over 70 epochs, then
# cosine to 1e-6 (COSINE_AFTER_WARMUP, COSINE_END_LR); both updated every iteration
param_scheduler = [
    dict(type='LinearLR', start_factor=2e-5, by_epoch=True, begin=0, end=70,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=230, eta_min=1e-6, by_epoch=True, begin=70,
         end=300, convert_to_iter_based=True),
]

train_cfg = dict(by_epoch=True, max_epochs=300, val_interval=10)
val_cfg = dict()
test_cfg = dict()

auto_scale_lr = dict(base_batch_size=2048)
