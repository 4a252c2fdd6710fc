"""GuidedCNN (000): the real CLI on tiny data, the frozen guide, several learners, unknown resolution, occlusion."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from crossres.cli import main
from crossres.losses.guidance import feature_guidance_loss
from crossres.methods.base import HR_MODEL_COMMAND
from crossres.methods.guided_cnn import GuidedCNN

from .conftest import TINY_DATA, TINY_TRAINER

BACKBONE = ["--model.backbone=iresnet18", "--model.backbone_kwargs={width: 8}", "--model.embedding_size=32"]
GUIDED = ["--model=crossres.methods.guided_cnn.GuidedCNN", *BACKBONE, "--model.lr=0.05"]


@pytest.fixture(scope="module")
def guide_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny HR Baseline: the guide CNN_H."""
    runs = tmp_path_factory.mktemp("guide") / "runs"
    main(["fit", f"--runs_dir={runs}", *TINY_TRAINER, *TINY_DATA, "--model=Baseline", *BACKBONE, "--name=hr"])
    return runs / "hr" / "checkpoints" / "last.ckpt"


def _state(path: Path, prefix: str) -> dict[str, torch.Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def _tiny_model(**kwargs: Any) -> GuidedCNN:
    args: dict[str, Any] = {
        "backbone_kwargs": {"width": 8},
        "embedding_size": 16,
        "image_size": (32, 32),
        "num_classes": 5,
        "guide_weights": None,
    }
    return GuidedCNN(**(args | kwargs))


def test_fit_then_test_guide_frozen_bit_identical(guide_ckpt: Path, tiny_args: list[str]) -> None:
    runs = Path(tiny_args[0].split("=", 1)[1])
    main(["fit", *tiny_args, *GUIDED, f"--model.guide_weights={guide_ckpt}", "--model.guidance_weight=5", "--name=g"])
    ckpt = runs / "g" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    guide, hr_backbone = _state(ckpt, "guide."), _state(guide_ckpt, "backbone.")
    assert guide.keys() == hr_backbone.keys()
    # Frozen CNN_H: every weight and BatchNorm buffer is bit-identical after training.
    assert all(torch.equal(guide[k], hr_backbone[k]) for k in guide)
    learner = _state(ckpt, "learners.0.")
    assert any(not torch.equal(learner[k], hr_backbone[k]) for k in learner if k.endswith("weight"))

    main(["test", *tiny_args, *GUIDED, "--name=g", f"--ckpt_path={ckpt}"])
    results = list((runs / "g").glob("test-*/results_test.csv"))
    assert len(results) == 1 and "HR-LR" in results[0].read_text()
    model = GuidedCNN.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True)
    assert model.hparams["guidance_weight"] == 5


def test_missing_guide_gives_the_command(tiny_args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as error:
        main(["fit", *tiny_args, *GUIDED, "--model.guide_weights=nope/last.ckpt", "--name=missing"])
    err = capsys.readouterr().err
    assert error.value.code == 2 and "model.guide_weights" in err
    assert HR_MODEL_COMMAND in err


def test_guide_stays_in_eval_mode_and_frozen() -> None:
    model = _tiny_model()
    model.train()
    assert not model.guide.training
    assert not any(m.training for m in model.guide.modules())
    assert model.learners[0].training and model.heads[0].training
    assert not any(p.requires_grad for p in model.guide.parameters())
    assert {id(p) for p in model.trainable_parameters()}.isdisjoint(id(p) for p in model.guide.parameters())
    model.eval()
    assert not model.learners[0].training


def test_training_step_is_eq3() -> None:
    torch.manual_seed(0)
    model = _tiny_model(guidance_weight=7.0)
    batch = {"hr": torch.rand(4, 3, 32, 32), "lr": torch.rand(4, 3, 32, 32), "label": torch.tensor([0, 1, 2, 3])}
    model.train()
    loss = model.training_step(batch, 0)
    assert loss is not None
    with torch.no_grad():
        f_h = model.guide(batch["hr"])
        f_l = model.learners[0](batch["lr"])
        softmax = F.cross_entropy(model.heads[0](f_l), batch["label"])  # Eq. (1)
        expected = softmax + 7.0 * feature_guidance_loss(f_h, f_l)  # Eq. (3)
    assert torch.allclose(loss, expected, atol=1e-6)
    loss.backward()
    assert all(p.grad is None for p in model.guide.parameters())
    assert model.learners[0].conv1.weight.grad is not None


def test_several_learners(guide_ckpt: Path, tiny_args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    args = [*GUIDED, f"--model.guide_weights={guide_ckpt}", "--model.learner_sizes=[4, 8]"]
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *tiny_args, *args, "--name=no_views"])
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and "data.degradation.lr_views: [4, 8]" in error and "learner_sizes" in error
    cli = main(["fit", *tiny_args, *args, "--data.degradation.lr_views=[4, 8]", "--name=two", "--overwrite=true"])
    model = cli.model
    assert len(model.learners) == 2 and len(model.heads) == 2
    assert {"train_loss_softmax_4px", "train_loss_guidance_8px"} <= set(cli.trainer.callback_metrics)
    heights = torch.tensor([[3, 3], [5, 5], [6, 6], [7, 7], [8, 8], [20, 20]])
    assert model.learner_index(heights).tolist() == [0, 0, 0, 1, 1, 1]
    # Each probe goes through the learner of its size.
    model.eval()
    images = torch.rand(6, 3, 32, 32)
    with torch.no_grad():
        mixed = model.embed_lr(images, heights)
        assert torch.allclose(mixed[:3], model.learners[0](images[:3]), atol=1e-5)
        assert torch.allclose(mixed[3:], model.learners[1](images[3:]), atol=1e-5)


