"""Sealed checkpoints: a pickle that is loaded only if this user's key signed it.

The generational driver checkpoints the whole pymoo algorithm (its RNG, archive, surrogate,
portfolio credit): that state is a graph of numpy, scikit-learn and pymoo objects, and the
exact-resume contract needs all of it, so it is pickled. Unpickling runs code chosen by
whoever wrote the file, so a run directory from someone else (or a tampered ``resume s3://``
mirror) must never reach ``pickle.loads``. Every checkpoint is therefore sealed with an
HMAC-SHA256 over its bytes, keyed by a secret kept outside the run directory; a file whose
seal does not verify is refused before a single byte is unpickled.

The key: ``PRUNESEARCH_CHECKPOINT_KEY`` (64 hex digits) if set, else the file
``$PRUNESEARCH_CHECKPOINT_KEY_FILE`` or ``~/.config/prunesearch/checkpoint.key``, created with
mode 0600 on first use. To resume a run on another machine (a cluster head), give that
machine the same key (the variable, or a copy of the file).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from prunesearch.methods.errors import RunStateError

__all__ = ["KEY_ENV", "KEY_FILE_ENV", "seal", "unseal"]

KEY_ENV = "PRUNESEARCH_CHECKPOINT_KEY"
KEY_FILE_ENV = "PRUNESEARCH_CHECKPOINT_KEY_FILE"
_MAGIC = b"prunesearch-sealed-v1\n"
_DIGEST = hashlib.sha256().digest_size


def _key() -> bytes:
    text = os.environ.get(KEY_ENV)
    if text:
        try:
            key = bytes.fromhex(text.strip())
        except ValueError:
            raise RunStateError(f"{KEY_ENV} must be 64 hex digits") from None
        if len(key) < 16:
            raise RunStateError(f"{KEY_ENV} must be 64 hex digits (at least 32)")
        return key
    path = Path(os.environ.get(KEY_FILE_ENV) or "~/.config/prunesearch/checkpoint.key")
    path = path.expanduser()
    if not path.exists():
        _create_key_file(path)
    try:
        return bytes.fromhex(path.read_text().strip())
    except ValueError:
        raise RunStateError(f"checkpoint key file {path} is damaged (expected 64 hex "
                            "digits)") from None


def _create_key_file(path: Path) -> None:
    """Create the key file with its content in one step: written to a private temp file, then
    hard-linked into place, which fails if another process got there first (its key wins, and
    nobody ever reads a half-written key)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, secrets.token_hex(32).encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)


def seal(data: bytes) -> bytes:
    """``data`` with a header and this user's HMAC in front."""
    tag = hmac.new(_key(), data, hashlib.sha256).digest()
    return _MAGIC + tag + data


def unseal(blob: bytes, *, source: str) -> bytes:
    """The sealed bytes, if the seal verifies with this user's key.

    Raises:
        RunStateError: the file is not a sealed checkpoint, or another key (another user or
            machine, or a tampered file) sealed it.
    """
    if not blob.startswith(_MAGIC) or len(blob) < len(_MAGIC) + _DIGEST:
        raise RunStateError(f"{source} is not a sealed prunesearch checkpoint (damaged, or "
                            "not written by prunesearch); it is never loaded")
    tag = blob[len(_MAGIC):len(_MAGIC) + _DIGEST]
    data = blob[len(_MAGIC) + _DIGEST:]
    if not hmac.compare_digest(tag, hmac.new(_key(), data, hashlib.sha256).digest()):
        raise RunStateError(f"{source} was not sealed with this user's checkpoint key "
                            f"(tampered, or written elsewhere: set {KEY_ENV} to that "
                            "machine's key to resume it); it is never loaded")
    return data
