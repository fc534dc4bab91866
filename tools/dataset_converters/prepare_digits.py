"""Write scikit-learn's bundled handwritten digits as an image-folder dataset.

The 1797 8x8 grey digits that ship with scikit-learn (no download) are upsampled to
``--size`` pixels (bicubic), made RGB and written as PNGs, one folder per class, in the
layout of mmpretrain's ``CustomDataset``::

    OUT/train/<digit>/<index>.png    1437 images
    OUT/test/<digit>/<index>.png     360 images (20 %, stratified by class)

The split is fixed (scikit-learn's ``train_test_split`` with ``random_state=0``): the same
files on every machine. The dataset is written to a temporary folder and renamed into
place, so an interrupted run leaves nothing behind.

Usage: python tools/dataset_converters/prepare_digits.py [--out data/digits] [--size 32]
"""
import argparse
import json
import os
import shutil
import tempfile

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

MANIFEST = 'digits.json'
SPLIT = 'train_test_split(test_size=0.2, stratify=target, random_state=0)'


def digits_split(targets: np.ndarray) -> dict:
    """Sample indices of the fixed train/test split (:data:`SPLIT`)."""
    train, test = train_test_split(np.arange(len(targets)), test_size=0.2,
                                   stratify=targets, random_state=0)
    return dict(train=sorted(train), test=sorted(test))


def write_digits(out_dir: str, size: int = 32) -> dict:
    """Write the dataset to ``out_dir`` (which must not exist yet) and return its
    manifest: image size and the number of images per split."""
    digits = load_digits()
    images = np.round(digits.images * (255 / digits.images.max())).astype(np.uint8)
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    tmp_dir = tempfile.mkdtemp(prefix='.digits-', dir=parent)
    try:
        manifest = dict(source='sklearn.datasets.load_digits', split=SPLIT, size=size,
                        splits={})
        for split, indices in digits_split(digits.target).items():
            for index in indices:
                label = str(digits.target[index])
                class_dir = os.path.join(tmp_dir, split, label)
                os.makedirs(class_dir, exist_ok=True)
                image = Image.fromarray(images[index]).resize((size, size),
                                                              Image.BICUBIC)
                image.convert('RGB').save(os.path.join(class_dir, f'{index:04d}.png'))
            manifest['splits'][split] = len(indices)
        with open(os.path.join(tmp_dir, MANIFEST), 'w') as f:
            json.dump(manifest, f, indent=2)
        os.chmod(tmp_dir, 0o755)  # mkdtemp makes it private
        os.replace(tmp_dir, out_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    return manifest


def prepare_digits(out_dir: str, size: int = 32) -> dict:
    """Write the dataset unless ``out_dir`` already holds it; never touch a folder
    that this script did not write."""
    manifest_path = os.path.join(out_dir, MANIFEST)
    if os.path.exists(manifest_path):
        with open(manifest_path) as f:
            manifest = json.load(f)
        if (manifest.get('size'), manifest.get('split')) != (size, SPLIT):
            raise FileExistsError(
                f'{out_dir} holds the digits at {manifest.get("size")} px, split by '
                f'{manifest.get("split")}, not at {size} px split by {SPLIT}: '
                f'pass another --out or remove {out_dir}')
        return manifest
    if os.path.exists(out_dir):
        raise FileExistsError(
            f'{out_dir} exists and was not written by this script (no {MANIFEST}): '
            f'pass another --out or remove it')
    return write_digits(out_dir, size)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', default='data/digits', help='output folder')
    parser.add_argument('--size', type=int, default=32, help='image side in pixels')
    args = parser.parse_args()
    if args.size < 8:
        parser.error(f'--size must be at least 8 (the digits are 8x8), got {args.size}')
    try:
        manifest = prepare_digits(args.out, args.size)
    except FileExistsError as error:
        parser.exit(1, f'error: {error}\n')
    print(f'digits ({manifest["size"]}x{manifest["size"]} RGB) in {args.out}: '
          f'{manifest["splits"]["train"]} train, {manifest["splits"]["test"]} test images')


if __name__ == '__main__':
    main()
