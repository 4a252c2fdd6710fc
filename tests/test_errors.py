"""Errors a person can read: bad input ends a command with one line naming the file or option, and exit status 2."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from .conftest import REPO, TINY_DATA, TINY_TRAINER

COMMANDS = ("fit", "validate", "test", "predict", "report", "export", "align")


# ------------------------------------------------------------------------------------------------ --help
def _python(code: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120, env=env)


@pytest.mark.parametrize("argv", [["--help"], ["report", "--help"], ["export", "--help"], ["align", "--help"], []])
def test_help_is_fast_and_imports_neither_torch_nor_lightning(argv: list[str]) -> None:
    code = (
        "import sys, time\nstart = time.perf_counter()\nfrom crossres.entry import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit as e:\n    code = e.code\nelse:\n    code = 0\n"
        "print('EXIT', code, time.perf_counter() - start, 'lightning' in sys.modules, 'torch' in sys.modules)"
    )
    result = _python(code)
    exit_line = result.stdout.strip().splitlines()[-1].split()
    assert exit_line[0] == "EXIT", result.stderr[-2000:]
    assert exit_line[1] == ("2" if not argv else "0")
    assert float(exit_line[2]) < 5
    assert exit_line[3:] == ["False", "False"]  # lightning, torch
    if argv in (["--help"], []):
        listing = result.stdout + result.stderr
        for command in COMMANDS:
            assert f"  {command} " in listing, command


def test_console_help_lists_every_command_quickly() -> None:
    start = time.perf_counter()
    env = os.environ | {"PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "crossres", "--help"], capture_output=True, text=True, cwd=REPO, timeout=120, env=env
    )
    assert result.returncode == 0
    assert time.perf_counter() - start < 5
    for command in COMMANDS:
        assert command in result.stdout


# ------------------------------------------------------------------------------------ fit/validate/test
MODEL = ["--model=Baseline", "--model.backbone_kwargs={width: 8}", "--model.embedding_size=16"]


def _bad_input(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run ``crossres <args>`` in-process; it must exit with status 2 and one ``error:`` line. Returns that line."""
    from crossres.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(args)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err[-3000:]
    line = next(line for line in err.splitlines() if line.startswith(f"crossres {args[0]}: error: "))
    return line


def _tiny(tmp_path: Path, *args: str) -> list[str]:
    return [f"--runs_dir={tmp_path / 'runs'}", *TINY_TRAINER, *TINY_DATA, *MODEL, *args]


@pytest.mark.parametrize(
    "bad, option",
    [
        ("--data.protocols=[-2]", "data.protocols"),
        ("--data.protocols=[64]", "data.protocols"),
        ("--data.degradation.lr_sizes=[-3]", "data.degradation.lr_sizes"),
        ("--data.degradation.lr_sizes=[64]", "data.degradation.lr_sizes"),
    ],
)
def test_bad_sizes_name_the_option(tmp_path: Path, capsys: pytest.CaptureFixture[str], bad: str, option: str) -> None:
    line = _bad_input(["fit", *_tiny(tmp_path), bad], capsys)
    assert option in line and bad.split("=", 1)[1] in line


def test_empty_config_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("\n")
    line = _bad_input(["fit", "-c", str(empty), *_tiny(tmp_path)], capsys)
    assert str(empty) in line and "empty" in line
    (tmp_path / "list.yaml").write_text("- 1\n")
    assert "list.yaml" in _bad_input(["fit", f"--config={tmp_path / 'list.yaml'}", *_tiny(tmp_path)], capsys)


def _pair_set_bin(path: Path, image_size: int) -> Path:
    from crossres.data.bin import export_pair_set
    from crossres.data.synthetic import synthetic_pair_set

    pairs = synthetic_pair_set(name=path.stem, num_pairs=20, num_identities=4, image_size=image_size, seed=1)
    export_pair_set(pairs, path)
    return path


