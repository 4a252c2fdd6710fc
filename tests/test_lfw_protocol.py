"""The real protocol of experiments/real/ (LFW people files, person-disjoint training, drawn pairs files, pair-set
specs), on tiny synthetic stand-ins written in LFW's formats; the real files are checked when data/lfw is present."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import torch
from torchvision.io import encode_png

from crossres.cli import main
from crossres.commands import run
from crossres.data import DegradationOptions, FaceDataModule
from crossres.data.lfw import (
    draw_lfw_pairs,
    identity_folder_pairs,
    lfw_image_numbers,
    lfw_people_names,
    load_lfw_pairs,
    load_lfw_people,
)

from .conftest import REPO, TINY_TRAINER

# LFW's files beside its photos: CROSSRES_LFW (the photos, as in test_dlib_resnet.py), else data/lfw of the checkout.
LFW = Path(os.environ.get("CROSSRES_LFW", REPO / "data/lfw/images_deepfunneled")).parent
needs_lfw = pytest.mark.skipif(
    not (LFW / "peopleDevTest.txt").is_file(), reason=f"LFW is absent ({LFW}; set CROSSRES_LFW)"
)

# 6 training people, 6 test people (one without images in the folder, as a face the aligner did not find).
TRAIN = {"Ann_Train": 3, "Bob_Train": 2, "Cid_Train": 1, "Dee_Train": 2, "Eve_Train": 1, "Fay_Train": 2}
TEST = {"Gus_Test": 4, "Hal_Test": 3, "Ida_Test": 2, "Jon_Test": 1, "Kim_Test": 3, "Lou_Test": 2}
ABSENT = "Zed_Test"


def _chip(seed: int, size: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=generator)


def _people_file(path: Path, people: dict[str, int]) -> Path:
    path.write_text(f"{len(people)}\n" + "".join(f"{name}\t{n}\n" for name, n in people.items()))
    return path


def make_lfw_standin(root: Path, size: int = 32) -> dict[str, Path]:
    """``root/lfw_chips/<Person>/<Person>_000n.png`` and LFW's text files in ``root/lfw/`` (View 1 layout)."""
    chips, lfw = root / "lfw_chips", root / "lfw"
    lfw.mkdir(parents=True)
    for k, (person, count) in enumerate({**TRAIN, **TEST}.items()):
        (chips / person).mkdir(parents=True)
        for n in range(1, count + 1):
            (chips / person / f"{person}_{n:04d}.png").write_bytes(
                encode_png(_chip(100 * k + n, size)).numpy().tobytes()
            )
    (chips / "landmarks.json").write_text("{}")  # files beside the people's folders are not people
    files = {
        "train": _people_file(lfw / "peopleDevTrain.txt", TRAIN),
        "test": _people_file(lfw / "peopleDevTest.txt", {**TEST, ABSENT: 1}),
        "pairs": lfw / "pairsDevTest.txt",
        "val_pairs": lfw / "pairsDevTrain.txt",
        "chips": chips,
    }
    same = ["Gus_Test\t1\t2", "Gus_Test\t3\t4", "Hal_Test\t1\t3", "Kim_Test\t1\t2", "Lou_Test\t1\t2"]
    different = ["Gus_Test\t1\tHal_Test\t2", "Ida_Test\t2\tJon_Test\t1", "Hal_Test\t3\tKim_Test\t3"]
    different += ["Jon_Test\t1\tLou_Test\t2", "Gus_Test\t4\tIda_Test\t1"]
    files["pairs"].write_text("5\n" + "\n".join(same + different) + "\n")  # View 1: all same-person pairs first
    files["val_pairs"].write_text("1\nAnn_Train\t1\t2\nBob_Train\t1\tCid_Train\t1\n")
    return files


@pytest.fixture
def standin(tmp_path: Path) -> dict[str, Path]:
    return make_lfw_standin(tmp_path)


