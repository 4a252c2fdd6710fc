from __future__ import annotations

from pathlib import Path

import pytest
import torch

from crossres.checkpoint_io import AtomicCheckpointIO


def test_crash_while_saving_keeps_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"step": 1, "w": torch.ones(3)}, path)

    def crash(obj: object, f: object) -> None:
        f.write(b"partial")  # type: ignore[attr-defined]
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        io.save_checkpoint({"step": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    loaded = io.load_checkpoint(path, weights_only=True)
    assert loaded["step"] == 1 and torch.equal(loaded["w"], torch.ones(3))
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]


def test_temporaries_of_killed_writers_are_removed_by_the_next_save(tmp_path: Path) -> None:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(done.stdout)  # that process has exited: its pid runs nothing (or something else, rarely)
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        folder = tmp_path / "checkpoints"
        folder.mkdir()
        stale = folder / f".last.ckpt.{dead_pid}.tmp"  # what a SIGKILL during torch.save leaves
        busy = folder / f".last.ckpt.{alive.pid}.tmp"  # a writer still running
        other = folder / f".epoch=1.ckpt.{dead_pid}.tmp"  # another checkpoint's: cleaned by that one's save
        for p in (stale, busy, other):
            p.write_bytes(b"partial")
        AtomicCheckpointIO().save_checkpoint({"step": 3}, folder / "last.ckpt")
        names = sorted(p.name for p in folder.iterdir())
        if _running(dead_pid):
            pytest.skip(f"pid {dead_pid} was reused by another process")
        assert names == sorted([busy.name, other.name, "last.ckpt"])
    finally:
        alive.kill()
        alive.wait()


def _running(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
