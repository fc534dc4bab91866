"""Video RevMViT in mmaction2: SlowFast's video checkpoints converted and reproduced,
gradients and memory of the 3-D backbone, the built-in moving-digits task, and
mmaction2's train/test tools and inference API on mmrev configs."""
import json
import re
import subprocess
import sys
from functools import partial
from pathlib import Path

import cv2
import mmaction
import numpy as np
import pytest
import torch
import yaml
from mmaction.apis import inference_recognizer, init_recognizer
from mmaction.registry import MODELS
from mmengine.registry import init_default_scope

from mmrev.converters import (
    SlowFastConversionError,
    convert_slowfast_file,
    spec_from_slowfast_cfg,
    spec_from_state_dict,
)
from mmrev.datasets.digit_video import CLASSES, prepare_digit_video
from mmrev.models import RevMViT
from mmrev.testing import backprop_gradients, gradient_errors, saved_tensor_bytes

from conftest import SLOWFAST_FIXTURES

ROOT = Path(__file__).parents[1]
FIXTURE = SLOWFAST_FIXTURES / 'revmvit_video_tiny.pyth'
MANIFEST = SLOWFAST_FIXTURES / 'REV_MVIT_B_16x4_CONV_keys.txt'
TINY = dict(embed_dims=8, num_layers=5, num_heads=1, transition_layers=[1, 3],
            mlp_ratio=1., kv_stride=(1, 2, 2), patch_kernel=(3, 4, 4),
            patch_stride=(2, 4, 4), patch_padding=(1, 0, 0))


@pytest.fixture(scope='module')
def io():
    return torch.load(SLOWFAST_FIXTURES / 'revmvit_video_tiny_io.pt', weights_only=True)


@pytest.fixture(scope='module')
def converted(tmp_path_factory):
    dst = tmp_path_factory.mktemp('video') / 'revmvit_video_tiny.pth'
    return convert_slowfast_file(FIXTURE, dst)


def test_converted_fixture_reproduces_slowfast(converted, io):
    assert converted.config.endswith('revmvit_video_tiny.py')
    model = init_recognizer(converted.config, converted.checkpoint, device='cpu')
    assert model.backbone.grid_dims == 3 and model.backbone.arch_settings['qkv_bias'] is False
    with torch.no_grad():
        features = model.backbone(io['input'])
        torch.testing.assert_close(features[0].mean(dim=(2, 3, 4)), io['features'],
                                   rtol=0, atol=1e-5)
        logits = model.cls_head(features)
        torch.testing.assert_close(logits, io['logits'], rtol=0, atol=1e-5)
        # mmaction2's prediction of one clip is SlowFast's softmax output
        inputs = io['input'][:, None]  # (N, num_clips, C, T, H, W)
        samples = model.predict(inputs, [_sample() for _ in range(len(inputs))])
        scores = torch.stack([s.pred_score for s in samples])
        torch.testing.assert_close(scores, io['output'], rtol=0, atol=1e-6)
        model.double()
        features = model.backbone(io['input'].double())
        torch.testing.assert_close(model.cls_head(features), io['logits_fp64'], rtol=0,
                                   atol=1e-10)


def _sample():
    from mmaction.structures import ActionDataSample
    return ActionDataSample().set_gt_label(0)


def test_written_config_has_slowfasts_test_protocol(converted):
    text = Path(converted.config).read_text()
    assert "default_scope = 'mmaction'" in text and "type='Recognizer3D'" in text
    assert 'clip_len=4' in text and 'frame_interval=4' in text and 'num_clips=5' in text
    assert 'scale=(-1, 256)' in text and "type='CenterCrop', crop_size=64" in text
    assert 'mean=[114.75, 114.75, 114.75]' in text and "average_clips='prob'" in text


def test_cls_embed_on_in_cfg_is_decided_from_the_weights():
    checkpoint = torch.load(FIXTURE, weights_only=True)
    cfg = yaml.safe_load(checkpoint['cfg'])
    cfg['MVIT']['CLS_EMBED_ON'] = True  # as SlowFast's shipped Kinetics config says
    text = yaml.safe_dump(cfg)
    spec = spec_from_slowfast_cfg(text, checkpoint['model_state'])
    assert spec.video.num_clips == 5 and spec.backbone['arch']['qkv_bias'] is False
    with pytest.raises(SlowFastConversionError, match='class token'):
        spec_from_slowfast_cfg(text, dict(checkpoint['model_state'],
                                          cls_token=torch.zeros(1, 1, 32)))


