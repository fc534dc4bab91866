"""Write the built-in digit detection task: scikit-learn's digits pasted on photographs.

COCO-format train/val splits with boxes and instance masks (see
:mod:`mmrev.datasets.digit_detection`), from data that ships with scikit-learn. Written
atomically; an existing dataset with the same settings is kept, any other folder refused.

Usage: python tools/dataset_converters/prepare_digit_detection.py [--out data/digit_detection]
"""
import argparse

from mmrev.datasets.digit_detection import prepare_digit_detection


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', default='data/digit_detection', help='output folder')
    parser.add_argument('--train-images', type=int, default=1200)
    parser.add_argument('--val-images', type=int, default=200)
    parser.add_argument('--size', type=int, default=128, help='image side in pixels')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    try:
        manifest = prepare_digit_detection(args.out, args.train_images, args.val_images,
                                           args.size, seed=args.seed)
    except (FileExistsError, ValueError) as error:
        parser.exit(1, f'error: {error}\n')
    splits = manifest['splits']
    print(f'digit detection ({manifest["size"]}x{manifest["size"]}) in {args.out}: '
          + ', '.join(f'{name} {s["images"]} images / {s["instances"]} digits'
                      for name, s in splits.items()))


if __name__ == '__main__':
    main()
