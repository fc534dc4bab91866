"""Crash-safe file writing: a file is whole or absent, never half written."""
import os
import os.path as osp
import tempfile
from typing import Callable, Dict, List


def write_atomically(writers: Dict[str, Callable]) -> None:
    """Write each file through ``writers[path](binary_file)`` into a temporary file
    beside it, flushed to disk, and move them all into place only once every one is
    written; on any error (or a kill) the destinations keep what they held. Folders are
    created as needed. Raises the ``OSError`` of a failed write."""
    temporaries: List[str] = []
    try:
        for path, write in writers.items():
            folder = osp.dirname(osp.abspath(path))
            os.makedirs(folder, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f'.{osp.basename(path)}.',
                                       suffix='.tmp')
            temporaries.append(tmp)
            with os.fdopen(fd, 'wb') as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o666 & ~_umask())
        for tmp, path in zip(temporaries, writers):
            os.replace(tmp, path)
    finally:
        for tmp in temporaries:
            if osp.exists(tmp):
                os.remove(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
