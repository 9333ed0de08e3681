"""Sealed checkpoints: a crafted pickle that would write a file is refused unread."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

from prunesearch.cluster.sealed import KEY_ENV, KEY_FILE_ENV, seal, unseal
from prunesearch.methods.errors import RunStateError


class _WritesAFile:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (Path.write_text, (self.target, "pwned"))


@pytest.fixture(autouse=True)
def _key_file(tmp_path, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.setenv(KEY_FILE_ENV, str(tmp_path / "keys" / "checkpoint.key"))


def test_round_trip_and_the_key_file_is_private(tmp_path) -> None:
    data = pickle.dumps({"generation": 3})
    assert pickle.loads(unseal(seal(data), source="state")) == {"generation": 3}
    key_file = tmp_path / "keys" / "checkpoint.key"
    assert key_file.stat().st_mode & 0o777 == 0o600


def test_a_crafted_pickle_is_never_unpickled(tmp_path) -> None:
    marker = tmp_path / "marker"
    crafted = pickle.dumps(_WritesAFile(marker))
    for blob in (crafted, b"prunesearch-sealed-v1\n" + b"\0" * 32 + crafted):
        with pytest.raises(RunStateError, match="never loaded"):
            unseal(blob, source="state/driver.pkl")
    assert not marker.exists()


def test_a_file_sealed_with_another_key_or_tampered_is_refused(tmp_path, monkeypatch) -> None:
    blob = seal(pickle.dumps([1, 2, 3]))
    tampered = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(RunStateError, match="not sealed with this user's"):
        unseal(tampered, source="state")
    monkeypatch.setenv(KEY_ENV, os.urandom(32).hex())
    with pytest.raises(RunStateError, match="not sealed with this user's"):
        unseal(blob, source="state")
