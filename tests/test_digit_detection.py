"""The built-in digit detection task: the dataset writer, and a short detector fine-tune
from a classifier checkpoint through tools/train.py (validating) and predict_image.py."""
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmpretrain.registry import MODELS as MMPRETRAIN_MODELS
from PIL import Image
from pycocotools import mask as mask_utils

from mmrev.datasets.digit_detection import CLASSES, prepare_digit_detection

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp('data') / 'digit_detection'
    manifest = prepare_digit_detection(str(root), train_images=60, val_images=20)
    return root, manifest


def load(root, split):
    with open(root / 'annotations' / f'{split}.json') as f:
        return json.load(f)


def test_boxes_and_masks_are_the_pasted_strokes(dataset):
    root, manifest = dataset
    for split in ('train', 'val'):
        coco = load(root, split)
        assert len(coco['images']) == manifest['splits'][split]['images']
        assert [c['name'] for c in coco['categories']] == list(CLASSES)
        for ann in coco['annotations']:
            info = coco['images'][ann['image_id']]
            image = np.asarray(Image.open(root / split / info['file_name']))
            assert image.shape == (info['height'], info['width'], 3) == (128, 128, 3)
            mask = mask_utils.decode(ann['segmentation'])
            ys, xs = np.nonzero(mask)
            x, y, w, h = ann['bbox']
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x, y, x + w, y + h)
            assert ann['area'] == mask.sum() and 8 <= max(w, h) <= 48
            # the strokes contrast with what is around them inside the box
            box = image[int(y):int(y + h), int(x):int(x + w)].mean(-1)
            inside, outside = box[mask[int(y):int(y + h), int(x):int(x + w)] > 0], box[
                mask[int(y):int(y + h), int(x):int(x + w)] == 0]
            assert abs(inside.mean() - outside.mean()) > 20
        # every image has digits, none overlapping
        per_image = Counter(a['image_id'] for a in coco['annotations'])
        assert set(per_image) == set(range(len(coco['images'])))
        for image_id in per_image:
            masks = [mask_utils.decode(a['segmentation']) for a in coco['annotations']
                     if a['image_id'] == image_id]
            assert np.sum(masks, 0).max() <= 1


def test_classes_balanced_and_splits_deterministic(dataset, tmp_path):
    root, manifest = dataset
    counts = Counter(a['category_id'] for a in load(root, 'train')['annotations'])
    assert set(counts) == set(range(1, 11))
    assert max(counts.values()) - min(counts.values()) <= 0.25 * max(counts.values())
    again = tmp_path / 'again'
    prepare_digit_detection(str(again), train_images=60, val_images=20)
    assert load(again, 'val') == load(root, 'val')
    assert (again / 'train' / '00007.jpg').read_bytes() == (
        root / 'train' / '00007.jpg').read_bytes()
    # the same settings: kept; others or a foreign folder: refused, untouched
    assert prepare_digit_detection(str(root), train_images=60, val_images=20) == manifest
    with pytest.raises(FileExistsError, match='another --out'):
        prepare_digit_detection(str(root), train_images=61, val_images=20)
    foreign = tmp_path / 'mine'
    foreign.mkdir()
    with pytest.raises(FileExistsError, match='not written by this tool'):
        prepare_digit_detection(str(foreign))
    assert not list(foreign.iterdir())


def run_tool(*args):
    result = subprocess.run([sys.executable, *map(str, args)], capture_output=True,
                            text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def classifier_checkpoint(path):
    """The weights of the README main job's digits classifier (here untrained, as the
    detector's flow needs only its file): backbone.* and head.* keys."""
    cfg = Config.fromfile(ROOT / 'configs' / 'revvit' / 'revvit-tiny_1xb64_digits.py')
    init_default_scope('mmpretrain')
    torch.manual_seed(0)
    model = MMPRETRAIN_MODELS.build(cfg.model)
    model.init_weights()
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), path)
    return model


def test_detector_fine_tunes_from_the_classifier(dataset, tmp_path):
    root, _ = dataset
    classifier = classifier_checkpoint(tmp_path / 'classifier.pth')
    config = ROOT / 'configs' / 'detection' / 'digits' / \
        'mask-rcnn_revvit-tiny_simplefpn_digits.py'
    options = [f'model.backbone.init_cfg.checkpoint={tmp_path}/classifier.pth',
               f'data_root={root}/', f'train_dataloader.dataset.data_root={root}/',
               f'val_dataloader.dataset.data_root={root}/',
               f'test_dataloader.dataset.data_root={root}/',
               f'val_evaluator.ann_file={root}/annotations/val.json',
               f'test_evaluator.ann_file={root}/annotations/val.json',
               'train_dataloader.batch_size=4', 'train_cfg.max_epochs=4',
               'param_scheduler.0.end=10',  # warm-up of 10 of the 60 iterations
               'train_cfg.val_interval=4', 'default_hooks.checkpoint.interval=4',
               'train_dataloader.num_workers=0', 'train_dataloader.persistent_workers=False',
               'val_dataloader.num_workers=0', 'val_dataloader.persistent_workers=False',
               'default_hooks.logger.interval=5']
    out = run_tool(ROOT / 'tools' / 'train.py', config, '--work-dir', tmp_path,
                   '--cfg-options', *options)
    # the backbone starts from the classifier's weights (its position embedding
    # interpolated from 32x32 to 128x128 inputs), and the detector learns
    assert f'Loads checkpoint by local backend from path: {tmp_path}/classifier.pth' in out
    losses = [float(m) for m in re.findall(r' loss: ([0-9.]+)', out)]
    assert losses[-1] < 0.8 * losses[0], losses
    mAP_50 = [float(m) for m in re.findall(r'coco/bbox_mAP_50: ([0-9.]+)', out)]
    assert mAP_50 and mAP_50[-1] > 0.05, mAP_50
    checkpoint = torch.load(tmp_path / 'epoch_4.pth', weights_only=False)['state_dict']
    trained = checkpoint['backbone.layers.0.f.attn.qkv.weight']
    initial = classifier.state_dict()['backbone.layers.0.f.attn.qkv.weight']
    assert 0 < (trained - initial).abs().max() < initial.abs().max()  # fine-tuned
    run_tool(ROOT / 'tools' / 'analysis_tools' / 'predict_image.py', config,
             tmp_path / 'epoch_4.pth', root / 'val' / '00000.jpg', tmp_path / 'pred.jpg',
             '--score-thr', '0.05')
    assert Image.open(tmp_path / 'pred.jpg').size == (128, 128)