def test_video_architecture_without_cfg_is_inferred(io):
    state = torch.load(FIXTURE, weights_only=True)['model_state']
    spec = spec_from_state_dict(state, 'RevMViT')
    arch = spec.backbone['arch']
    assert (arch['pre_q_fusion'], arch['patch_kernel'], arch['sep_pos_embed']) == (
        'avg', (3, 7, 7), True)
    assert spec.backbone['num_frames'] == 4 and spec.backbone['img_size'] == 64


def manifest_state_dict():
    with open(MANIFEST) as f:
        rows = [line.rstrip('\n').split('\t') for line in f]
    assert rows[-1] == ['total_params', '34963120']
    return {key: torch.zeros(json.loads(shape)) for key, shape, _ in rows[:-1]}


def test_full_size_manifest_converts_and_loads_strictly():
    from mmrev.converters import convert_state_dict
    state = manifest_state_dict()
    assert len(state) == 295
    spec = spec_from_state_dict(state, 'RevMViT')
    assert spec.backbone['arch'] == 'video-base' and spec.backbone['num_frames'] == 16
    init_default_scope('mmaction')
    model = MODELS.build(dict(
        type='Recognizer3D', backbone=dict(type='mmrev.RevMViT', arch='video-base',
                                           out_type='featmap'),
        cls_head=dict(type='MViTHead', in_channels=1536, num_classes=400,
                      with_cls_token=False)))
    assert sum(p.numel() for p in model.parameters()) == 34_963_120
    model.load_state_dict(convert_state_dict(state), strict=True)


def is_softmax_invariant(name):
    return name.endswith('.norm_k.bias')


@pytest.mark.parametrize('sep_pos_embed', [True, False])
def test_video_gradients_match_ordinary_backprop(sep_pos_embed):
    torch.manual_seed(0)
    model = RevMViT(arch=dict(TINY, sep_pos_embed=sep_pos_embed), num_frames=4,
                    img_size=32, drop_path_rate=0.3, out_type='featmap',
                    out_scales=(0, 1, 2)).train()
    x = torch.randn(2, 3, 4, 32, 32)
    assert [tuple(o.shape) for o in model(x)] == [(2, 16, 2, 8, 8), (2, 32, 2, 4, 4),
                                                 (2, 64, 2, 2, 2)]
    expected = backprop_gradients(model, x, reversible=False)
    actual = backprop_gradients(model, x, reversible=True)
    errors = gradient_errors(actual, expected)
    relative = {k: v for k, v in errors.items() if not is_softmax_invariant(k)}
    assert max(relative.values()) <= 1e-5, relative
    scale = max(g.abs().max() for g in expected.values())
    for name in set(errors) - set(relative):
        assert (actual[name] - expected[name]).abs().max() <= 1e-5 * scale
    assert {'pos_embed_spatial', 'pos_embed_temporal'} <= set(actual) or not sep_pos_embed


def test_video_memory_constant_in_depth_and_other_clip_sizes():
    x = torch.randn(1, 3, 4, 32, 32)
    for reversible in (True, False):
        models = [RevMViT(arch=dict(TINY, num_layers=n), num_frames=4, img_size=32,
                          reversible=reversible).train() for n in (5, 11)]
        shallow, deep = (saved_tensor_bytes(m, partial(m, x)) for m in models)
        assert shallow == deep if reversible else deep > shallow
    model = RevMViT(arch=TINY, num_frames=4, img_size=32, out_type='featmap').eval()
    assert model(torch.randn(1, 3, 8, 64, 32))[0].shape == (1, 64, 4, 4, 2)
    with pytest.raises(ValueError, match=r'clips \(B, C, T, H, W\)'):
        model(torch.randn(1, 3, 32, 32))


def test_image_model_with_3d_knobs_is_refused():
    with pytest.raises(ValueError, match='one per axis'):
        RevMViT(arch=dict(TINY, patch_kernel=4))


# ---------------------------------------------------------------- built-in moving digits