# ------------------------------------------------------------------------------------------- people files
def test_people_files_view1_and_view2(tmp_path: Path) -> None:
    view1 = _people_file(tmp_path / "peopleDevTest.txt", {"Ann_A": 2, "Bob_B": 1})
    assert load_lfw_people(view1) == [{"Ann_A": 2, "Bob_B": 1}]
    view2 = tmp_path / "people.txt"
    view2.write_text("2\n1\nAnn_A\t2\n2\r\nBob_B\t1\nCy_C\t3\n\n")
    assert load_lfw_people(view2) == [{"Ann_A": 2}, {"Bob_B": 1, "Cy_C": 3}]
    assert lfw_people_names(view2) == ["Ann_A", "Bob_B", "Cy_C"]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", r"people\.txt: empty file"),
        ("two\nAnn_A\t1\n", r"people\.txt:1: expected the number of people"),
        ("2\nAnn_A\t1\n", r"people\.txt:3: expected 'name<TAB>number of images' \(line 1 announces 2 people\)"),
        ("1\nAnn_A\t1\nBob_B\t1\n", r"people\.txt:3: expected the end of the file"),
        ("2\nAnn_A\t1\nAnn_A\t2\n", r"people\.txt:3: Ann_A is listed twice \(first on line 2\)"),
        ("1\nAnn_A\tone\n", r"people\.txt:2: expected 'name<TAB>number of images'"),
        ("2\n1\nAnn_A\t1\nBob_B\t1\n", r"people\.txt:4: expected the number of people of fold 2 of 2"),
        ("2\n1\nAnn_A\t1\n2\nBob_B\t1\n", r"people\.txt:6: expected 'name<TAB>number of images' \(line 4 announces 2"),
    ],
)
def test_people_file_errors_name_the_line(tmp_path: Path, text: str, match: str) -> None:
    (tmp_path / "people.txt").write_text(text)
    with pytest.raises(ValueError, match=match):
        load_lfw_people(tmp_path / "people.txt")


def test_missing_people_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        load_lfw_people(tmp_path / "nope.txt")


