"""Safe file writes and the one cache root (the lowest layer that writes files).

Every writer of the project goes through :func:`atomic_write` (or its helpers): the content is
written to a temp file in the destination's folder, optionally fsync'd, then
renamed over the destination, so a reader -- another evaluator actor, a resumed driver --
sees the old file or the new one, never a mix. This module is the only one of ``cluster/``,
``methods/`` and ``search/`` that renames files (``tests/methods_tests/test_io.py`` walks the
source to keep it so).

``durable=True`` (the default) also fsyncs the file and its folder: use it for anything a crash
must not lose (checkpoints, the journal's companions, the run directory's reports, exported
networks). Caches that are cheap to rebuild pass ``durable=False``.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_path",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "cache_root",
    "fsync_dir",
    "rename_dir",
]


def cache_root() -> Path:
    """Writable cache folder: ``$PRUNESEARCH_CACHE`` if set, else ``~/.cache/prunesearch``.

    Decoded images, trained base models and latency-table entries live below it.
    """
    env = os.environ.get("PRUNESEARCH_CACHE")
    return Path(env).expanduser() if env else Path("~/.cache/prunesearch").expanduser()


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """fsync a folder, so that a rename inside it survives a crash (no-op where unsupported)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, durable: bool = True, unique: bool = False,
                before_replace: Callable[[Path], None] | None = None) -> Iterator[Path]:
    """A temp path to write the new content to; it replaces ``path`` when the block ends.

    For writers that want a file name (``fig.savefig``, ``torch.save``, ``np.save``). On an
    exception inside the block the temp file is removed and ``path`` is left as it was.

    Args:
        path: The destination file (its folder is created).
        durable: fsync the temp file before the rename and the folder after it.
        unique: give the temp file a unique name (several processes may write ``path`` at
            once, e.g. a cache shared by evaluator actors); otherwise it is ``.<name>.tmp``,
            which a single writer reuses and the storage mirror skips.
        before_replace: Called with the temp path just before the rename (tests use it to
            kill a process mid-write).

    Yields:
        The temp file's path, in ``path``'s folder (writers that pick a format by suffix,
        such as ``savefig``, must be told the format).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if unique:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        tmp = Path(name)
    else:
        tmp = path.with_name(f".{path.name}.tmp")
    try:
        yield tmp
        if durable:
            _fsync_file(tmp)
        if before_replace is not None:
            before_replace(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)


def atomic_write(path: str | os.PathLike[str], write: Callable[[Any], None], *,
                 binary: bool = True, durable: bool = True, unique: bool = False,
                 before_replace: Callable[[Path], None] | None = None) -> Path:
    """Write ``path`` atomically through ``write(handle)`` (an open temp file).

    Args:
        path: Destination file.
        write: Called once with the open temp file (``"wb"``, or ``"w"`` UTF-8 text).
        binary: Open the temp file in binary mode.
        durable: fsync file and folder (see the module docstring).
        unique: See :func:`atomic_path`.
        before_replace: See :func:`atomic_path`.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    with atomic_path(path, durable=durable, unique=unique,
                     before_replace=before_replace) as tmp:
        with open(tmp, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as fh:
            write(fh)
    return path


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, durable: bool = True,
                       unique: bool = False,
                       before_replace: Callable[[Path], None] | None = None) -> Path:
    """:func:`atomic_write` of a complete byte string."""
    return atomic_write(path, lambda fh: fh.write(data), durable=durable, unique=unique,
                        before_replace=before_replace)


def atomic_write_text(path: str | os.PathLike[str], text: str, *, durable: bool = True,
                      unique: bool = False) -> Path:
    """:func:`atomic_write` of UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"), durable=durable, unique=unique)


def atomic_write_json(path: str | os.PathLike[str], value: Any, *, indent: int | None = 1,
                      durable: bool = True, unique: bool = False, **dumps: Any) -> Path:
    """:func:`atomic_write` of ``json.dumps(value)`` plus a final newline."""
    return atomic_write_text(path, json.dumps(value, indent=indent, **dumps) + "\n",
                             durable=durable, unique=unique)


def rename_dir(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
    """Rename a directory in one atomic step (same file system) and make the rename durable
    (``--overwrite`` moves an old run aside and back with it)."""
    source, target = Path(source), Path(target)
    os.rename(source, target)
    fsync_dir(target.parent)
