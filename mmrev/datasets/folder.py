"""A dataset folder written once, atomically, and recognised by its manifest."""
import json
import os
import shutil
import tempfile
from typing import Callable

MANIFEST = 'manifest.json'


def prepare_folder(out_dir: str, settings: dict, write: Callable[[str], dict],
                   manifest_name: str = MANIFEST) -> dict:
    """The manifest of the dataset in ``out_dir``, written by ``write(tmp_dir)`` (which
    returns what to record besides ``settings``) unless ``out_dir`` already holds it.

    The dataset is written into a temporary folder beside ``out_dir`` and renamed into
    place, so an interrupted run leaves nothing behind. A folder with another dataset's
    manifest, or without one, is never touched: ``FileExistsError`` says what to do.
    """
    manifest_path = os.path.join(out_dir, manifest_name)
    if os.path.exists(manifest_path):
        with open(manifest_path) as f:
            manifest = json.load(f)
        found = {key: manifest.get(key) for key in settings}
        if found != settings:
            raise FileExistsError(f'{out_dir} holds a dataset made with {found}, not '
                                  f'{settings}: pass another --out or remove {out_dir}')
        return manifest
    if os.path.exists(out_dir):
        raise FileExistsError(f'{out_dir} exists and was not written by this tool (no '
                              f'{manifest_name}): pass another --out or remove it')
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    tmp_dir = tempfile.mkdtemp(prefix='.dataset-', dir=parent)
    try:
        manifest = dict(settings, **write(tmp_dir))
        with open(os.path.join(tmp_dir, manifest_name), 'w') as f:
            json.dump(manifest, f, indent=2)
        os.chmod(tmp_dir, 0o755)  # mkdtemp makes it private
        os.replace(tmp_dir, out_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    return manifest