# ------------------------------------------------------------------------------------------------ drawing
def test_drawn_pairs_file_is_reproducible_balanced_and_from_test_people_only(
    standin: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out = standin["pairs"].parent / "pairs_drawn.txt"
    command = ["export", "--format", "pairs", "--from-folder", str(standin["chips"]), "--people", str(standin["test"])]
    command += ["--pairs", "20", "--seed", "3", "--out", str(out)]
    assert run(command) == 0
    stdout = capsys.readouterr().out
    assert "20 pairs" in stdout and "7 listed" in stdout and "1 without images" in stdout
    first = out.read_bytes()
    assert run([*command, "--overwrite"]) == 0
    assert out.read_bytes() == first  # same seed, same file
    assert run([*command[:-4], "--seed", "4", "--out", str(out), "--overwrite"]) == 0
    assert out.read_bytes() != first
    out.write_bytes(first)

    lines = first.decode().splitlines()
    assert lines[0] == "10\t1" and len(lines) == 21
    same = [line.split("\t") for line in lines[1::2]]  # per fold: 1 same-person line, then 1 different-person line
    different = [line.split("\t") for line in lines[2::2]]
    assert all(len(f) == 3 for f in same) and all(len(f) == 4 for f in different)
    people = {f[0] for f in same} | {f[i] for f in different for i in (0, 2)}
    assert people <= set(TEST) and not people & set(TRAIN)
    keys = [(f[0], int(f[1]), f[0], int(f[2])) for f in same] + [(f[0], int(f[1]), f[2], int(f[3])) for f in different]
    assert len(set(keys)) == 20  # no pair twice
    assert all(n1 < n2 for _, n1, _, n2 in keys[:10]) and all(a < b for a, _, b, _ in keys[10:])

    pair_set = load_lfw_pairs(out, standin["chips"], name="drawn")  # every image exists (.png chips)
    assert len(pair_set) == 20 and pair_set.issame.tolist() == [True, False] * 10
    assert all(p.suffix == ".png" for p in pair_set.images.paths)  # type: ignore[attr-defined]


def test_draw_refuses_what_the_folder_cannot_give(standin: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    test_people = lfw_people_names(standin["test"])
    # Test people with two images or more: 4 + 3 + 2 + 3 + 2 images -> 6 + 3 + 1 + 3 + 1 = 14 same-person pairs.
    assert len(draw_lfw_pairs(standin["chips"], test_people, num_pairs=20, num_folds=2)[0][0]) == 5
    with pytest.raises(ValueError, match="at most 14 distinct same-person"):
        draw_lfw_pairs(standin["chips"], test_people, num_pairs=40, num_folds=2)
    with pytest.raises(ValueError, match="multiple of 2 \\* num_folds"):
        draw_lfw_pairs(standin["chips"], test_people, num_pairs=30)
    base = ["export", "--format", "pairs", "--out", str(standin["chips"].parent / "p.txt")]
    for extra, named in [
        ([], "--from-folder"),
        (["--from-folder", str(standin["chips"]), "--pairs", "30"], "--pairs 30"),
        (["--from-folder", str(standin["chips"]), "--people", "nope.txt"], "--people nope.txt"),
    ]:
        assert run([*base, *extra]) == 2
        assert named in capsys.readouterr().err
    assert run(["export", "--format", "rec", "--out", "r", "--people", str(standin["test"])]) == 2
    assert "--people" in capsys.readouterr().err


def test_image_numbers_need_lfw_names(standin: dict[str, Path]) -> None:
    assert lfw_image_numbers(standin["chips"], ["Gus_Test", ABSENT]) == {"Gus_Test": [1, 2, 3, 4]}
    (standin["chips"] / "Gus_Test" / "face.png").write_bytes(b"")
    with pytest.raises(ValueError, match="face.png: not named as an LFW image"):
        lfw_image_numbers(standin["chips"], ["Gus_Test"])


# ------------------------------------------------------------------------------------------- data module
def _data(**kwargs) -> FaceDataModule:
    defaults = {
        "image_size": (32, 32),
        "protocols": [8],
        "degradation": DegradationOptions(lr_sizes=[8]),
        "num_workers": 0,
        "eval_batch_size": 8,
    }
    return FaceDataModule(**(defaults | kwargs))


def test_training_folder_restricted_to_the_listed_people(standin: dict[str, Path]) -> None:
    data = _data(train_format="folder", train_root=str(standin["chips"]), train_people=str(standin["train"]))
    assert data.num_classes == len(TRAIN)
    train_set = data._build_train_set()
    assert train_set.classes == sorted(TRAIN)  # type: ignore[attr-defined]
    assert len(train_set) == sum(TRAIN.values())  # type: ignore[arg-type]
    assert {train_set[i]["label"] for i in range(len(train_set))} == set(range(len(TRAIN)))  # type: ignore[arg-type]
    assert _data(train_format="folder", train_root=str(standin["chips"])).num_classes == len(TRAIN) + len(TEST)

    with pytest.warns(
        UserWarning, match=r"1 of the 7 listed people have no images .*Zed_Test.*training on the other 6"
    ):
        _data(train_format="folder", train_root=str(standin["chips"]), train_people=str(standin["test"]))
    nobody = _people_file(standin["chips"].parent / "nobody.txt", {"Nobody_Here": 1})
    with pytest.raises(ValueError, match=r"data.train_people .*nobody.txt: none of its 1 people \(Nobody_Here"):
        _data(train_format="folder", train_root=str(standin["chips"]), train_people=str(nobody))
    with pytest.raises(ValueError, match="data.train_people needs data.train_format 'folder'"):
        _data(train_format="recordio", train_root=str(standin["chips"]), train_people=str(standin["train"]))


def test_pair_set_specs(standin: dict[str, Path]) -> None:
    spec = f"{standin['pairs']}@{standin['chips']}"
    data = _data(val_sets=[spec, str(standin["chips"])])
    dev_test = data.pair_set(spec).pair_set
    assert dev_test.name == "pairsDevTest" and len(dev_test) == 10
    # View 1's single-count header lists the same-person pairs first; they are read alternating (balanced folds).
    assert dev_test.issame.tolist() == [True, False] * 5
    names = [p.name for p in dev_test.images.paths]  # type: ignore[attr-defined]
    assert names[:2] == ["Gus_Test_0001.png", "Gus_Test_0002.png"] and names[10] == "Hal_Test_0002.png"
    assert dev_test.pairs[:3].tolist() == [[0, 1], [0, 10], [2, 3]]
    assert data.pair_set_names("val") == ["pairsDevTest", "lfw_chips"]

    folder = data.pair_set(str(standin["chips"])).pair_set  # every same pair, as many different ones
    all_same = sum(n * (n - 1) // 2 for n in {**TRAIN, **TEST}.values())
    assert len(folder) == 2 * all_same and folder.issame.tolist() == [True, False] * all_same
    keys = {tuple(sorted(p)) for p in folder.pairs.tolist()}
    assert len(keys) == len(folder)
    again = identity_folder_pairs(standin["chips"], seed=0)
    assert torch.equal(again.pairs, folder.pairs)
    assert not torch.equal(identity_folder_pairs(standin["chips"], seed=1).pairs, folder.pairs)

    with pytest.raises(FileNotFoundError, match="image folder .*missing not found"):
        _data(val_sets=[f"{standin['pairs']}@{standin['chips'].parent / 'missing'}"]).pair_set_names("val")
    with pytest.raises(FileNotFoundError, match="pairs file .*nope.txt not found"):
        _data(val_sets=[f"{standin['pairs'].parent / 'nope.txt'}@{standin['chips']}"]).pair_set_names("val")
    twice = _data(val_sets=[spec, f"{standin['pairs']}@{standin['chips']}/"])
    with pytest.raises(ValueError, match="both named 'pairsDevTest'"):
        twice.pair_set_names("val")


# ------------------------------------------------------------------------------------- experiments/real
def _real_args(tmp_path: Path) -> list[str]:
    return [
        "-c",
        str(REPO / "experiments/real/data.yaml"),
        "-c",
        str(REPO / "experiments/real/dlib_pretrained.yaml"),
        f"--runs_dir={tmp_path / 'runs'}",
        *TINY_TRAINER,
        "--data.image_size=[112, 112]",  # the smallest input dlib's ResNet takes (150 px chips cost twice as much)
        "--data.eval_batch_size=16",
        "--data.num_workers=0",
    ]


@pytest.fixture
def real_standin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """data/ as experiments/real/data.yaml expects it, made by the commands of its comments, in a working dir."""
    monkeypatch.chdir(tmp_path)
    make_lfw_standin(tmp_path / "data", size=112)
    (tmp_path / "data/lfw_chips").rename(tmp_path / "data/lfw_dlib150")
    command = ["export", "--format", "pairs", "--from-folder", "data/lfw_dlib150", "--people"]
    command += ["data/lfw/peopleDevTest.txt", "--pairs", "20", "--seed", "0", "--out", "data/lfw/pairsDevTest_6000.txt"]
    assert run(command) == 0
    return tmp_path


def _check_results(run_dir: Path, out: str) -> None:
    assert "pairsDevTest" in out and "pairsDevTest_6000" in out
    results = next(run_dir.glob("test-*/results_test.csv")).read_text()
    for protocol in ("8px", "12px", "16px", "24px", "low_res_focus"):
        assert protocol in results


def test_real_data_config_runs_crossres_test(
    real_standin: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """data.yaml as shipped (its relative paths, sets and protocols) through `crossres test`, with a tiny network."""
    tiny = ["--model.backbone=iresnet18", "--model.backbone_kwargs={width: 8}", "--model.embedding_size=32"]
    capsys.readouterr()
    main(["test", *_real_args(real_standin), *tiny])
    _check_results(real_standin / "runs/dlib_pretrained", capsys.readouterr().out)

    # Without the dlib extra, dlib's pretrained weights stop the run with the ImportError that names the extra
    # (jsonargparse reports it inside its ValueError about the model).
    import crossres.data.detect as detect

    def no_extra(name: str) -> Path:
        raise ImportError("face-recognition-models is not installed")

    monkeypatch.setattr(detect, "dlib_model_path", no_extra)
    with pytest.raises((ImportError, ValueError), match=r"face-recognition-models .*pip install 'crossres\[dlib\]'"):
        main(["test", *_real_args(real_standin)])


@pytest.mark.slow  # dlib's ResNet embeds 360 faces of 112 px: about half a minute on 2 idle CPU cores
def test_real_configs_run_dlib_resnet(real_standin: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`crossres test -c data.yaml -c dlib_pretrained.yaml` as shipped, dlib's weights replaced by random ones."""
    capsys.readouterr()
    main(["test", *_real_args(real_standin), "--model.backbone_kwargs={pretrained: false}"])
    _check_results(real_standin / "runs/dlib_pretrained", capsys.readouterr().out)


# ------------------------------------------------------------------------------------------------ real LFW
@needs_lfw
def test_real_people_files_are_disjoint_and_complete() -> None:
    train, test = lfw_people_names(LFW / "peopleDevTrain.txt"), lfw_people_names(LFW / "peopleDevTest.txt")
    assert (len(train), len(test)) == (4038, 1711) and not set(train) & set(test)
    folds = load_lfw_people(LFW / "people.txt")
    assert len(folds) == 10 and sum(len(f) for f in folds) == 5749


@needs_lfw
def test_real_pairs_devtest_and_a_drawn_set(tmp_path: Path) -> None:
    images = LFW / "images_deepfunneled"  # the drawn file holds only images that exist there
    dev_test = load_lfw_pairs(LFW / "pairsDevTest.txt", images, name="pairsDevTest")
    assert len(dev_test) == 1000 and int(dev_test.issame.sum()) == 500
    assert dev_test.issame[:10].tolist() == [True, False] * 5  # every fold balanced

    test_people = lfw_people_names(LFW / "peopleDevTest.txt")
    out = tmp_path / "pairsDevTest_6000.txt"
    assert run(["export", "--format", "pairs", "--from-folder", str(images), "--people", str(LFW / "peopleDevTest.txt"),
                "--pairs", "6000", "--seed", "0", "--out", str(out)]) == 0  # fmt: skip
    drawn = load_lfw_pairs(out, images, name="drawn")
    assert len(drawn) == 6000 and int(drawn.issame.sum()) == 3000
    assert out.read_text().splitlines()[0] == "10\t300"
    people = {p.parent.name for p in drawn.images.paths}  # type: ignore[attr-defined]
    assert people <= set(test_people) and not people & set(lfw_people_names(LFW / "peopleDevTrain.txt"))
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    out.unlink()
    assert run(["export", "--format", "pairs", "--from-folder", str(images), "--people", str(LFW / "peopleDevTest.txt"),
                "--out", str(out)]) == 0  # fmt: skip
    assert hashlib.sha256(out.read_bytes()).hexdigest() == digest  # defaults: 6000 pairs, seed 0
