"""mmrev backbones in mmdet: Mask R-CNN trained, tested and run for inference on a tiny
COCO-format dataset made here, and reversible gradients checked inside the detector."""
import glob
import json
import os.path as osp
import subprocess
import sys

import cv2
import mmdet
import numpy as np
import pytest
import torch
from mmdet.apis import inference_detector, init_detector
from mmdet.models import MaskRCNN
from mmdet.registry import DATASETS, MODELS
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.registry import DefaultScope, init_default_scope
from mmpretrain.registry import MODELS as MMPRETRAIN_MODELS
from torch import nn

from mmrev.converters import convert_slowfast_checkpoint, spec_from_slowfast_cfg
from mmrev.models import RevMViT, RevViT, SimpleFPN, grid_pos_embed
from mmrev.testing import (
    gradient_errors,
    reversible_sequences,
    saved_tensor_bytes,
    set_reversible,
)

from conftest import SLOWFAST_FIXTURES

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = osp.join(REPO, 'configs', 'detection')
CLASSES = ('rectangle', 'ellipse')
IMAGE_SIZES = [(56, 90), (72, 60), (64, 80), (50, 70)]  # (h, w): padded to 32 in batches
FIXTURES = str(SLOWFAST_FIXTURES)

# Per backbone: the full-size config the tiny one inherits from, the tiny backbone (its
# classifier made at 32x32, the detector's at 64x64) and the tiny neck.
TINY = {
    'revvit': dict(
        config='mask-rcnn_revvit-base_simplefpn_lsj-100e_coco.py',
        backbone=dict(type='mmrev.RevViT', arch=dict(
            embed_dims=32, num_layers=2, num_heads=2, feedforward_channels=64),
            drop_rate=0.1, drop_path_rate=0.1),
        neck=dict(in_channels=64, out_channels=32)),
    'revmvit': dict(
        config='mask-rcnn_revmvit-base_fpn_lsj-100e_coco.py',
        backbone=dict(type='mmrev.RevMViT', arch=dict(
            embed_dims=16, num_layers=7, num_heads=1, transition_layers=(1, 3, 5)),
            drop_path_rate=0.1),
        neck=dict(in_channels=[32, 64, 128, 256], out_channels=32)),
}


