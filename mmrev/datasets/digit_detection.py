"""A detection and instance-segmentation task from data that ships with scikit-learn.

scikit-learn's handwritten digits (the classification digits' fixed split: train images
use its train digits, val images its test digits) are pasted at several scales onto crops
of the two photographs of ``sklearn.datasets.load_sample_images`` (a Chinese temple, a
flower). Each digit's strokes give its instance mask, and the mask its box. The images
and COCO-format annotations (RLE masks) are written as::

    OUT/train/<id>.jpg, OUT/val/<id>.jpg
    OUT/annotations/train.json, OUT/annotations/val.json

Every image holds 1 to ``max_digits`` digits that do not overlap; the classes are
balanced (each appears equally often, up to one, in each split). The stroke colour is
light on dark backgrounds and dark on light ones. Everything follows from ``seed``: the
same files on every machine.
"""
import json
import os
from typing import Dict, List, Tuple

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils
from sklearn.datasets import load_digits, load_sample_images

from .digits import SPLIT, digit_images, digits_split
from .folder import prepare_folder

MANIFEST = 'digit_detection.json'
CLASSES = tuple(str(d) for d in range(10))
STROKE_THRESHOLD = 0.5  # of the digit's upsampled intensity: inside the mask


def random_crop(photo: np.ndarray, size: int, min_side: int, max_side: int,
                rng: np.random.Generator) -> np.ndarray:
    """A random square crop of ``photo``, of a side in ``[min_side, max_side)``,
    resized to ``size``."""
    h, w = photo.shape[:2]
    side = int(rng.integers(min_side, max_side))
    y, x = int(rng.integers(h - side)), int(rng.integers(w - side))
    return np.asarray(Image.fromarray(photo[y:y + side, x:x + side]).resize(
        (size, size), Image.BILINEAR))


def _background(photos: List[np.ndarray], size: int, rng: np.random.Generator) -> np.ndarray:
    """A random square crop of a photo (a quarter to two thirds of its height), resized
    to ``size`` and flipped at random."""
    photo = photos[rng.integers(len(photos))]
    h = photo.shape[0]
    crop = random_crop(photo, size, h // 4, 2 * h // 3, rng)
    return crop[:, ::-1].copy() if rng.random() < 0.5 else crop.copy()


def _place(boxes: List[Tuple[int, int, int, int]], side: int, size: int,
           rng: np.random.Generator, tries: int = 50):
    """A top-left corner for a ``side`` square that keeps 2 px off every box so far."""
    for _ in range(tries):
        x, y = (int(v) for v in rng.integers(0, size - side + 1, 2))
        if all(x + side + 2 <= bx or bx + bw + 2 <= x or y + side + 2 <= by
               or by + bh + 2 <= y for bx, by, bw, bh in boxes):
            return x, y
    return None


def paste_digit(image: np.ndarray, digit: np.ndarray, x: int, y: int,
                side: int) -> np.ndarray:
    """Blend an 8x8 digit upsampled to ``side`` into ``image`` at (x, y), in place; the
    stroke colour contrasts with the background under it. Returns the stroke mask of
    the whole image."""
    alpha = np.asarray(Image.fromarray(digit).resize((side, side), Image.BICUBIC),
                       np.float32) / 255
    alpha = np.clip(alpha, 0, 1)[..., None]
    region = image[y:y + side, x:x + side].astype(np.float32)
    under_strokes = region[alpha[..., 0] > STROKE_THRESHOLD]
    colour = 20. if under_strokes.mean() > 127 else 235.
    image[y:y + side, x:x + side] = np.round(region * (1 - alpha) + colour * alpha)
    mask = np.zeros(image.shape[:2], np.uint8)
    mask[y:y + side, x:x + side] = alpha[..., 0] > STROKE_THRESHOLD
    return mask


def _annotation(mask: np.ndarray, label: int, image_id: int, ann_id: int) -> dict:
    ys, xs = np.nonzero(mask)
    x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    rle = mask_utils.encode(np.asfortranarray(mask))
    rle['counts'] = rle['counts'].decode()
    return dict(id=ann_id, image_id=image_id, category_id=label + 1,
                bbox=[float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                area=float(mask.sum()), segmentation=rle, iscrowd=0)


def make_split(num_images: int, digit_pool: List[int], size: int, min_side: int,
               max_side: int, max_digits: int, seed: int) -> Tuple[List[np.ndarray], dict]:
    """The images and COCO annotations of one split, drawn from the digits
    ``digit_pool`` (indices into scikit-learn's digits)."""
    rng = np.random.default_rng(seed)
    photos = list(load_sample_images().images)
    targets, digits = load_digits().target, digit_images()
    by_class = {c: [i for i in digit_pool if targets[i] == c] for c in range(10)}
    counts = rng.integers(1, max_digits + 1, num_images)
    labels = np.resize(rng.permutation(10), counts.sum())  # balanced classes
    rng.shuffle(labels)
    images, annotations, next_label = [], [], 0
    for image_id, count in enumerate(counts):
        image, boxes = _background(photos, size, rng), []
        for _ in range(count):
            side = int(rng.integers(min_side, max_side + 1))
            corner = _place(boxes, side, size, rng)
            if corner is None:
                continue
            label = int(labels[next_label])
            next_label += 1
            mask = paste_digit(image, digits[rng.choice(by_class[label])], *corner, side)
            boxes.append((*corner, side, side))
            annotations.append(_annotation(mask, label, image_id, len(annotations) + 1))
        images.append(image)
    coco = dict(
        images=[dict(id=i, file_name=f'{i:05d}.jpg', height=size, width=size)
                for i in range(num_images)],
        annotations=annotations,
        categories=[dict(id=i + 1, name=name) for i, name in enumerate(CLASSES)])
    return images, coco


def _write(out_dir: str, settings: dict) -> dict:
    pools = digits_split(load_digits().target)
    os.makedirs(os.path.join(out_dir, 'annotations'))
    splits: Dict[str, dict] = {}
    for split, pool, offset in (('train', pools['train'], 0), ('val', pools['test'], 1)):
        images, coco = make_split(
            settings[f'{split}_images'], pool, settings['size'], settings['min_side'],
            settings['max_side'], settings['max_digits'], settings['seed'] + offset)
        os.makedirs(os.path.join(out_dir, split))
        for info, image in zip(coco['images'], images):
            Image.fromarray(image).save(os.path.join(out_dir, split, info['file_name']),
                                        quality=95)
        with open(os.path.join(out_dir, 'annotations', f'{split}.json'), 'w') as f:
            json.dump(coco, f)
        splits[split] = dict(images=len(images), instances=len(coco['annotations']))
    return dict(splits=splits)


def prepare_digit_detection(out_dir: str, train_images: int = 1200, val_images: int = 200,
                            size: int = 128, min_side: int = 20, max_side: int = 48,
                            max_digits: int = 4, seed: int = 0) -> dict:
    """Write the dataset to ``out_dir`` unless it already holds it with these settings
    (see :func:`~mmrev.datasets.folder.prepare_folder`); return its manifest."""
    if not 8 <= min_side <= max_side <= size:
        raise ValueError(f'Need 8 <= min_side <= max_side <= size, got {min_side}, '
                         f'{max_side}, {size}')
    settings = dict(source='sklearn load_digits on load_sample_images', digit_split=SPLIT,
                    train_images=train_images, val_images=val_images, size=size,
                    min_side=min_side, max_side=max_side, max_digits=max_digits, seed=seed)
    return prepare_folder(out_dir, settings, lambda tmp: _write(tmp, settings), MANIFEST)
