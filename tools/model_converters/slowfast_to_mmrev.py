r"""Convert an official (or your own) SlowFast RevViT / RevMViT checkpoint for mmrev.

    python tools/model_converters/slowfast_to_mmrev.py REV_VIT_S.pyth \
        checkpoints/revvit-small_slowfast_in1k.pth

writes the mmpretrain checkpoint and, when the checkpoint carries SlowFast's config,
an mmpretrain config for the exact model beside it (``revvit-small_slowfast_in1k.py``).
"""
import argparse
import json
import sys

from mmrev.converters import SlowFastConversionError, convert_slowfast_file


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument('src', help='SlowFast checkpoint (.pyth) or state_dict')
    parser.add_argument('dst', help='mmpretrain checkpoint to write (.pth)')
    parser.add_argument('--force', action='store_true',
                        help='overwrite DST (and its .py config) if they exist')
    parser.add_argument(
        '--arch', type=parse_arch,
        help='backbone arch, a name (small, base, ...) or a JSON dict; needed only '
        'when the checkpoint has no SlowFast cfg and its weights match no named arch')
    return parser.parse_args()


def parse_arch(text: str):
    return json.loads(text) if text.lstrip().startswith('{') else text


def main():
    args = parse_args()
    try:
        result = convert_slowfast_file(args.src, args.dst, force=args.force,
                                       arch=args.arch, progress=True, log=print)
    except SlowFastConversionError as e:
        print(f'error: {e}', file=sys.stderr)
        sys.exit(1)
    print(f'\n{result.spec.kind} (arch {result.spec.backbone["arch"]}), '
          f'{result.num_tensors} tensors -> {result.checkpoint}')
    if result.config:
        print(f'config -> {result.config}')


if __name__ == '__main__':
    main()
