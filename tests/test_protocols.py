from __future__ import annotations

from pathlib import Path

import pytest
import torch

from crossres.data.protocols import KNOCHE_PROTOCOLS, build_protocols, knoche_sizes, load_knoche_csv

SETS = {"LFW": 6000, "AgeDB": 6000, "CALFW": 6000, "CPLFW": 6000, "CFP-FP": 7000}
RANGES = {"low_res_focus": (5, 10), "mid_res_focus": (11, 39), "high_res_focus": (40, 112), "avg_sizes": (5, 112)}


def naive_csv(path: Path) -> list[int]:
    """Reference reader: the odd entries of the single comma-separated line."""
    return [int(v) for v in path.read_bytes().decode().strip().split(",")][1::2]


@pytest.mark.parametrize("dataset", sorted(SETS))
def test_real_btm_stm_csvs(shared_dir, dataset):
    folder = shared_dir / "protocols" / "btm-stm" / dataset
    for name, (low, high) in RANGES.items():
        sizes = load_knoche_csv(folder / f"{name}.csv")
        assert sizes.dtype == torch.long and sizes.shape == (SETS[dataset],)
        assert int(sizes.min()) == low and int(sizes.max()) == high
        assert sizes.tolist() == naive_csv(folder / f"{name}.csv")


def test_real_csv_through_build_protocols(shared_dir):
    folder = shared_dir / "protocols" / "btm-stm" / "LFW"
    protocols = build_protocols(["low_res_focus", "all_res", 14], num_pairs=6000, csv_dir=folder)
    assert list(protocols) == ["low_res_focus", "all_res", "14px"]
    expected = load_knoche_csv(folder / "low_res_focus.csv")
    assert torch.equal(protocols["low_res_focus"], torch.stack([expected, expected], dim=1))
    assert torch.equal(protocols["all_res"][:, 0], load_knoche_csv(folder / "avg_sizes.csv"))
    with pytest.raises(ValueError, match="has 6000 pairs, the pair set has 10"):
        build_protocols(["mid_res_focus"], num_pairs=10, csv_dir=folder)


def test_load_knoche_csv_crlf_and_errors(tmp_path):
    good = tmp_path / "ok.csv"
    good.write_bytes(b"112,5,112,10,112,7\r\n")
    assert load_knoche_csv(good).tolist() == [5, 10, 7]
    cases = {
        b"112,5,111,6\r\n": "position 2 is 111, expected the HR side 112",
        b"112,5,112,abc\r\n": "position 3 is 'abc'",
        b"112,5,112\r\n": "odd number of entries",
        b"112,0,112,5\r\n": "LR size at position 1 is 0",
        b"112,5\r\n112,6\r\n": "found 2 non-empty lines",
    }
    for i, (content, message) in enumerate(cases.items()):
        path = tmp_path / f"bad{i}.csv"
        path.write_bytes(content)
        with pytest.raises(ValueError, match=rf"bad{i}\.csv: .*{message}"):
            load_knoche_csv(path)
    with pytest.raises(FileNotFoundError):
        load_knoche_csv(tmp_path / "missing.csv")


def test_knoche_sizes_seeded_uniform():
    assert KNOCHE_PROTOCOLS["all_res"] == KNOCHE_PROTOCOLS["avg_sizes"] == (5, 112)
    for name, (low, high) in RANGES.items():
        sizes = knoche_sizes(name, 20000, seed=1)
        assert int(sizes.min()) == low and int(sizes.max()) == high
        counts = torch.bincount(sizes - low).float()
        assert counts.numel() == high - low + 1 and float(counts.std() / counts.mean()) < 0.25  # every size drawn
    assert torch.equal(knoche_sizes("low_res_focus", 50, seed=7), knoche_sizes("low_res_focus", 50, seed=7))
    assert not torch.equal(knoche_sizes("low_res_focus", 50, seed=7), knoche_sizes("low_res_focus", 50, seed=8))
    with pytest.raises(ValueError, match="unknown Knoche protocol 'tiny'"):
        knoche_sizes("tiny", 5)


def test_build_protocols_specs(tmp_path):
    protocols = build_protocols([14, "16x12", "7px", "high_res_focus"], num_pairs=30, hr_size=(112, 96), seed=3)
    assert list(protocols) == ["14px", "16x12px", "7px", "high_res_focus"]
    assert all(v.shape == (30, 2) and v.dtype == torch.long for v in protocols.values())
    assert protocols["14px"][0].tolist() == [14, 12]  # width = round(14 * 96 / 112)
    assert protocols["16x12px"].unique(dim=0).tolist() == [[16, 12]]
    heights = protocols["high_res_focus"][:, 0]
    assert torch.equal(heights, knoche_sizes("high_res_focus", 30, seed=3))
    assert torch.equal(protocols["high_res_focus"][:, 1], torch.round(heights * 96 / 112).long())
    # a csv_dir without the file falls back to the seeded range
    fallback = build_protocols(["low_res_focus"], num_pairs=30, seed=3, csv_dir=tmp_path)["low_res_focus"]
    assert torch.equal(fallback[:, 0], knoche_sizes("low_res_focus", 30, seed=3))
    (tmp_path / "avg_sizes.csv").write_text("112,9,112,100\n")
    assert build_protocols(["all_res"], num_pairs=2, csv_dir=tmp_path)["all_res"].tolist() == [[9, 9], [100, 100]]


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("huge", "unknown protocol spec 'huge'; expected an int .*'16x12'.*low_res_focus"),
        (0, "at least 1"),
        (113, r"LR size \(113, 113\) of pair 0 is outside"),
        ("120x12", "outside"),
        ("12x0", "outside"),
        (2.5, "has type float"),
    ],
)
def test_build_protocols_errors(spec, match):
    with pytest.raises(ValueError, match=match):
        build_protocols([spec], num_pairs=4)


def test_knoche_sizes_scaled_to_other_faces(tmp_path):
    (tmp_path / "low_res_focus.csv").write_text("112,5,112,10,112,8\n")
    at_112 = build_protocols(["low_res_focus"], num_pairs=3, csv_dir=tmp_path)["low_res_focus"]
    assert at_112[:, 0].tolist() == [5, 10, 8]
    # The default keeps the framing: a 150 px face scales every side by 150 / 112.
    at_150 = build_protocols(["low_res_focus"], num_pairs=3, hr_size=(150, 150), csv_dir=tmp_path)["low_res_focus"]
    assert at_150[:, 0].tolist() == [round(5 * 150 / 112), round(10 * 150 / 112), round(8 * 150 / 112)]
    scaled = build_protocols(
        ["low_res_focus", 14], num_pairs=3, hr_size=(150, 150), csv_dir=tmp_path, knoche_scale=1.25
    )
    assert scaled["low_res_focus"][:, 0].tolist() == [6, 12, 10]
    assert scaled["14px"][:, 0].tolist() == [14, 14, 14]  # fixed sizes are the caller's, never scaled
    with pytest.raises(ValueError, match="knoche_scale"):
        build_protocols(["low_res_focus"], num_pairs=3, csv_dir=tmp_path, knoche_scale=0)
