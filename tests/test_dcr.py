"""DCRTwoStage (003): the trunk, branch routing, the frozen trunk of stage 2, and both stages through the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from crossres.cli import main
from crossres.methods.dcr import DCR_STAGE1_COMMAND, DCRTwoStage
from crossres.nn.coupled import BranchPair, DCRTrunk, count_parameters

# The DCR trunk needs faces of at least 48x48 (four unpadded conv + pool stages).
DATA = ["--data.image_size=[48, 48]", "--data.degradation.lr_prob=0.0"]
STAGE1 = [
    "--model=crossres.methods.dcr.DCRTwoStage",
    "--model.stage=1",
    "--model.trunk_kwargs={width: 2}",
    "--model.embedding_size=16",
    "--model.lr=0.01",
    "--data.degradation.lr_views=[40x40, 6x6]",
]
STAGE2 = [
    "--model=crossres.methods.dcr.DCRTwoStage",
    "--model.stage=2",
    "--model.trunk_kwargs={width: 2}",
    "--model.embedding_size=16",
    "--model.branch_features=8",
    "--model.branch_sizes=[4, 8]",
    "--model.lr=0.01",
    "--data.degradation.lr_views=[4, 8]",
]


def _model(**kwargs: object) -> DCRTwoStage:
    args = {"num_classes": 5, "image_size": (48, 48), "trunk_kwargs": {"width": 2}, "embedding_size": 16}
    return DCRTwoStage(**(args | kwargs))  # type: ignore[arg-type]


def test_trunk_and_branch_sizes_are_the_papers() -> None:
    # 003 §I/§II-C: a 105 MB trunk and 2 MB per branch pair, 98.1 % / 1.9 % of the parameters.
    trunk = DCRTrunk(512, (112, 96), width=32)
    assert trunk(torch.rand(1, 3, 112, 96)).shape == (1, 512)
    pair = BranchPair(512, 512, num_classes=10).inference_parameters()
    assert round(count_parameters(trunk) * 4 / 2**20) == 105
    assert round(pair * 4 / 2**20) == 2
    assert round(100 * pair / (pair + count_parameters(trunk)), 1) == 1.9


def test_parameter_sizes_property() -> None:
    sizes = _model(stage=2, branch_sizes=[4, 8], branch_features=8).parameter_sizes
    assert sizes["branch_pair"] == 2 * (16 * 8 + 8)
    assert sizes["branches"] == 2 * sizes["branch_pair"]
    assert sizes["trunk_share"] + sizes["branch_share"] == pytest.approx(1.0)
    assert _model(stage=1).parameter_sizes["branch_pair"] == sizes["branch_pair"] * 64  # default 512-d branches


def test_trunk_rejects_too_small_faces() -> None:
    with pytest.raises(ValueError, match=">= 48"):
        DCRTrunk(16, (32, 32), width=2)


def test_branch_is_chosen_per_probe_size() -> None:
    model = _model(stage=2, branch_sizes=[16, 8, 20, 12], branch_features=8)
    assert model.branch_sizes == [8, 12, 16, 20]
    heights = torch.tensor([7, 8, 10, 11, 13, 18, 20, 48])
    lr_size = torch.stack([heights, heights], dim=1)
    chosen = [model.branch_sizes[i] for i in model.branch_index(lr_size).tolist()]
    assert chosen == [8, 8, 8, 12, 12, 16, 20, 20]  # ties (10, 18) go to the smaller size


def test_pairwise_score_is_the_cosine_of_the_probes_pair() -> None:
    torch.manual_seed(0)
    model = _model(stage=2, branch_sizes=[4, 8, 16], branch_features=8).eval()
    hr, lr = torch.rand(3, 3, 48, 48), torch.rand(3, 3, 48, 48)
    lr_size = torch.tensor([[4, 4], [9, 9], [15, 15]])
    with torch.no_grad():
        score = (model.eval_embed_hr(hr) * model.eval_embed_lr(lr, lr_size)).sum(1)
        v_hr, v_lr = model.trunk(hr), model.trunk(lr)
        for i, size in enumerate([4, 8, 16]):
            pair = model.pair(size)
            cosine = F.cosine_similarity(pair.hr.features(v_hr[i : i + 1]), pair.lr.features(v_lr[i : i + 1]))
            # The base normalises the K-block HR embedding: the score is cos(x_k, z_k) / sqrt(K).
            assert torch.allclose(score[i], cosine[0] / 3**0.5, atol=1e-6)


def test_estimator_routing_uses_the_estimator() -> None:
    model = _model(stage=2, branch_sizes=[4, 8], branch_features=8, branch_selection="estimator").eval()
    with torch.no_grad():
        model.estimator.net[-1].bias.copy_(torch.tensor([-100.0, 100.0]))  # always guess 8 px
        embedding = model.embed_lr(torch.rand(2, 3, 48, 48), torch.tensor([[4, 4], [4, 4]]))
    assert torch.count_nonzero(embedding[:, :8]) == 0 and torch.count_nonzero(embedding[:, 8:]) > 0


def test_stage2_keeps_the_trunk_frozen_in_train_mode() -> None:
    model = _model(stage=2, trunk="iresnet18", trunk_kwargs={"width": 4}, branch_sizes=[4], branch_features=8)
    model.train()
    assert not model.trunk.training and model.branches.training
    assert not any(p.requires_grad for p in model.trunk.parameters())
    assert all(p.requires_grad for p in model.branches.parameters())


def test_missing_views_are_named() -> None:
    model = _model(stage=1)
    batch = {"hr": torch.rand(2, 3, 48, 48), "label": torch.tensor([0, 1]), "lr_views": {"40x40px": None}}
    with pytest.raises(KeyError, match="6x6"):
        model.training_step(batch, 0)


def test_stage1_then_stage2_through_the_cli(
    tiny_args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = tmp_path / "runs"
    main(["fit", *tiny_args, *DATA, *STAGE1, "--name=stage1"])
    stage1 = runs / "stage1" / "checkpoints" / "last.ckpt"
    assert stage1.is_file()

    # Stage 2 without the stage-1 file stops before training with the command that makes it.
    with pytest.raises(SystemExit) as error:
        main(["fit", *tiny_args, *DATA, *STAGE2, f"--model.trunk_weights={tmp_path / 'no.ckpt'}", "--name=bad"])
    assert error.value.code == 2
    assert DCR_STAGE1_COMMAND in capsys.readouterr().err

    main(["fit", *tiny_args, *DATA, *STAGE2, f"--model.trunk_weights={stage1}", "--name=stage2"])
    stage2 = runs / "stage2" / "checkpoints" / "last.ckpt"
    before = torch.load(stage1, map_location="cpu", weights_only=True)["state_dict"]
    after = torch.load(stage2, map_location="cpu", weights_only=True)["state_dict"]
    trunk_keys = [k for k in before if k.startswith("trunk.")]
    assert trunk_keys
    for key in trunk_keys:
        assert torch.equal(before[key], after[key]), key  # stage 2 leaves the trunk bit-identical
    assert any(k.startswith("branches.4.hr.mapping") for k in after)
    # Step 2's reference is the frozen stage-1 trunk, scored beside it; step 1 trains the trunk and has none.
    assert (runs / "stage2" / "reference_val.json").is_file() and not (runs / "stage1" / "reference_val.json").exists()

    for selection in ("size", "estimator"):
        main(["test", *tiny_args, *DATA, *STAGE2, f"--model.branch_selection={selection}", "--name=stage2",
              f"--ckpt_path={stage2}"])  # fmt: skip
    results = sorted((runs / "stage2").glob("test-*/results_test.csv"))
    assert results and "HR-LR" in results[-1].read_text()
