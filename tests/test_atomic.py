"""Nothing lost: a writer killed mid-write leaves the old file or the new one, never half a file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from logmac.format import UniformFormat
from logmac.format import artifact as art
from logmac.format.atomic import atomic_write_bytes, atomic_write_text

# The child writes version 0 once, says so, then rewrites the same file with versions 1, 2, ... until killed.
# Each version is a few MB, so a kill almost always lands inside a write.
WRITER = """
import sys
import numpy as np
from logmac.format import UniformFormat
from logmac.format import artifact as art

def version(v):
    codes = np.full((64, 65536), v % 256, dtype=np.int16)
    layer = art.QuantizedLayer("big", "linear", UniformFormat(8, symmetric=False), codes, np.full(64, 0.5),
                               zero_point=np.zeros(64, np.int32))
    return art.Artifact({"big": layer}, meta={"version": v})

art.save(version(0), sys.argv[1])
print("ready", flush=True)
v = 1
while True:
    art.save(version(v), sys.argv[1])
    v += 1
"""


def _kill_while_writing(target: Path, delay: float) -> None:
    child = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        time.sleep(delay)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()


@pytest.mark.parametrize("delay", [0.1, 0.6])
def test_a_killed_artifact_writer_leaves_a_whole_file(tmp_path, delay):
    target = tmp_path / "model.lmq"
    _kill_while_writing(target, delay)
    loaded = art.load(target)  # raises ArtifactError on a torn file
    v = loaded.meta["version"]
    assert np.all(loaded.layers["big"].codes == v % 256)
    leftovers = [p.name for p in tmp_path.iterdir() if p != target]
    assert all(name.startswith(".model.lmq.") and name.endswith(".tmp") for name in leftovers), leftovers


def test_a_failed_write_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = atomic_write_text(tmp_path / "results.csv", "old\n")

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_bytes(target, b"new")
    assert target.read_text() == "old\n"
    assert sorted(tmp_path.iterdir()) == [target]


def test_permissions_follow_the_umask_and_survive_a_rewrite(tmp_path):
    target = atomic_write_bytes(tmp_path / "a.bin", b"1")
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask
    target.chmod(0o640)
    atomic_write_bytes(target, b"2")
    assert target.stat().st_mode & 0o777 == 0o640 and target.read_bytes() == b"2"


def test_artifact_save_goes_through_the_atomic_writer(tmp_path):
    codes = np.zeros((2, 3), np.int16)
    layer = art.QuantizedLayer("l", "linear", UniformFormat(4), codes, np.ones(2))
    path = art.save(art.Artifact({"l": layer}), tmp_path / "sub" / "m.lmq")
    assert art.load(path).layers["l"].codes.shape == (2, 3) and sorted(os.listdir(path.parent)) == ["m.lmq"]