class _Recorder:
    def __init__(self) -> None:
        self.scores: dict[str, torch.Tensor] = {}

    def __call__(self, split: str, pair_set: str, comparison: str, protocol: str = "") -> _Recorder:
        self.key = f"{comparison}_{protocol}".rstrip("_")
        if split != "val":  # the guide alone, scored beside the method ("reference:val")
            self.key = f"{split}/{self.key}"
        return self

    def update(self, scores: torch.Tensor, issame: torch.Tensor, pair_id: torch.Tensor) -> None:
        self.scores[self.key] = scores


def _eval_batch(n: int = 6) -> dict[str, Any]:
    generator = torch.Generator().manual_seed(3)
    hr1, hr2 = torch.rand(n, 3, 32, 32, generator=generator), torch.rand(n, 3, 32, 32, generator=generator)
    size = torch.tensor([[8, 8]]).expand(n, 2)
    return {
        "hr1": hr1,
        "hr2": hr2,
        "lr1": {"8px": torch.rand(n, 3, 32, 32, generator=generator)},
        "lr2": {"8px": torch.rand(n, 3, 32, 32, generator=generator)},
        "lr_size": {"8px": size},
        "issame": torch.arange(n) % 2 == 0,
        "pair_id": torch.arange(n),
        "pair_set": "synthetic",
    }


def test_unknown_resolution_picks_the_nearer_embedding() -> None:
    gallery = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=1)
    by_guide = F.normalize(torch.tensor([[1.0, 0.1], [1.0, 0.0]]), dim=1)
    by_learner = F.normalize(torch.tensor([[0.0, 1.0], [1.0, 1.0]]), dim=1)
    scores = GuidedCNN.nearer_score(gallery, by_guide, by_learner)
    assert torch.allclose(scores, torch.stack([(gallery[0] * by_guide[0]).sum(), (gallery[1] * by_learner[1]).sum()]))

    # Through the evaluation step: the HR-LR score is the larger of the guide's and the learner's cosine.
    torch.manual_seed(0)
    models = {mode: _tiny_model(test_mode=mode) for mode in ("known", "unknown")}
    models["unknown"].load_state_dict(models["known"].state_dict())
    batch = _eval_batch()
    recorded = {}
    for mode, model in models.items():
        model.eval()
        recorder = _Recorder()
        model._metric = recorder  # type: ignore[method-assign]
        with torch.no_grad():
            model._eval_step("val", batch)
        recorded[mode] = recorder.scores
    model = models["unknown"]
    with torch.no_grad():
        hr1 = F.normalize(model.guide(batch["hr1"]), dim=1)
        lr2_guide = F.normalize(model.guide(batch["lr2"]["8px"]), dim=1)
        lr2_learner = F.normalize(model.learners[0](batch["lr2"]["8px"]), dim=1)
    by_guide, by_learner = (hr1 * lr2_guide).sum(1), (hr1 * lr2_learner).sum(1)
    assert torch.allclose(recorded["known"]["hr_lr_8px"], by_learner, atol=1e-6)
    assert torch.allclose(recorded["unknown"]["hr_lr_8px"], torch.maximum(by_guide, by_learner), atol=1e-6)
    for same in ("hr_hr", "lr_lr_8px"):
        assert torch.allclose(recorded["known"][same], recorded["unknown"][same])
    # The reference beside it: the guide on the HR gallery and on the bicubic probe, in either mode.
    for mode in models:
        assert torch.allclose(recorded[mode]["reference:val/hr_lr_8px"], by_guide, atol=1e-6)


