"""Layer-wise learning-rate decay: the layer depths of both backbones, mmpretrain's
constructor on classifiers and mmrev's on detectors and the detection configs."""
import os.path as osp

import pytest
import torch
from mmdet.registry import MODELS as MMDET_MODELS
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmpretrain.registry import MODELS as MMPRETRAIN_MODELS

from mmrev.models import RevMViT, RevViT

CONFIGS = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'configs', 'detection')
TINY_VIT = dict(type='mmrev.RevViT', img_size=32, arch=dict(
    embed_dims=16, num_layers=4, num_heads=2, feedforward_channels=32, patch_size=8))
TINY_MVIT = dict(type='mmrev.RevMViT', img_size=64, arch=dict(
    embed_dims=8, num_layers=7, num_heads=1, transition_layers=(1, 3, 5)))
RATE, LR, WD = 0.5, 1e-3, 0.05


def test_revvit_layer_depths():
    model = RevViT(**{k: v for k, v in TINY_VIT.items() if k != 'type'})
    depth = model.get_layer_depth
    assert depth('patch_embed.projection.weight') == (0, 6)
    assert depth('pos_embed') == (0, 6)
    assert depth('layers.0.f.attn.qkv.weight') == (1, 6)
    assert depth('layers.3.g.mlp.fc2.bias') == (4, 6)
    assert depth('norm.weight') == (5, 6)
    assert depth('backbone.layers.2.f.norm.bias', 'backbone.') == (3, 6)
    assert depth('head.fc.weight', 'backbone.') == (5, 6)


def test_revmvit_layer_depths_follow_slowfast_layer_numbering():
    model = RevMViT(**{k: v for k, v in TINY_MVIT.items() if k != 'type'})
    depths = {name: model.get_layer_depth(name)[0] for name, _ in model.named_parameters()}
    assert model.get_layer_depth('pos_embed') == (0, 9)
    # SlowFast layer i (transitions at 1, 3, 5) has depth i + 1
    assert depths['stages.0.blocks.0.f.attn.q.weight'] == 1
    assert depths['stages.1.transition.pre_q_fuse.mlp.fc1.weight'] == 2
    assert depths['stages.1.blocks.0.g.mlp.fc1.weight'] == 3
    assert depths['stages.2.transition.res_proj.weight'
                  if 'stages.2.transition.res_proj.weight' in depths
                  else 'stages.2.transition.f.norm.weight'] == 4
    assert depths['stages.3.transition.g.norm.weight'] == 6
    assert depths['stages.3.blocks.0.f.norm.weight'] == 7
    assert depths['norm3.weight'] == 8
    layers = {d for n, d in depths.items() if n.startswith('stages.')}
    assert layers == set(range(1, 8))


def expected_groups(depth_of, names, num_depths):
    return {name: LR * RATE**(num_depths - 1 - depth_of(name)) for name in names}


def check_groups(optim_wrapper, model, depth_of, num_depths, no_decay):
    """Every parameter's lr follows its depth; weight decay off where ``no_decay``."""
    groups = {g['param_name']: g for g in optim_wrapper.optimizer.param_groups}
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(groups) == names
    expected = expected_groups(depth_of, names, num_depths)
    for name, group in groups.items():
        assert group['lr'] == pytest.approx(expected[name]), name
        wd = 0. if no_decay(name, model.get_parameter(name)) else WD
        assert group['weight_decay'] == pytest.approx(wd), name
    # one lr per depth: not every block in one bucket (ViTDet's constructor on mmrev)
    backbone = [n for n in names if n.startswith('backbone.')]
    assert len({groups[n]['lr'] for n in backbone}) == len({depth_of(n) for n in backbone})
    assert len({depth_of(n) for n in backbone}) >= num_depths - 1


def vitdet_no_decay(name, param):
    """ViTDet's weight decay: none on the backbone blocks' norms and position embeddings."""
    return any(key in name for key in ('.f.norm.', '.g.norm.', '.attn.norm_', 'pos_embed'))


def flat_no_decay(name, param):
    return param.ndim == 1 or 'pos_embed' in name


PARAMWISE = dict(layer_decay_rate=RATE, flat_decay_mult=0.,
                 custom_keys={'pos_embed': dict(decay_mult=0.)})


