"""`crossres export | align | report`: round trips through the real readers, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torchvision.io import encode_jpeg

from crossres.cli import main
from crossres.commands import run
from crossres.data.align import align_faces
from crossres.data.bin import load_bin
from crossres.data.codec import decode_image_bytes
from crossres.data.folder import ImageFolderFaces, write_image_folder
from crossres.data.recordio import RecordIOFaces
from crossres.data.synthetic import SyntheticFaces

SMALL = ["--synthetic-identities", "3", "--images-per-identity", "2", "--image-size", "32"]


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = run(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ------------------------------------------------------------------------------------------------- export
def test_export_rec_reads_back(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "rec"
    code, stdout, _ = _run(["export", "--format", "rec", "--out", str(out), *SMALL, "--seed", "3"], capsys)
    assert code == 0 and "6 images" in stdout
    dataset = RecordIOFaces(out)
    assert dataset.num_classes == 3 and len(dataset) == 6 and dataset.image_size == (32, 32)
    assert [dataset[i]["label"] for i in range(6)] == [0, 0, 1, 1, 2, 2]
    reference = SyntheticFaces(3, 2, image_size=32, seed=3, return_priors=False)[5]["image"]
    # JPEG (quality 95) of the same rendering.
    assert (dataset[5]["image"].float() - reference.float()).abs().mean() < 6


def test_export_bin_reads_back(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "tiny_pairs.bin"
    code, stdout, _ = _run(["export", "--format", "bin", "--out", str(out), *SMALL, "--pairs", "20"], capsys)
    assert code == 0 and "20 pairs (10 positive, 10 negative)" in stdout
    pairs = load_bin(out)
    assert pairs.name == "tiny_pairs" and len(pairs) == 20 and int(pairs.issame.sum()) == 10
    assert pairs.images[0].shape == (3, 32, 32) and pairs.images[0].dtype == torch.uint8


def test_export_folder_and_from_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "faces"
    assert run(["export", "--format", "folder", "--out", str(folder), *SMALL]) == 0
    assert ImageFolderFaces(folder).num_classes == 3 and len(ImageFolderFaces(folder)) == 6

    rec = tmp_path / "rec"
    code, _, _ = _run(["export", "--format", "rec", "--out", str(rec), "--from-folder", str(folder)], capsys)
    assert code == 0
    assert RecordIOFaces(rec).num_classes == 3 and len(RecordIOFaces(rec)) == 6

    out = tmp_path / "folder.bin"
    cmd = ["export", "--format", "bin", "--out", str(out), "--from-folder", str(folder), "--pairs", "4"]
    assert run(cmd) == 0
    pairs = load_bin(out)
    assert len(pairs) == 4 and pairs.issame.tolist() == [True, False, True, False]


def test_export_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "p.bin"
    command = ["export", "--format", "bin", "--out", str(out), *SMALL, "--pairs", "20"]
    assert run(command) == 0
    before = out.read_bytes()
    code, _, err = _run(command + ["--seed", "7"], capsys)
    assert code == 2 and str(out) in err and "--overwrite" in err
    assert out.read_bytes() == before
    assert run(command + ["--seed", "7", "--overwrite"]) == 0
    assert out.read_bytes() != before

    folder = tmp_path / "faces"
    assert run(["export", "--format", "folder", "--out", str(folder), *SMALL]) == 0
    code, _, err = _run(["export", "--format", "folder", "--out", str(folder), *SMALL], capsys)
    assert code == 2 and "not empty" in err
    rec = tmp_path / "rec"
    assert run(["export", "--format", "rec", "--out", str(rec), *SMALL]) == 0
    code, _, err = _run(["export", "--format", "rec", "--out", str(rec), *SMALL], capsys)
    assert code == 2 and "train.rec" in err


@pytest.mark.parametrize(
    "argv, named",
    [
        (["--format", "rec", "--out", "{tmp}/r", "--pairs", "4"], "--pairs"),
        (["--format", "bin", "--out", "{tmp}/pairs.txt"], ".bin"),
        (["--format", "rec", "--out", "{tmp}/r", "--from-folder", "{tmp}/missing"], "missing"),
        (["--format", "rec", "--out", "{tmp}/r", "--from-folder", "{tmp}", "--synthetic-identities", "3"], "--from"),
        (["--format", "rec", "--out", "{tmp}/r", "--image-size", "big"], "--image-size"),
        (["--format", "rec", "--out", "{tmp}/r", "--synthetic-identities", "0"], "--synthetic-identities"),
        (["--format", "tar", "--out", "{tmp}/r"], "--format"),
        (["--out", "{tmp}/r"], "--format"),
        (["--format", "rec", "--out", "{tmp}/r", *SMALL, "--seed", "-1"], "seed"),
        (["--format", "rec", "--out", "{tmp}/r", "--quality", "0"], "--quality"),
    ],
)
def test_export_errors_name_the_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], named: str
) -> None:
    code, _, err = _run(["export", *(a.format(tmp=tmp_path) for a in argv)], capsys)
    assert code == 2
    assert named in err
    assert not (tmp_path / "r").exists()


# -------------------------------------------------------------------------------------------------- align
def _five_points(landmarks: torch.Tensor) -> list[list[float]]:
    """iBUG 68 -> the five points of the ArcFace template (image-left eye first, nose tip, mouth corners)."""
    points = [landmarks[36:42].mean(0), landmarks[42:48].mean(0), landmarks[30], landmarks[48], landmarks[54]]
    return [[float(v) for v in p] for p in points]


@pytest.fixture
def raw_faces(tmp_path: Path) -> tuple[Path, Path]:
    faces = SyntheticFaces(2, 2, image_size=(80, 72), seed=5, return_priors=True)
    src = tmp_path / "raw"
    write_image_folder(src, ((faces[i]["image"], faces[i]["label"]) for i in range(len(faces))))
    files = sorted(p.relative_to(src).as_posix() for p in src.rglob("*.jpg"))
    landmarks = {name: _five_points(faces[i]["landmarks"]) for i, name in enumerate(files[:3])}  # last has none
    landmarks["0000009/000000.jpg"] = landmarks[files[0]]  # an entry without an image
    path = tmp_path / "landmarks.json"
    path.write_text(json.dumps(landmarks))
    return src, path


def test_align_command(tmp_path: Path, raw_faces: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    src, landmarks = raw_faces
    dst = tmp_path / "aligned"
    code, out, _ = _run(["align", str(src), str(dst), "--landmarks", str(landmarks), "--size", "112x96"], capsys)
    assert code == 0
    assert "aligned 3 image(s)" in out and "1 image(s)" in out and "1 landmark entry" in out
    aligned = ImageFolderFaces(dst)
    assert len(aligned) == 3 and aligned[0]["image"].shape == (3, 112, 96)

    code, _, err = _run(["align", str(src), str(dst), "--landmarks", str(landmarks)], capsys)
    assert code == 2 and "overwrite" in err
    assert main(["align", str(src), str(dst), "--landmarks", str(landmarks), "--overwrite"]) == 0
    assert ImageFolderFaces(dst)[0]["image"].shape == (3, 112, 112)


def test_align_command_point_weights(
    tmp_path: Path, raw_faces: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    src, landmarks = raw_faces
    outs = {}
    for name, extra in (("equal", []), ("eyes", ["--point-weights", "4", "4", "1", "1", "1"])):
        assert _run(["align", str(src), str(tmp_path / name), "--landmarks", str(landmarks), *extra], capsys)[0] == 0
        outs[name] = ImageFolderFaces(tmp_path / name)[0]["image"]
    first = sorted(src.rglob("*.jpg"))[0]
    points = torch.tensor(json.loads(landmarks.read_text())[first.relative_to(src).as_posix()])
    expected = align_faces(decode_image_bytes(first.read_bytes()), points, weights=[4, 4, 1, 1, 1])
    decoded_again = decode_image_bytes(encode_jpeg(expected, quality=95).numpy().tobytes())
    assert torch.equal(outs["eyes"], decoded_again)
    assert not torch.equal(outs["eyes"], outs["equal"])
    zeros = ["--point-weights", *"0 0 0 0 0".split()]
    code, _, err = _run(["align", str(src), str(tmp_path / "bad"), "--landmarks", str(landmarks), *zeros], capsys)
    assert code == 2 and "--point-weights" in err


def test_align_errors(tmp_path: Path, raw_faces: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    src, landmarks = raw_faces
    dst = str(tmp_path / "out")
    code, _, err = _run(["align", str(tmp_path / "nope"), dst, "--landmarks", str(landmarks)], capsys)
    assert code == 2 and "nope" in err
    code, _, err = _run(["align", str(src), dst, "--landmarks", str(tmp_path / "none.json")], capsys)
    assert code == 2 and "none.json" in err
    code, _, err = _run(["align", str(src), dst, "--landmarks", str(landmarks), "--size", "0x3"], capsys)
    assert code == 2 and "--size" in err
    unrelated = tmp_path / "other.json"
    unrelated.write_text(json.dumps({"elsewhere/a.jpg": [[1, 2]] * 5}))
    code, _, err = _run(["align", str(src), dst, "--landmarks", str(unrelated)], capsys)
    assert code == 2 and "relative to" in err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"0000000/000000.jpg": [[1, 2]]}))
    code, _, err = _run(["align", str(src), dst, "--landmarks", str(bad)], capsys)
    assert code == 2 and "bad.json" in err


# ---------------------------------------------------------------------------------------------- dispatch
@pytest.mark.parametrize("command, option", [("report", "--wandb"), ("export", "--format"), ("align", "--landmarks")])
def test_help_per_command(command: str, option: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([command, "--help"]) == 0
    assert option in capsys.readouterr().out


def test_unknown_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["export", "--format", "rec", "--out", "x", "--bogus"]) == 2
    assert "--bogus" in capsys.readouterr().err