def test_truncated_bin_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    whole = _pair_set_bin(tmp_path / "whole.bin", 32).read_bytes()
    truncated = tmp_path / "truncated.bin"
    truncated.write_bytes(whole[: len(whole) // 2])
    line = _bad_input(["fit", *_tiny(tmp_path), f"--data.val_sets=[{truncated}]"], capsys)
    assert str(truncated) in line and "truncated" in line


def test_pair_set_of_another_size_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = _pair_set_bin(tmp_path / "faces56.bin", 56)
    line = _bad_input(["fit", *_tiny(tmp_path), f"--data.val_sets=[{other}]"], capsys)
    assert str(other) in line and "56x56" in line and "data.image_size" in line


def _identity_folder(root: Path, identities: int, images: int = 4, size: int = 32) -> Path:
    from PIL import Image

    generator = np.random.default_rng(0)
    for identity in range(identities):
        folder = root / f"id{identity}"
        folder.mkdir(parents=True)
        for i in range(images):
            pixels = generator.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def test_folder_with_one_identity_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _identity_folder(tmp_path / "faces", identities=1)
    line = _bad_input(["fit", *_tiny(tmp_path), "--data.train_format=folder", f"--data.train_root={root}"], capsys)
    assert str(root) in line and "at least 2" in line


def test_image_of_another_size_is_named_or_skipped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    from crossres.data.folder import ImageFolderFaces
    from crossres.data.recordio import CorruptRecordError

    root = _identity_folder(tmp_path / "faces", identities=3)
    tiny = root / "id0" / "1x1.png"
    Image.fromarray(np.zeros((1, 1, 3), dtype=np.uint8)).save(tiny)
    (root / "id1" / "broken.jpg").write_bytes(b"not a jpeg")
    folder = ["--data.train_format=folder", f"--data.train_root={root}", "--data.batch_size=14"]
    line = _bad_input(["fit", *_tiny(tmp_path), *folder, "--trainer.limit_train_batches=1"], capsys)
    assert str(tiny) in line and "1x1" in line and "skip_corrupt" in line

    faces = ImageFolderFaces(root, image_size=(32, 32))
    index = [path for path, _ in faces.samples].index(tiny)
    with pytest.raises(CorruptRecordError, match="1x1"):
        faces[index]
    lenient = ImageFolderFaces(root, image_size=(32, 32), skip_corrupt=True)
    item = lenient[index]
    assert item["corrupt"] == 1 and item["image"].shape == (3, 32, 32) and lenient.num_corrupt == 1
    broken = [path.name for path, _ in lenient.samples].index("broken.jpg")
    assert lenient[broken]["corrupt"] == 1  # an undecodable file is skipped the same way

    from crossres.cli import main

    cli = main(["fit", *_tiny(tmp_path), *folder, "--data.skip_corrupt=true", "--name=lenient"])
    assert cli.trainer.callback_metrics["train_corrupt_skipped"].item() == 2  # 14 faces = every image, once


def test_unwritable_run_directory_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = tmp_path / "runs"
    makedirs = os.makedirs

    def read_only(name: Any, *args: Any, **kwargs: Any) -> None:  # a read-only run directory, also as root
        if str(name).startswith(str(runs)):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(name))
        makedirs(name, *args, **kwargs)

    monkeypatch.setattr(os, "makedirs", read_only)
    line = _bad_input(["fit", *_tiny(tmp_path)], capsys)
    assert str(runs) in line and "Read-only file system" in line


@pytest.mark.parametrize("damage", ["truncated", "random"])
def test_unreadable_checkpoint_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str) -> None:
    import torch

    checkpoint = tmp_path / f"{damage}.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1000)}, "epoch": 0}, checkpoint)
    data = checkpoint.read_bytes()
    checkpoint.write_bytes(data[: len(data) // 2] if damage == "truncated" else os.urandom(len(data)))
    line = _bad_input(["test", *_tiny(tmp_path), f"--ckpt_path={checkpoint}"], capsys)
    assert str(checkpoint) in line and "truncated or not a checkpoint" in line


def test_debug_shows_the_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from crossres.cli import main
    from crossres.errors import InputError

    with pytest.raises(InputError, match="data.degradation.lr_sizes"):
        main(["fit", "--debug", *_tiny(tmp_path), "--data.degradation.lr_sizes=[-3]"])
    monkeypatch.setenv("CROSSRES_DEBUG", "1")
    with pytest.raises(InputError, match="data.degradation.lr_sizes"):
        main(["fit", *_tiny(tmp_path), "--data.degradation.lr_sizes=[-3]"])


def test_programming_errors_keep_their_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    import crossres.cli
    from crossres.cli import main

    def bug(args: Any) -> None:
        raise KeyError("a bug")

    monkeypatch.setattr(crossres.cli, "run_lightning", bug)
    with pytest.raises(KeyError, match="a bug"):
        main(["fit"])


# ------------------------------------------------------------------------------------- report / align
def test_align_landmarks_records_bad_images_in_skipped_csv(tmp_path: Path) -> None:
    import csv
    import json

    from torchvision.io import encode_png

    from crossres.cli import main
    from crossres.data.align import ARCFACE_TEMPLATE_112

    from .test_align import smooth_face

    src = tmp_path / "src" / "alice"
    src.mkdir(parents=True)
    (src / "a.png").write_bytes(encode_png(smooth_face()).numpy().tobytes())
    (src / "b.jpg").write_bytes(b"truncated")  # first in the landmarks file: must not stop the rest
    (src / "c.png").write_bytes(encode_png(smooth_face()).numpy().tobytes())
    points = ARCFACE_TEMPLATE_112.tolist()
    landmarks = {"alice/b.jpg": points, "alice/a.png": points, "alice/c.png": [points[0]] * 5}  # c: degenerate
    (tmp_path / "lm.json").write_text(json.dumps(landmarks))
    dst = tmp_path / "dst"
    assert main(["align", str(tmp_path / "src"), str(dst), "--landmarks", str(tmp_path / "lm.json")]) == 0
    assert (dst / "alice" / "a.png").is_file()
    with (dst / "skipped.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["path"], r["reason"].split(":")[0]) for r in rows] == [
        ("alice/b.jpg", "unreadable"),
        ("alice/c.png", "not aligned"),
    ]


def _results(run_dir: Path, text: str | None = None) -> Path:
    import json

    run_dir.mkdir(parents=True, exist_ok=True)
    metrics = {"acc": 0.9, "acc_std": 0.01, "tar_at_far": 0.5, "eer": 0.1}
    rows = [{"pair_set": "synthetic", "comparison": c, "protocol": p, **metrics} for c, p in
            [("HR-HR", ""), ("LR-LR", "14px"), ("HR-LR", "14px")]]  # fmt: skip
    (run_dir / "results_test.json").write_text(json.dumps(rows) if text is None else text)
    return run_dir / "results_test.json"


def test_report_on_a_bad_results_file_leaves_nothing_behind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from crossres.cli import main

    run = tmp_path / "run"
    results = _results(run, '[{"pair_set": "synthetic", "acc": ')  # truncated
    assert main(["report", str(run), "--no-examples"]) == 2
    assert f"crossres report: error: {results} is not a JSON results file" in capsys.readouterr().err
    assert sorted(p.name for p in run.iterdir()) == ["results_test.json"]  # no report/, no temporary directory
    _results(run, '{"acc": 1}')
    assert main(["report", str(run), "--no-examples"]) == 2
    assert "result rows" in capsys.readouterr().err

    _results(run)  # fixed: the rerun is not refused
    assert main(["report", str(run), "--no-examples"]) == 0
    report = (run / "report" / "report.md").read_text()

    import crossres.report.run_report as run_report

    def full_disk(*args: Any) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(run / "report" / "table_test.csv"))

    monkeypatch.setattr(run_report, "_write_table_csv", full_disk)
    assert main(["report", str(run), "--no-examples", "--overwrite"]) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert (run / "report" / "report.md").read_text() == report  # the earlier report is untouched
    assert sorted(p.name for p in run.iterdir()) == ["report", "results_test.json"]