@pytest.mark.parametrize("mode, area", [("block", 0.2), ("block", 0.5), ("upper", 0.5), ("lower", 0.5)])
def test_occlusion_has_the_specified_area(mode: str, area: float) -> None:
    model = _tiny_model(occlusion=mode, occlusion_area=area)
    batch = _eval_batch() | {"hr1": torch.ones(6, 3, 32, 32), "hr2": torch.ones(6, 3, 32, 32)}
    out = model.occluded_eval_batch(batch)
    name = f"oc_{mode}" + (f"{round(100 * area)}" if mode == "block" else "")
    assert list(out["lr1"]) == [name] and list(out["lr2"]) == [name]
    assert out["lr_size"][name].tolist() == [[32, 32]] * 6
    for key in ("lr1", "lr2"):
        zeroed = (out[key][name] == 0).all(dim=1).float().mean(dim=(1, 2))
        assert torch.allclose(zeroed, torch.full((6,), area), atol=0.01), zeroed
    if mode == "upper":
        assert (out["lr1"][name][:, :, :16] == 0).all() and (out["lr1"][name][:, :, 16:] == 1).all()
    # Training: the learner sees occluded HR faces of the same area.
    inputs = model.learner_inputs({"hr": torch.ones(4, 3, 32, 32), "label": torch.zeros(4, dtype=torch.long)})
    assert len(inputs) == 1
    zeroed = (inputs[0][1] == 0).all(dim=1).float().mean(dim=(1, 2))
    assert torch.allclose(zeroed, torch.full((4,), area), atol=0.01)


def test_evaluation_occlusion_is_fixed_per_pair() -> None:
    model = _tiny_model(occlusion="block")
    batch = _eval_batch() | {"hr1": torch.ones(6, 3, 32, 32), "hr2": torch.ones(6, 3, 32, 32)}
    first = model.occluded_eval_batch(batch)["lr1"]["oc_block20"]
    order = torch.tensor([5, 3, 1, 0, 2, 4])
    shuffled = {k: (v[order] if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
    again = model.occluded_eval_batch(shuffled)["lr1"]["oc_block20"]
    assert torch.equal(again, first[order])
    assert not torch.equal(first[0], first[1])  # different pairs, different blocks
    assert not torch.equal(first, model.occluded_eval_batch(batch)["lr2"]["oc_block20"])


def test_occlusion_fit_and_learner_starts_from_the_guide(guide_ckpt: Path, tiny_args: list[str]) -> None:
    runs = Path(tiny_args[0].split("=", 1)[1])
    # lr = 0: the learner's weights after fit are its initial weights, the guide's.
    args = [*GUIDED, f"--model.guide_weights={guide_ckpt}", "--model.occlusion=block", "--model.lr=0", "--name=oc"]
    cli = main(["fit", *tiny_args, *args])
    assert "val_acc_synthetic_hr_lr_oc_block20" in cli.trainer.callback_metrics
    learner, guide = _state(runs / "oc/checkpoints/last.ckpt", "learners.0."), _state(guide_ckpt, "backbone.")
    assert all(torch.equal(learner[k], guide[k]) for k in learner if "running" not in k and "num_batches" not in k)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"test_mode": "sometimes"}, "test_mode"),
        ({"occlusion": "left"}, "occlusion"),
        ({"occlusion_area": 0.0}, "occlusion_area"),
        ({"guidance_weight": -1.0}, "guidance_weight"),
        ({"learner_sizes": [8, 8]}, "learner_sizes"),
        ({"learner_sizes": [64]}, "learner_sizes"),
        ({"learner_sizes": [8], "occlusion": "block"}, "occlusion"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _tiny_model(**kwargs)


def test_guide_module_is_the_hr_path() -> None:
    model = _tiny_model()
    model.eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.embed_hr(x), model.guide(x))
        assert torch.equal(model.embed_lr(x, torch.tensor([[8, 8], [8, 8]])), model.learners[0](x))
    assert isinstance(model.learners, nn.ModuleList)
