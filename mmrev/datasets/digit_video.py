"""A video classification task from data that ships with scikit-learn: moving digits.

Each clip shows one of scikit-learn's handwritten digits (train clips use the
classification digits' train split, test clips its test split) moving in a straight line
over a crop of one of the photographs of ``sklearn.datasets.load_sample_images``. The
class is the direction of motion, which no single frame shows: a model has to compare
frames. Clips are written as frame folders with mmaction2's rawframe annotation lists::

    OUT/train/<clip>/img_00001.jpg ... img_<T>.jpg, OUT/train_list.txt
    OUT/test/<clip>/img_00001.jpg ...,               OUT/test_list.txt

(``<clip> <number of frames> <label>`` per line). The classes are balanced and
everything follows from ``seed``: the same files on every machine.
"""
import os
from typing import List, Tuple

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits, load_sample_images

from .digit_detection import paste_digit, random_crop
from .digits import SPLIT, digit_images, digits_split
from .folder import prepare_folder

MANIFEST = 'digit_video.json'
DIRECTIONS = {'right': (1, 0), 'left': (-1, 0), 'down': (0, 1), 'up': (0, -1)}
CLASSES = tuple(DIRECTIONS)


def _background(photo: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random square crop of ``photo``, a sixth to a half of its height."""
    h = photo.shape[0]
    return random_crop(photo, size, h // 6, h // 2, rng)


def make_clip(digit: np.ndarray, background: np.ndarray, direction: Tuple[int, int],
              num_frames: int, side: int, speed: float,
              rng: np.random.Generator) -> List[np.ndarray]:
    """``num_frames`` frames of ``digit`` (upsampled to ``side``) moving by ``speed``
    pixels a frame in ``direction`` over ``background``, from a start that keeps it
    inside the frame throughout."""
    size = background.shape[0]
    travel = int(round(speed * (num_frames - 1)))
    dx, dy = direction
    lows = [max(0, -d * travel) for d in (dx, dy)]
    highs = [size - side - max(0, d * travel) for d in (dx, dy)]
    x0, y0 = (int(rng.integers(low, high + 1)) for low, high in zip(lows, highs))
    frames = []
    for t in range(num_frames):
        frame = background.copy()
        step = int(round(speed * t))
        paste_digit(frame, digit, x0 + dx * step, y0 + dy * step, side)
        frames.append(frame)
    return frames


def _write(out_dir: str, settings: dict) -> dict:
    targets, digits = load_digits().target, digit_images()
    photos = list(load_sample_images().images)
    pools = digits_split(targets)
    splits = {}
    for split, offset in (('train', 0), ('test', 1)):
        rng = np.random.default_rng(settings['seed'] + offset)
        count = settings[f'{split}_clips']
        labels = np.resize(np.arange(len(CLASSES)), count)
        rng.shuffle(labels)
        lines = []
        for index, label in enumerate(labels):
            name = f'{split}/clip_{index:05d}'
            os.makedirs(os.path.join(out_dir, name))
            side = int(rng.integers(settings['min_side'], settings['max_side'] + 1))
            frames = make_clip(
                digits[rng.choice(pools['train' if split == 'train' else 'test'])],
                _background(photos[rng.integers(len(photos))], settings['size'], rng),
                DIRECTIONS[CLASSES[label]], settings['num_frames'], side,
                float(rng.uniform(1.0, settings['max_speed'])), rng)
            for t, frame in enumerate(frames):
                Image.fromarray(frame).save(
                    os.path.join(out_dir, name, f'img_{t + 1:05d}.jpg'), quality=95)
            lines.append(f'{name} {len(frames)} {label}\n')
        with open(os.path.join(out_dir, f'{split}_list.txt'), 'w') as f:
            f.writelines(lines)
        splits[split] = count
    return dict(splits=splits, classes=list(CLASSES))


def prepare_digit_video(out_dir: str, train_clips: int = 800, test_clips: int = 200,
                        num_frames: int = 8, size: int = 32, min_side: int = 12,
                        max_side: int = 16, max_speed: float = 2.0, seed: int = 0) -> dict:
    """Write the dataset to ``out_dir`` unless it already holds it with these settings
    (see :func:`~mmrev.datasets.folder.prepare_folder`); return its manifest."""
    if max_side + int(round(max_speed * (num_frames - 1))) > size:
        raise ValueError(f'A {max_side} px digit moving {max_speed} px a frame for '
                         f'{num_frames} frames does not stay inside {size} px frames')
    settings = dict(source='sklearn load_digits moving on load_sample_images',
                    digit_split=SPLIT, train_clips=train_clips, test_clips=test_clips,
                    num_frames=num_frames, size=size, min_side=min_side,
                    max_side=max_side, max_speed=max_speed, seed=seed)
    return prepare_folder(out_dir, settings, lambda tmp: _write(tmp, settings), MANIFEST)
