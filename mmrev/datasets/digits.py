"""scikit-learn's bundled handwritten digits as an image-folder dataset.

The 1797 8x8 grey digits that ship with scikit-learn (no download) are upsampled to
``size`` pixels (bicubic), made RGB and written as PNGs, one folder per class, in the
layout of mmpretrain's ``CustomDataset``::

    OUT/train/<digit>/<index>.png    1437 images
    OUT/test/<digit>/<index>.png     360 images (20 %, stratified by class)

The split is fixed (scikit-learn's ``train_test_split`` with ``random_state=0``): the same
files on every machine.
"""
import os
from typing import Dict, List

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from .folder import prepare_folder

MANIFEST = 'digits.json'
SPLIT = 'train_test_split(test_size=0.2, stratify=target, random_state=0)'


def digits_split(targets: np.ndarray) -> Dict[str, List[int]]:
    """Sample indices of the fixed train/test split (:data:`SPLIT`)."""
    train, test = train_test_split(np.arange(len(targets)), test_size=0.2,
                                   stratify=targets, random_state=0)
    return dict(train=sorted(train), test=sorted(test))


def digit_images() -> np.ndarray:
    """The 1797 digits as (N, 8, 8) uint8 images, strokes bright on black."""
    digits = load_digits()
    return np.round(digits.images * (255 / digits.images.max())).astype(np.uint8)


def _write(out_dir: str, size: int) -> dict:
    targets, images = load_digits().target, digit_images()
    splits = {}
    for split, indices in digits_split(targets).items():
        for index in indices:
            class_dir = os.path.join(out_dir, split, str(targets[index]))
            os.makedirs(class_dir, exist_ok=True)
            image = Image.fromarray(images[index]).resize((size, size), Image.BICUBIC)
            image.convert('RGB').save(os.path.join(class_dir, f'{index:04d}.png'))
        splits[split] = len(indices)
    return dict(splits=splits)


def prepare_digits(out_dir: str, size: int = 32) -> dict:
    """Write the dataset to ``out_dir`` unless it already holds it (see
    :func:`~mmrev.datasets.folder.prepare_folder`); return its manifest."""
    if size < 8:
        raise ValueError(f'size must be at least 8 (the digits are 8x8), got {size}')
    settings = dict(source='sklearn.datasets.load_digits', split=SPLIT, size=size)
    return prepare_folder(out_dir, settings, lambda tmp: _write(tmp, size), MANIFEST)