@pytest.mark.parametrize('backbone, channels', [(TINY_VIT, 32), (TINY_MVIT, 128)])
def test_mmpretrain_constructor_on_classifiers(backbone, channels):
    init_default_scope('mmpretrain')
    model = MMPRETRAIN_MODELS.build(dict(
        type='ImageClassifier', backbone=backbone,
        head=dict(type='LinearClsHead', num_classes=3, in_channels=channels)))
    wrapper = build_optim_wrapper(model, dict(
        optimizer=dict(type='AdamW', lr=LR, weight_decay=WD),
        constructor='LearningRateDecayOptimWrapperConstructor', paramwise_cfg=PARAMWISE))
    _, num_depths = model.get_layer_depth('head.fc.weight')
    check_groups(wrapper, model, lambda n: model.get_layer_depth(n)[0], num_depths,
                 flat_no_decay)


def tiny_detector(config, backbone, neck):
    cfg = Config.fromfile(osp.join(CONFIGS, config))
    cfg.model.backbone = dict(backbone, out_type='featmap',
                              **({'out_scales': (0, 1, 2, 3)} if 'RevMViT' in
                                 backbone['type'] else {}))
    cfg.model.neck.update(neck)
    init_default_scope('mmdet')
    return cfg, MMDET_MODELS.build(cfg.model)


REVVIT_CONFIG = 'mask-rcnn_revvit-base_simplefpn_lsj-100e_coco.py'
REVMVIT_CONFIGS = ['mask-rcnn_revmvit-base_fpn_lsj-100e_coco.py',
                   'mask-rcnn_revmvit-base_fpn_ms-crop-3x_coco.py']


def detector_optim_wrapper(cfg, model, **paramwise):
    optim = cfg.optim_wrapper.to_dict()
    optim.update(type='OptimWrapper', optimizer=dict(optim['optimizer'], lr=LR, weight_decay=WD),
                 paramwise_cfg=dict(optim['paramwise_cfg'], **paramwise))
    return build_optim_wrapper(model, optim)


def test_revvit_detection_config_decays_the_backbone_layer_by_layer():
    cfg, model = tiny_detector(REVVIT_CONFIG, TINY_VIT, dict(in_channels=32))
    assert cfg.optim_wrapper.constructor == 'mmrev.LayerDecayOptimWrapperConstructor'
    assert cfg.optim_wrapper.paramwise_cfg.layer_decay_rate == 0.7
    wrapper = detector_optim_wrapper(cfg, model, layer_decay_rate=RATE)
    _, num_depths = model.backbone.get_layer_depth('')
    depth = lambda n: model.backbone.get_layer_depth(n, 'backbone.')[0]  # noqa: E731
    check_groups(wrapper, model, depth, num_depths, vitdet_no_decay)
    groups = {g['param_name']: g['lr'] for g in wrapper.optimizer.param_groups}
    assert all(lr == pytest.approx(LR) for n, lr in groups.items()
               if not n.startswith('backbone.'))  # neck and heads at the full rate


@pytest.mark.parametrize('config', REVMVIT_CONFIGS)
def test_revmvit_in_a_detector_decays_with_slowfast_layers(config):
    # MViTv2's recipes use no layer decay: the configs leave it out, the constructor
    # applies it to a RevMViT detector when asked
    cfg, model = tiny_detector(config, TINY_MVIT, dict(in_channels=[16, 32, 64, 128]))
    assert 'constructor' not in cfg.optim_wrapper
    cfg.optim_wrapper.constructor = 'mmrev.LayerDecayOptimWrapperConstructor'
    wrapper = detector_optim_wrapper(cfg, model, layer_decay_rate=RATE)
    _, num_depths = model.backbone.get_layer_depth('')
    depth = lambda n: model.backbone.get_layer_depth(n, 'backbone.')[0]  # noqa: E731
    no_decay = vitdet_no_decay if 'lsj' in config else (
        lambda name, param: 'pos_embed' in name or 'norm' in name.split('.')[-2])
    check_groups(wrapper, model, depth, num_depths, no_decay)


def test_constructor_refuses_models_without_layer_depths():
    init_default_scope('mmdet')
    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match='get_layer_depth'):
        build_optim_wrapper(model, dict(
            optimizer=dict(type='AdamW', lr=LR, weight_decay=WD), paramwise_cfg=PARAMWISE,
            constructor='mmrev.LayerDecayOptimWrapperConstructor'))