@pytest.fixture(scope='module')
def digit_video(tmp_path_factory):
    root = tmp_path_factory.mktemp('data') / 'digit_video'
    manifest = prepare_digit_video(str(root), train_clips=48, test_clips=16)
    return root, manifest


def test_moving_digits_move_in_their_class_direction(digit_video):
    root, manifest = digit_video
    assert manifest['classes'] == list(CLASSES)
    lines = (root / 'train_list.txt').read_text().splitlines()
    labels = [int(line.split()[2]) for line in lines]
    assert len(lines) == 48 and np.bincount(labels).tolist() == [12] * 4
    for line in lines[:12]:
        name, frames, label = line.split()
        images = [cv2.imread(str(root / name / f'img_{t:05d}.jpg')).astype(float).mean(-1)
                  for t in range(1, int(frames) + 1)]
        # the digit is where the frames change; it moves the way its class says
        first, last = (np.abs(images[i] - np.median(images, 0)) for i in (0, -1))
        centroids = [np.array(np.nonzero(d > 40)).mean(1) for d in (first, last)]
        dy, dx = centroids[1] - centroids[0]
        direction = CLASSES[int(label)]
        moved = {'right': dx, 'left': -dx, 'down': dy, 'up': -dy}[direction]
        assert moved > 3 and moved > 2 * min(abs(dx), abs(dy)), (direction, dx, dy)


def run_tool(*args, cwd=ROOT):
    result = subprocess.run([sys.executable, *map(str, args)], capture_output=True,
                            text=True, cwd=cwd)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


STOCK_TOOLS = Path(mmaction.__file__).parent / '.mim' / 'tools'  # in mmaction2's wheel


def test_stock_mmaction_tools_train_and_test_on_moving_digits(digit_video, tmp_path):
    """mmaction2's own tools/train.py and tools/test.py with the digits video config
    (mmrev imported through custom_imports)."""
    root, _ = digit_video
    config = ROOT / 'configs' / 'revmvit_video' / 'revmvit-tiny_1xb16-8x1x1_digit-video-rgb.py'
    options = [f'data_root={root}/', f'train_dataloader.dataset.ann_file={root}/train_list.txt',
               f'train_dataloader.dataset.data_prefix.img={root}/',
               f'val_dataloader.dataset.ann_file={root}/test_list.txt',
               f'val_dataloader.dataset.data_prefix.img={root}/',
               f'test_dataloader.dataset.ann_file={root}/test_list.txt',
               f'test_dataloader.dataset.data_prefix.img={root}/',
               'train_cfg.max_epochs=2', 'train_cfg.val_interval=2',
               'train_dataloader.num_workers=0', 'train_dataloader.persistent_workers=False',
               'val_dataloader.num_workers=0', 'val_dataloader.persistent_workers=False',
               'test_dataloader.num_workers=0', 'test_dataloader.persistent_workers=False',
               'default_hooks.checkpoint.interval=2', 'custom_hooks.0.interval=3']
    out = run_tool(STOCK_TOOLS / 'train.py', config, '--work-dir', tmp_path, '--cfg-options',
                   *options)
    losses = [float(m) for m in re.findall(r' loss: ([0-9.]+)', out)]
    recon_errors = [float(m) for m in re.findall(r'rev/recon_err: (\S+?),?\s', out)]
    assert losses and len(recon_errors) == 2 and max(recon_errors) < 1e-4
    checkpoint = (tmp_path / 'last_checkpoint').read_text().strip()
    out = run_tool(STOCK_TOOLS / 'test.py', config, checkpoint, '--work-dir', tmp_path,
                   '--cfg-options', *options)
    top1 = [float(m) for m in re.findall(r'acc/top1: ([0-9.]+)', out)]
    assert len(top1) == 1 and 0 <= top1[0] <= 1


def test_inference_recognizer_on_a_video_file(converted, tmp_path):
    video = tmp_path / 'clip.mp4'
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*'mp4v'), 30, (80, 64))
    rng = np.random.default_rng(0)
    for _ in range(24):
        writer.write(rng.integers(0, 255, (64, 80, 3), dtype=np.uint8))
    writer.release()
    model = init_recognizer(converted.config, converted.checkpoint, device='cpu')
    result = inference_recognizer(model, str(video))
    assert result.pred_score.shape == (10, )
    torch.testing.assert_close(result.pred_score.sum(), torch.tensor(1.))
