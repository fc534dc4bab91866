"""Write scikit-learn's bundled handwritten digits as an image-folder dataset.

The 1797 8x8 grey digits that ship with scikit-learn (no download) are upsampled to
``--size`` pixels (bicubic), made RGB and written as PNGs, one folder per class, in the
layout of mmpretrain's ``CustomDataset``::

    OUT/train/<digit>/<index>.png    samples 0 .. 1437 in scikit-learn's order
    OUT/test/<digit>/<index>.png     samples 1438 .. 1796 (the last 20 %)

The split is fixed (no randomness): the same files on every machine. The dataset is written
to a temporary folder and renamed into place, so an interrupted run leaves nothing behind.

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

TEST_FRACTION = 0.2
MANIFEST = 'digits.json'


def digits_split(num_samples: int) -> dict:
    """Indices of the fixed train/test split: the last 20 % is the test set."""
    num_train = num_samples - int(round(num_samples * TEST_FRACTION))
    return dict(train=range(num_train), test=range(num_train, num_samples))


def write_digits(out_dir: str, size: int = 32) -> dict:
    """Write the dataset to ``out_dir`` (which must not exist yet) and return its
    manifest: image size and the number of images per split."""
    digits = load_digits()
    images = np.round(digits.images * (255 / digits.images.max())).astype(np.uint8)
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    tmp_dir = tempfile.mkdtemp(prefix='.digits-', dir=parent)
    try:
        manifest = dict(source='sklearn.datasets.load_digits', size=size,
                        splits={})
        for split, indices in digits_split(len(images)).items():
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
        if manifest.get('size') != size:
            raise FileExistsError(
                f'{out_dir} holds the digits at {manifest.get("size")} px, not {size} px: '
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
