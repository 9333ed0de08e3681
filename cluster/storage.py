"""Mirroring a run directory to a pyarrow filesystem URI, and fetching it back for ``resume``.

The journal and the state are always written locally first; with ``storage`` set
(``file://``, ``s3://``, ``gs://``, any URI :func:`pyarrow.fs.FileSystem.from_uri` accepts) the
driver mirrors the run directory after every generation. The copy order keeps the mirror
resumable if the driver dies half-way through a mirror: the journal first, then models and
reports, the state last (the state never refers to results the mirrored journal lacks; a journal
ahead of the state is normal, resume answers those candidates from it).
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from pathlib import Path

import pyarrow.fs as pafs

__all__ = ["fetch_run", "is_uri", "mirror_run", "mirror_uri"]

# Files that only ever appear under one name once written (model weights by candidate id):
# copied when missing remotely; everything else is re-copied when its size or mtime changed.
_IMMUTABLE_DIRS = ("models",)


def is_uri(text: str) -> bool:
    """True for ``scheme://...`` strings (as opposed to local paths)."""
    return "://" in str(text)


def mirror_uri(storage: str, run_name: str) -> str:
    """The URI a run named ``run_name`` is mirrored to under the ``storage`` base URI.

    Runs sharing one ``storage`` setting land in separate folders, as Ray Tune's experiments do.
    """
    if not run_name or "/" in run_name:
        raise ValueError(f"run_name must be a non-empty folder name, got {run_name!r}")
    return storage.rstrip("/") + "/" + run_name


def _filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    try:
        return pafs.FileSystem.from_uri(uri)
    except (ValueError, OSError) as exc:
        raise ValueError(f"storage URI {uri!r} is not usable: {exc}") from None


def _local_files(run_dir: Path) -> list[str]:
    files = []
    for path in sorted(run_dir.rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(run_dir).as_posix()
        # Temp files of atomic writes in progress are never mirrored.
        if any(part.startswith(".") for part in rel.split("/")) or rel.endswith(".tmp"):
            continue
        files.append(rel)

    def order(rel: str) -> tuple[int, str]:
        if rel == "journal.jsonl":
            return (0, rel)
        if rel.startswith("state/"):
            return (3, rel)
        if rel.startswith("models/"):
            return (1, rel)
        return (2, rel)

    return sorted(files, key=order)


def _copy_file(local: Path, fs: pafs.FileSystem, dest: str, *, atomic: bool) -> None:
    fs.create_dir(posixpath.dirname(dest), recursive=True)
    target = posixpath.join(posixpath.dirname(dest), "." + posixpath.basename(dest) + ".tmp") \
        if atomic else dest
    with open(local, "rb") as src, fs.open_output_stream(target) as out:
        while chunk := src.read(1 << 20):
            out.write(chunk)
    if atomic:
        fs.move(target, dest)


def mirror_run(run_dir: Path, uri: str, *, log: Callable[[str], None] | None = None) -> int:
    """Bring the mirror at ``uri`` up to date with the local ``run_dir``.

    Model files that left the Pareto front (deleted locally) are deleted from the mirror too.

    Args:
        run_dir: the local run directory.
        uri: destination folder URI (see :func:`mirror_uri`).
        log: receives a line per deletion problem (never raises for a single stale file).

    Returns:
        The number of files copied.
    """
    run_dir = Path(run_dir)
    fs, base = _filesystem(uri)
    fs.create_dir(base, recursive=True)
    remote = {}
    for info in fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True)):
        if info.type == pafs.FileType.File:
            remote[posixpath.relpath(info.path, base)] = info
    copied = 0
    local_files = _local_files(run_dir)
    for rel in local_files:
        path = run_dir / rel
        info = remote.get(rel)
        if info is not None:
            stat = path.stat()
            if rel.split("/")[0] in _IMMUTABLE_DIRS and info.size == stat.st_size:
                continue
            if (info.size == stat.st_size and info.mtime_ns is not None
                    and info.mtime_ns >= stat.st_mtime_ns):
                continue
        _copy_file(path, fs, posixpath.join(base, rel), atomic=rel.startswith("state/"))
        copied += 1
    local_set = set(local_files)
    for rel in remote:
        if rel.split("/")[0] in _IMMUTABLE_DIRS and rel not in local_set:
            try:
                fs.delete_file(posixpath.join(base, rel))
            except OSError as exc:  # a stale model file is harmless; never stop the search
                if log is not None:
                    log(f"storage: could not delete {rel} from {uri}: {exc}")
    return copied


def fetch_run(uri: str, local_dir: Path) -> Path:
    """Copy a mirrored run directory from ``uri`` into ``local_dir`` (created; files replaced).

    Raises:
        FileNotFoundError: ``uri`` holds no run directory (no ``config.yaml``).
        ValueError: the URI's filesystem cannot be opened.
    """
    fs, base = _filesystem(uri)
    info = fs.get_file_info(posixpath.join(base, "config.yaml"))
    if info.type != pafs.FileType.File:
        raise FileNotFoundError(f"storage URI {uri!r} holds no prunesearch run (no config.yaml)")
    local_dir = Path(local_dir)
    local_dir.mkdir(parents=True, exist_ok=True)
    for entry in fs.get_file_info(pafs.FileSelector(base, recursive=True)):
        if entry.type != pafs.FileType.File:
            continue
        rel = posixpath.relpath(entry.path, base)
        if any(part.startswith(".") for part in rel.split("/")):
            continue
        dest = local_dir / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        with fs.open_input_stream(entry.path) as src, open(dest, "wb") as out:
            while chunk := src.read(1 << 20):
                out.write(chunk)
    return local_dir
