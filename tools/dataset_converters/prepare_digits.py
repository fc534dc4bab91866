"""Write scikit-learn's bundled handwritten digits as an image-folder dataset.

1437 train and 360 test images (a fixed stratified split), ``--size`` pixels, RGB, one
folder per class (mmpretrain's ``CustomDataset``); see :mod:`mmrev.datasets.digits`.
Written atomically; an existing dataset with the same settings is kept, any other folder
refused.

Usage: python tools/dataset_converters/prepare_digits.py [--out data/digits] [--size 32]
"""
import argparse

from mmrev.datasets.digits import prepare_digits


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
