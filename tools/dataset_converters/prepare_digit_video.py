"""Write the built-in video task: scikit-learn's digits moving over photographs.

Frame folders and mmaction2 rawframe lists of train/test clips whose class is the
direction of motion (see :mod:`mmrev.datasets.digit_video`), from data that ships with
scikit-learn. Written atomically; an existing dataset with the same settings is kept,
any other folder refused.

Usage: python tools/dataset_converters/prepare_digit_video.py [--out data/digit_video]
"""
import argparse

from mmrev.datasets.digit_video import prepare_digit_video


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', default='data/digit_video', help='output folder')
    parser.add_argument('--train-clips', type=int, default=800)
    parser.add_argument('--test-clips', type=int, default=200)
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    try:
        manifest = prepare_digit_video(args.out, args.train_clips, args.test_clips,
                                       seed=args.seed)
    except (FileExistsError, ValueError) as error:
        parser.exit(1, f'error: {error}\n')
    print(f'moving digits ({manifest["num_frames"]} frames of {manifest["size"]}x'
          f'{manifest["size"]}, classes {", ".join(manifest["classes"])}) in {args.out}: '
          f'{manifest["splits"]["train"]} train, {manifest["splits"]["test"]} test clips')


if __name__ == '__main__':
    main()
