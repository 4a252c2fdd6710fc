"""RIM's torch model and the losses it assembles (001): Eq. (1), the §3.3 energies, RIM's state dict in torch alone."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from crossres.losses.distillation import ResidualDistillationLoss, StudentDistillationLoss
from crossres.losses.hallucination import HallucinationLoss, LandmarkHeatmapLoss, ParsingLoss, PixelLoss
from crossres.methods.rim import RIM
from crossres.nn.hallucination import FaceHallucinationNet
from crossres.nn.rim import PARTS, ResolutionInvariantNet

from .conftest import TINY_RIM

SMALL: dict[str, Any] = {
    **TINY_RIM,
    "num_classes": 6,
    "image_size": (32, 32),
    "teacher_weights": None,
    "teacher_embedding_size": 32,
}


# ------------------------------------------------------------------------------------------------ Eq. (1)
def test_hallucination_loss_eq1_is_the_weighted_sum_of_its_terms() -> None:
    g = torch.Generator().manual_seed(0)
    sr, hr = torch.rand(2, 3, 8, 8, generator=g), torch.rand(2, 3, 8, 8, generator=g)
    heatmaps, targets = torch.rand(2, 5, 4, 4, generator=g), torch.rand(2, 5, 4, 4, generator=g)
    logits, labels = torch.randn(2, 3, 4, 4, generator=g), torch.randint(0, 3, (2, 4, 4), generator=g)
    domain = torch.tensor(0.3)
    loss = HallucinationLoss("sum", lambda_domain=2.0, lambda_pixel=0.5, lambda_landmark=3.0, lambda_parsing=0.25)
    total, terms = loss(domain, sr, hr, (heatmaps, targets, logits, labels))
    pixel, landmark = PixelLoss("sum")(sr, hr), LandmarkHeatmapLoss("sum")(heatmaps, targets)
    parsing = ParsingLoss("sum")(logits, labels)
    assert list(terms) == ["mmd", "pixel", "landmark", "parsing"]
    torch.testing.assert_close(total, 2.0 * domain + 0.5 * pixel + 3.0 * landmark + 0.25 * parsing)
    total, terms = loss(domain, sr, hr)  # no priors: Eqs. (3)-(4) left out
    assert list(terms) == ["mmd", "pixel"]
    torch.testing.assert_close(total, 2.0 * domain + 0.5 * pixel)
    with pytest.raises(ValueError, match="lambda_parsing"):
        HallucinationLoss(lambda_parsing=-1.0)


# --------------------------------------------------------------------------------- §3.3, Eq. (11) adapters
def test_teacher_energies_and_inner_blocks() -> None:
    g = torch.Generator().manual_seed(1)
    teacher = [torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 5, 2, 2, generator=g)]
    student = [torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 5, 2, 2, generator=g)]
    norms = [float(f.pow(2).flatten(1).sum(1).mean()) for f in teacher]  # ||f_T^k||^2 per sample, batch mean
    assert StudentDistillationLoss("sum").teacher_energy(teacher).item() == pytest.approx(norms[-1])
    weighted = ResidualDistillationLoss("sum", block_weights=[0.5, 2.0]).teacher_energy(teacher)
    assert weighted.item() == pytest.approx(0.5 * norms[0] + 2.0 * norms[1])
    zero = [torch.zeros(1, 2, 2, 2)]
    assert StudentDistillationLoss().teacher_energy(zero).item() == pytest.approx(1e-12)  # never divides by zero
    loss = StudentDistillationLoss("mean")
    torch.testing.assert_close(loss.inner_blocks(teacher, student, [0]), loss(teacher[0], student[0]))


def test_domain_features_are_the_two_samples_of_eq8() -> None:
    fhn = FaceHallucinationNet(channels=4, feature_channels=4, blocks=1, num_landmarks=5, num_parsing_classes=3)
    lr, hr = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    out = fhn(lr, hr)
    assert out.maps_hr is not None
    sr_features, hr_features = fhn.domain_features(out)
    torch.testing.assert_close(sr_features, fhn.domain(out.maps))
    torch.testing.assert_close(hr_features, fhn.domain(out.maps_hr))
    detached = fhn.domain_features(out, detach=True)[0].sum()
    detached.backward()
    assert all(p.grad is None for p in fhn.coarse.parameters())  # the generator gets nothing from Eq. (6)
    with pytest.raises(ValueError, match="HR faces"):
        fhn.domain_features(fhn(lr))


# ------------------------------------------------------------------------------------------- torch model
def test_rim_state_dict_is_the_torch_models() -> None:
    torch.manual_seed(0)
    rim = RIM(**SMALL)
    net = ResolutionInvariantNet.build(rim.hparams, rim.image_size)
    keys = list(rim.state_dict())
    assert keys == list(net.state_dict())
    assert {k.split(".", 1)[0] for k in keys} == {"teacher", "student", "assistant", "fhn", "mmd"} <= set(PARTS)
    net.load_state_dict(rim.state_dict())  # a RIM checkpoint's weights run without Lightning
    rim.eval(), net.eval()
    assert list(net.players()) == rim.player_names() == ["fhn", "domain", "student", "assistant"]
    assert rim.net.teacher is rim.teacher and rim.net.fhn is rim.fhn  # one set of weights, not two
    assert not any(p.requires_grad for p in net.teacher.parameters())
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        for mode in ("rim", "fhn_student", "fhn_teacher", "teacher"):
            rim.eval_mode = mode
            torch.testing.assert_close(net.embed_probe(x, mode), rim.embed_lr(x, torch.full((2, 2), 8)))
    without = ResolutionInvariantNet.build(dict(rim.hparams) | {"use_fhn": False, "use_assistant": False}, (32, 32))
    assert list(without.players()) == ["student"]
    with pytest.raises(RuntimeError, match="use_fhn: false"):
        without.super_resolve(x)