def draw_instance(image, label, x, y, w, h, colour):
    """Draw a filled shape; returns its COCO polygon."""
    if label == 0:
        corners = np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]], np.int32)
    else:
        corners = cv2.ellipse2Poly((x + w // 2, y + h // 2), (w // 2, h // 2), 0, 0, 360, 15)
    cv2.fillPoly(image, [corners], colour)
    return corners.flatten().astype(float).tolist()


def make_coco(root):
    """A few images with a rectangle and an ellipse each, in COCO instance format."""
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for image_id, (h, w) in enumerate(IMAGE_SIZES):
        image = np.full((h, w, 3), 30, np.uint8)
        for label in range(len(CLASSES)):
            size = rng.integers(18, 28, size=2)
            x = int(rng.integers(0, w // 2 - size[0] // 2)) + label * (w // 2)
            x = min(x, w - int(size[0]) - 1)
            y = int(rng.integers(0, h - size[1] - 1))
            colour = (40, 40, 220) if label == 0 else (40, 200, 40)
            polygon = draw_instance(image, label, x, y, *map(int, size), colour)
            xs, ys = polygon[0::2], polygon[1::2]
            box = [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
            annotations.append(dict(
                id=len(annotations) + 1, image_id=image_id, category_id=label + 1,
                bbox=box, area=box[2] * box[3], segmentation=[polygon], iscrowd=0))
        cv2.imwrite(osp.join(root, 'images', f'{image_id}.png'), image)
        images.append(dict(id=image_id, file_name=f'{image_id}.png', height=h, width=w))
    categories = [dict(id=i + 1, name=name) for i, name in enumerate(CLASSES)]
    with open(osp.join(root, 'annotations.json'), 'w') as f:
        json.dump(dict(images=images, annotations=annotations, categories=categories), f)


TINY_CONFIG = """
_base_ = [{base!r}]
data_root = {root!r}
classes = {classes!r}
model = dict(
    data_preprocessor=dict(batch_augments=None),
    backbone={backbone},
    neck={neck},
    rpn_head=dict(in_channels=32, feat_channels=32),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=32),
        bbox_head=dict(in_channels=32, conv_out_channels=32, fc_out_channels=64,
                       num_classes=2),
        mask_roi_extractor=dict(out_channels=32),
        mask_head=dict(num_convs=2, in_channels=32, conv_out_channels=32, num_classes=2)),
    train_cfg=dict(rpn=dict(sampler=dict(num=64)),
                   rpn_proposal=dict(nms_pre=200, max_per_img=50),
                   rcnn=dict(sampler=dict(num=32))),
    test_cfg=dict(rpn=dict(nms_pre=200, max_per_img=50),
                  rcnn=dict(score_thr=0.0, max_per_img=20)))

resize = dict(type='Resize', scale=(96, 64), keep_ratio=True)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    resize,
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    resize,
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
data = dict(data_root=data_root, ann_file='annotations.json',
            data_prefix=dict(img='images/'), metainfo=dict(classes=classes))
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(times=8, dataset=dict(
        **data, filter_cfg=dict(filter_empty_gt=True, min_size=8),
        pipeline=train_pipeline)))
val_dataloader = dict(num_workers=0, persistent_workers=False,
                      dataset=dict(**data, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations.json')
test_evaluator = val_evaluator

train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters={iters},
                 val_interval=1000)
param_scheduler = []
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(lr=5e-4))
default_hooks = dict(logger=dict(interval=1),
                     checkpoint=dict(by_epoch=False, interval={iters}))
log_processor = dict(by_epoch=False, window_size=1)
randomness = dict(seed=0)
"""


def write_tiny_config(folder, name, data_root, pretrained, iters=20):
    """A tiny Mask R-CNN config inheriting from a full-size one, backbone initialised
    from ``pretrained``."""
    tiny = TINY[name]
    arch = dict(tiny['backbone']['arch'], _delete_=True)
    backbone = dict(tiny['backbone'], arch=arch, img_size=64,
                    init_cfg=dict(type='Pretrained', checkpoint=pretrained,
                                  prefix='backbone.'))
    path = osp.join(folder, f'mask-rcnn_{name}-tiny.py')
    with open(path, 'w') as f:
        f.write(TINY_CONFIG.format(
            base=osp.join(CONFIGS, tiny['config']), root=data_root + '/', classes=CLASSES,
            backbone=backbone, neck=tiny['neck'], iters=iters))
    return path


@pytest.fixture(scope='module')
def coco(tmp_path_factory):
    root = tmp_path_factory.mktemp('coco')
    (root / 'images').mkdir()
    make_coco(str(root))
    return str(root)


def save_classifier(path, backbone, in_channels):
    """An mmpretrain classification checkpoint of ``backbone`` made at 32x32."""
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        classifier = MMPRETRAIN_MODELS.build(dict(
            type='ImageClassifier', backbone=dict(backbone, img_size=32),
            head=dict(type='LinearClsHead', num_classes=10, in_channels=in_channels)))
    classifier.init_weights()
    torch.save(dict(state_dict=classifier.state_dict(), meta=dict()), path)


def make_tiny(name, data_root, folder):
    """(name, tiny config, classification checkpoint its backbone starts from)."""
    checkpoint = osp.join(folder, f'{name}-tiny_cls.pth')
    neck_in = TINY[name]['neck']['in_channels']
    save_classifier(checkpoint, TINY[name]['backbone'],
                    neck_in if isinstance(neck_in, int) else neck_in[-1])
    return name, write_tiny_config(folder, name, data_root, checkpoint), checkpoint


@pytest.fixture(scope='module', params=['revvit', 'revmvit'])
def tiny(request, coco, tmp_path_factory):
    return make_tiny(request.param, coco, str(tmp_path_factory.mktemp(request.param)))


def build_detector(config):
    cfg = Config.fromfile(config)
    init_default_scope('mmdet')
    model = MODELS.build(cfg.model)
    model.init_weights()
    return cfg, model


def test_backbone_initialised_from_classification_checkpoint(tiny):
    _, config, checkpoint = tiny
    _, detector = build_detector(config)
    pretrained = torch.load(checkpoint)['state_dict']
    backbone = detector.backbone.state_dict()
    loaded = [k for k in backbone if 'backbone.' + k in pretrained]
    assert len(loaded) > 10
    for key in loaded:
        if key != 'pos_embed':
            torch.testing.assert_close(backbone[key], pretrained['backbone.' + key],
                                       rtol=0, atol=0, msg=key)
    # the position embedding made at 32x32, interpolated to 64x64
    source = pretrained['backbone.pos_embed']
    src_grid = int(source.shape[1]**0.5)
    expected = grid_pos_embed(source, (src_grid, src_grid), (2 * src_grid, 2 * src_grid))
    torch.testing.assert_close(backbone['pos_embed'], expected.flatten(1, 2))


# SlowFast's tiny fixtures: RevViT with patch 8 (one stride-8 map: the pyramid upsamples
# by 2 only), RevMViT with 3 stages (strides 4, 8, 16: FPN adds 32 and 64 by pooling)
SLOWFAST = {
    'revvit_tiny.pyth': (dict(out_type='featmap'), dict(
        type='mmrev.SimpleFPN', in_channels=128, out_channels=256,
        scale_factors=(2, 1, 0.5, 0.25), num_outs=5)),
    'revmvit_tiny.pyth': (dict(out_type='featmap', out_scales=(0, 1, 2)), dict(
        type='FPN', in_channels=[64, 128, 256], out_channels=256, num_outs=5)),
}


@pytest.mark.parametrize('fixture', list(SLOWFAST))
def test_backbone_initialised_from_slowfast_pyth(fixture):
    path = osp.join(FIXTURES, fixture)
    slowfast = torch.load(path)
    expected = convert_slowfast_checkpoint(slowfast)['state_dict']
    outputs, neck = SLOWFAST[fixture]
    cfg = Config.fromfile(osp.join(CONFIGS, TINY['revvit']['config']))
    cfg.model.backbone = dict(
        spec_from_slowfast_cfg(slowfast['cfg']).backbone, **outputs,
        init_cfg=dict(type='Pretrained', checkpoint=path, prefix='backbone.'))
    cfg.model.neck = neck
    init_default_scope('mmdet')
    detector = MODELS.build(cfg.model)
    detector.init_weights()

    backbone = detector.backbone.state_dict()
    loaded = [k for k in backbone if 'backbone.' + k in expected]
    assert set(backbone) - set(loaded) <= {'norm0.weight', 'norm0.bias', 'norm1.weight',
                                           'norm1.bias'}
    for key in loaded:
        torch.testing.assert_close(backbone[key], expected['backbone.' + key], rtol=0,
                                   atol=0, msg=key)
    with torch.no_grad():
        features = detector.eval().extract_feat(torch.randn(1, 3, 64, 96))
    assert [f.shape[-2:] for f in features] == [(16, 24), (8, 12), (4, 6), (2, 3), (1, 2)]


def detector_gradients(model, data, reversible, seed=0):
    """Gradients of every trainable parameter after one backward of Mask R-CNN's total
    loss (RPN and ROI sampling draw from the seeded global RNG)."""
    set_reversible(model, reversible)
    model.zero_grad(set_to_none=True)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        losses = model.loss(data['inputs'], data['data_samples'])
        loss, _ = model.parse_losses(losses)
        loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters()
            if p.grad is not None}


def saved_bytes(model, data, reversible):
    """Bytes of the tensors autograd keeps for the backward of the detector's loss."""
    set_reversible(model, reversible)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return saved_tensor_bytes(
            model, lambda: model.loss(data['inputs'], data['data_samples']))


def test_reversible_gradients_match_ordinary_inside_detector(tiny):
    cfg, model = build_detector(tiny[1])
    model.train()
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    data = model.data_preprocessor(pseudo_collate([dataset[0], dataset[1]]), training=True)
    assert data['inputs'].shape[-2:] == (96, 96)  # resized to 60x96 and 77x64, padded
    # reversible backprop is on in detector training: fewer activations kept
    assert saved_bytes(model, data, reversible=True) < saved_bytes(model, data, False)

    expected = detector_gradients(model, data, reversible=False)
    actual = detector_gradients(model, data, reversible=True)
    errors = gradient_errors(actual, expected)
    # a bias added to every key shifts each query's logits equally: its exact gradient
    # is zero, and the computed one rounding noise, compared to the largest gradient
    invariant = {k for k in errors if k.endswith('.norm_k.bias')}
    relative = {k: v for k, v in errors.items() if k not in invariant}
    assert max(relative.values()) <= 1e-5, relative
    scale = max(g.abs().max() for g in expected.values())
    for name in invariant:
        assert (actual[name] - expected[name]).abs().max() <= 1e-5 * scale, name
    backbone = [k for k in actual if k.startswith('backbone.')]
    assert len(backbone) == sum(1 for _ in model.backbone.parameters())
    assert all(actual[k].abs().sum() > 0 for k in set(backbone) - invariant)


def run_tool(script, *args, tools=osp.join(REPO, 'tools')):
    result = subprocess.run([sys.executable, osp.join(tools, script), *args], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def logged_losses(work_dir):
    [scalars] = glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))
    with open(scalars) as f:
        return [json.loads(line)['loss'] for line in f if '"loss"' in line]


def test_train_test_and_inference(coco, tmp_path):
    """tools/train.py, tools/test.py and inference_detector with the RevMViT + FPN
    detector (RevViT + SimpleFPN trains, validates and predicts in
    test_digit_detection.py)."""
    _, config, _ = make_tiny('revmvit', coco, str(tmp_path))
    work_dir = str(tmp_path / 'work')
    run_tool('train.py', config, '--work-dir', work_dir, '--no-validate')
    losses = logged_losses(work_dir)
    assert len(losses) == 20 and np.isfinite(losses).all()
    assert np.mean(losses[-4:]) < 0.8 * np.mean(losses[:4]), losses
    checkpoint = osp.join(work_dir, 'iter_20.pth')

    metrics_file = str(tmp_path / 'metrics.json')
    run_tool('test.py', config, checkpoint, '--work-dir', work_dir, '--out', metrics_file,
             '--out-item', 'metrics')
    with open(metrics_file) as f:
        metrics = json.load(f)
    for metric in ('bbox', 'segm'):
        assert 0 <= metrics[f'coco/{metric}_mAP'] <= 1, metrics

    detector = init_detector(config, checkpoint, device='cpu')
    image = osp.join(coco, 'images', '1.png')
    result = inference_detector(detector, image)
    predictions = result.pred_instances
    assert len(predictions) > 0
    assert predictions.masks.shape[1:] == IMAGE_SIZES[1]
    assert set(predictions.labels.tolist()) <= {0, 1}
    height, width = IMAGE_SIZES[1]
    boxes = predictions.bboxes
    assert (boxes >= 0).all() and (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()


def test_stock_mmdet_tools_through_custom_imports(coco, tmp_path):
    """mmdet's own tools/train.py (shipped in its wheel) imports mmrev from the config."""
    _, config, _ = make_tiny('revmvit', coco, str(tmp_path))
    work_dir = str(tmp_path / 'work')
    run_tool('train.py', config, '--work-dir', work_dir, '--cfg-options',
             'train_cfg.max_iters=2', 'default_hooks.checkpoint.interval=2',
             tools=osp.join(osp.dirname(mmdet.__file__), '.mim', 'tools'))
    assert len(logged_losses(work_dir)) == 2
    assert osp.isfile(osp.join(work_dir, 'iter_2.pth'))


def test_simple_fpn_levels_and_errors():
    neck = SimpleFPN(in_channels=16, out_channels=8, scale_factors=(4, 2, 1, 0.5),
                     num_outs=5)
    outs = neck((torch.randn(2, 16, 3, 5), ))
    assert [o.shape for o in outs] == [(2, 8, 12, 20), (2, 8, 6, 10), (2, 8, 3, 5),
                                       (2, 8, 1, 2), (2, 8, 1, 1)]
    upsampled = [m for m in neck.rescales[0] if isinstance(m, nn.ConvTranspose2d)]
    assert [m.out_channels for m in upsampled] == [8, 4]  # ViTDet: halved from the input
    narrow = SimpleFPN(in_channels=16, out_channels=8, upsample_channels=4)
    upsampled = [m for m in narrow.rescales[0] if isinstance(m, nn.ConvTranspose2d)]
    assert [m.out_channels for m in upsampled] == [4, 2]
    assert narrow.lateral_convs[0].conv.in_channels == 2
    assert [o.shape for o in narrow((torch.randn(2, 16, 3, 5), ))] == [
        o.shape for o in outs]
    with pytest.raises(ValueError, match='single map'):
        neck((torch.randn(2, 16, 4, 4), torch.randn(2, 16, 2, 2)))
    with pytest.raises(ValueError, match='16 input channels'):
        neck((torch.randn(2, 8, 4, 4), ))
    with pytest.raises(ValueError, match='powers of two'):
        SimpleFPN(16, 8, scale_factors=(3, 1))
    with pytest.raises(ValueError, match='decrease'):
        SimpleFPN(16, 8, scale_factors=(1, 2))
    with pytest.raises(ValueError, match='num_outs'):
        SimpleFPN(16, 8, num_outs=3)


@pytest.mark.parametrize('config,arch', [
    ('mask-rcnn_revvit-base_simplefpn_lsj-100e_coco.py', RevViT.arch_zoo['base']),
    ('mask-rcnn_revmvit-base_fpn_lsj-100e_coco.py', RevMViT.arch_zoo['base'])])
def test_full_size_configs_build(config, arch):
    cfg = Config.fromfile(osp.join(CONFIGS, config))
    assert cfg.model.backbone.init_cfg == dict(
        type='Pretrained', checkpoint=cfg.pretrained, prefix='backbone.')
    assert cfg.model.data_preprocessor.pad_size_divisor == 32
    init_default_scope('mmdet')
    model = MODELS.build(cfg.model)  # no init_weights: nothing is loaded
    assert isinstance(model, MaskRCNN) and model.backbone.arch_settings == arch
    assert all(stack.reversible for stack in reversible_sequences(model))
    with torch.no_grad():
        features = model.eval().extract_feat(torch.randn(1, 3, 64, 96))
    assert [f.shape for f in features] == [
        (1, 256, 64 // stride, 96 // stride) for stride in (4, 8, 16, 32)] + [(1, 256, 1, 2)]
