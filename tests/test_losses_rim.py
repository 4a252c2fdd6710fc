"""RIM's losses (001, Eqs. (2)-(4), (7)-(9), (11), (12)) against naive, paper-literal references; FHN/HRN parts."""

from __future__ import annotations

import math

import pytest
import torch

from crossres.losses.distillation import ResidualDistillationLoss, StudentDistillationLoss
from crossres.losses.hallucination import LandmarkHeatmapLoss, ParsingLoss, PixelLoss
from crossres.losses.mmd import MKMMD
from crossres.nn.backbones import build_backbone
from crossres.nn.distillation import AdaptedBlocks, BlockAdapters, BlockwiseBackbone
from crossres.nn.hallucination import PRIOR_STRIDE, FaceHallucinationNet, TriPathGenerator


def _grads(*tensors: torch.Tensor) -> list[torch.Tensor]:
    return [t.grad.clone() for t in tensors]  # type: ignore[union-attr]


def _leaf(*shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).requires_grad_(True)


# ------------------------------------------------------------------------------------------------ MK-MMD
def _naive_kernel(x: torch.Tensor, y: torch.Tensor, sigmas: list[float], betas: torch.Tensor) -> torch.Tensor:
    # Eq. (9): k = sum_u beta_u k_u, k_u(x, y) = exp(-|x - y|^2 / (2 sigma_u)).
    d2 = sum((x[d] - y[d]) ** 2 for d in range(x.shape[0]))
    return sum(betas[u] * torch.exp(-d2 / (2 * sigmas[u])) for u in range(len(sigmas)))  # type: ignore[return-value]


def _naive_mmd(xs: torch.Tensor, xt: torch.Tensor, sigmas: list[float], betas: torch.Tensor) -> torch.Tensor:
    # Eq. (8), written out with double loops.
    n1, n2 = xs.shape[0], xt.shape[0]
    ss = sum(_naive_kernel(xs[i], xs[j], sigmas, betas) for i in range(n1) for j in range(n1))
    st = sum(_naive_kernel(xs[i], xt[j], sigmas, betas) for i in range(n1) for j in range(n2))
    tt = sum(_naive_kernel(xt[i], xt[j], sigmas, betas) for i in range(n2) for j in range(n2))
    return ss / n1**2 - 2 * st / (n1 * n2) + tt / n2**2  # type: ignore[return-value]


def test_mk_mmd_matches_double_loop_values_and_gradients() -> None:
    sigmas = [0.5, 1.0, 4.0]
    mmd = MKMMD(sigmas, learn_weights=True).double()
    with torch.no_grad():
        mmd.weight_logits.copy_(torch.tensor([0.3, -1.0, 0.7], dtype=torch.float64))
    xs, xt = _leaf(5, 3, seed=1), _leaf(7, 3, seed=2)
    xs.data += 0.5  # a shifted domain
    value = mmd(xs, xt)
    value.backward()
    g_xs, g_xt = _grads(xs, xt)
    g_logits = mmd.weight_logits.grad.clone()  # type: ignore[union-attr]

    xs2, xt2 = xs.detach().clone().requires_grad_(True), xt.detach().clone().requires_grad_(True)
    logits = mmd.weight_logits.detach().clone().requires_grad_(True)
    reference = _naive_mmd(xs2, xt2, sigmas, torch.softmax(logits, 0))
    reference.backward()
    assert value.item() == pytest.approx(reference.item(), rel=1e-10, abs=1e-12)
    assert value.item() > 0
    torch.testing.assert_close(g_xs, xs2.grad)
    torch.testing.assert_close(g_xt, xt2.grad)
    torch.testing.assert_close(g_logits, logits.grad)


def test_mk_mmd_kernel_weights_are_convex_and_zero_for_one_sample() -> None:
    mmd = MKMMD([0.25, 1.0, 2.0, 8.0], learn_weights=True)
    for logits in (torch.zeros(4), torch.tensor([50.0, -50.0, 3.0, 0.0]), torch.randn(4) * 10):
        with torch.no_grad():
            mmd.weight_logits.copy_(logits)
        beta = mmd.kernel_weights
        assert torch.all(beta >= 0) and beta.sum().item() == pytest.approx(1.0)
    assert torch.allclose(MKMMD([1.0, 2.0]).kernel_weights, torch.tensor([0.5, 0.5]))
    assert not any(p.requires_grad for p in MKMMD([1.0]).parameters())
    x = torch.randn(6, 4)
    assert MKMMD()(x, x).abs().item() < 1e-6


def test_mk_mmd_relative_bandwidths_follow_feature_scale() -> None:
    xs, xt = torch.randn(4, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64) + 1
    relative = MKMMD([1.0, 2.0], relative=True).double()
    pooled = torch.cat([xs, xt])
    scale = torch.cdist(pooled, pooled).pow(2).mean().item()
    fixed = MKMMD([scale, 2 * scale]).double()
    assert relative(xs, xt).item() == pytest.approx(fixed(xs, xt).item(), rel=1e-6)  # bandwidths stored in float32
    # Scale-free: multiplying the features does not change the relative MMD.
    assert relative(3 * xs, 3 * xt).item() == pytest.approx(relative(xs, xt).item(), rel=1e-9)


def test_mk_mmd_errors() -> None:
    with pytest.raises(ValueError, match="bandwidths"):
        MKMMD([0.0, 1.0])
    with pytest.raises(ValueError, match="same feature size"):
        MKMMD()(torch.randn(3, 4), torch.randn(3, 5))


# ------------------------------------------------------------------------------------ Eq. (11), Eq. (12)
def test_student_loss_eq11_matches_naive() -> None:
    teacher, student = _leaf(3, 4, 2, 2, seed=3), _leaf(3, 4, 2, 2, seed=4)
    for reduction in ("sum", "mean"):
        student.grad = None
        loss = StudentDistillationLoss(reduction)(teacher.detach(), student)  # type: ignore[arg-type]
        loss.backward()
        s2 = student.detach().clone().requires_grad_(True)
        # ||f_T^K - f_S^K||_2^2 per sample, averaged over the batch ("sum"); or per element ("mean").
        per_sample = [sum((teacher[b].flatten()[i] - s2[b].flatten()[i]) ** 2 for i in range(16)) for b in range(3)]
        reference = sum(per_sample) / 3
        if reduction == "mean":
            reference = reference / 16
        reference.backward()  # type: ignore[union-attr]
        assert loss.item() == pytest.approx(reference.item(), rel=1e-10)  # type: ignore[union-attr]
        torch.testing.assert_close(student.grad, s2.grad)
    with pytest.raises(ValueError, match="adapter"):
        StudentDistillationLoss()(torch.randn(2, 4, 2, 2), torch.randn(2, 3, 2, 2))


def test_assistant_loss_eq12_matches_naive() -> None:
    shapes = [(2, 3, 4, 4), (2, 5, 2, 2), (2, 6, 1, 1)]
    t = [_leaf(*s, seed=10 + k).detach() for k, s in enumerate(shapes)]
    s = [_leaf(*sh, seed=20 + k) for k, sh in enumerate(shapes)]
    a = [_leaf(*sh, seed=30 + k) for k, sh in enumerate(shapes)]
    for reduction in ("sum", "mean"):
        for x in (*s, *a):
            x.grad = None
        loss = ResidualDistillationLoss(reduction, detach_student=False)(t, s, a)  # type: ignore[arg-type]
        loss.backward()
        s2 = [x.detach().clone().requires_grad_(True) for x in s]
        a2 = [x.detach().clone().requires_grad_(True) for x in a]
        reference = torch.zeros((), dtype=torch.float64)
        for k in range(len(shapes)):  # sum_k ||(f_T^k - f_S^k) - f_A^k||_2^2
            numel = t[k][0].numel()
            block = (
                sum(
                    sum(
                        ((t[k][b].flatten()[i] - s2[k][b].flatten()[i]) - a2[k][b].flatten()[i]) ** 2
                        for i in range(numel)
                    )
                    for b in range(2)
                )
                / 2
            )
            reference = reference + (block / numel if reduction == "mean" else block)
        reference.backward()
        assert loss.item() == pytest.approx(reference.item(), rel=1e-10)
        for x, y in zip((*s, *a), (*s2, *a2), strict=True):
            torch.testing.assert_close(x.grad, y.grad)
    # The assistant's objective: with detach_student the student receives no gradient from Eq. (12).
    for x in (*s, *a):
        x.grad = None
    ResidualDistillationLoss("mean")(t, s, a).backward()
    assert all(x.grad is None for x in s) and all(x.grad is not None for x in a)
    with pytest.raises(ValueError, match="same number"):
        ResidualDistillationLoss()(t, s[:2], a)


def test_assistant_block_weights_weight_each_block_of_eq12() -> None:
    shapes = [(2, 3, 4, 4), (2, 5, 2, 2), (2, 6, 1, 1)]
    t = [_leaf(*sh, seed=10 + k).detach() for k, sh in enumerate(shapes)]
    s = [_leaf(*sh, seed=20 + k).detach() for k, sh in enumerate(shapes)]
    a = [_leaf(*sh, seed=30 + k) for k, sh in enumerate(shapes)]
    blocks = [ResidualDistillationLoss("sum")([t[k]], [s[k]], [a[k]]) for k in range(3)]  # type: ignore[list-item]
    weighted = ResidualDistillationLoss("sum", block_weights=[0.0, 2.0, 0.5])(t, s, a)  # type: ignore[arg-type]
    assert weighted.item() == pytest.approx((2 * blocks[1] + 0.5 * blocks[2]).item(), rel=1e-12)
    weighted.backward()
    assert a[0].grad is None and a[1].grad is not None and a[2].grad is not None  # a zero weight: no gradient
    unweighted = ResidualDistillationLoss("sum", block_weights=[1, 1, 1])(t, s, a)  # type: ignore[arg-type]
    assert unweighted.item() == pytest.approx(ResidualDistillationLoss("sum")(t, s, a).item(), rel=1e-12)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="2 block_weights for 3 blocks"):
        ResidualDistillationLoss(block_weights=[1, 1])(t, s, a)  # type: ignore[arg-type]
    for bad in ([0, 0, 0], [1, -1, 1]):
        with pytest.raises(ValueError, match="block_weights"):
            ResidualDistillationLoss(block_weights=bad)


# ------------------------------------------------------------------------------------ Eqs. (2), (3), (4)
def test_pixel_loss_eq2_matches_naive() -> None:
    sr, hr = _leaf(2, 3, 4, 5, seed=5), torch.rand(2, 3, 4, 5, dtype=torch.float64)
    for reduction, scale in (("sum", 1.0), ("mean", 1.0 / 60)):
        sr.grad = None
        loss = PixelLoss(reduction)(sr, hr)  # type: ignore[arg-type]
        loss.backward()
        sr2 = sr.detach().clone().requires_grad_(True)
        total = sum(
            (sr2[b, c, i, j] - hr[b, c, i, j]) ** 2
            for b in range(2)
            for c in range(3)
            for i in range(4)
            for j in range(5)
        )
        reference = total / 2 * scale  # sum over pixels (and colours) per image, mean over the batch
        reference.backward()  # type: ignore[union-attr]
        assert loss.item() == pytest.approx(reference.item(), rel=1e-10)  # type: ignore[union-attr]
        torch.testing.assert_close(sr.grad, sr2.grad)


def test_landmark_loss_eq3_matches_naive() -> None:
    pred, target = _leaf(2, 3, 4, 4, seed=6), torch.rand(2, 3, 4, 4, dtype=torch.float64)
    for reduction in ("sum", "mean"):
        pred.grad = None
        loss = LandmarkHeatmapLoss(reduction)(pred, target)  # type: ignore[arg-type]
        loss.backward()
        p2 = pred.detach().clone().requires_grad_(True)
        n = 3  # 1/N sum_n sum_ij (H_sr - H_hr)^2, averaged over the batch
        per_image = [
            sum(sum((p2[b, k, i, j] - target[b, k, i, j]) ** 2 for i in range(4) for j in range(4)) for k in range(n))
            / n
            for b in range(2)
        ]
        reference = sum(per_image) / 2
        if reduction == "mean":
            reference = reference / 16
        reference.backward()  # type: ignore[union-attr]
        assert loss.item() == pytest.approx(reference.item(), rel=1e-10)  # type: ignore[union-attr]
        torch.testing.assert_close(pred.grad, p2.grad)


def test_parsing_loss_eq4_matches_naive() -> None:
    logits = _leaf(2, 11, 3, 3, seed=7)
    labels = torch.randint(0, 11, (2, 3, 3), generator=torch.Generator().manual_seed(0))
    for reduction in ("sum", "mean"):
        logits.grad = None
        loss = ParsingLoss(reduction)(logits, labels)  # type: ignore[arg-type]
        loss.backward()
        l2 = logits.detach().clone().requires_grad_(True)
        c = 11
        per_pixel = {}
        for b in range(2):
            for i in range(3):
                for j in range(3):
                    z = sum(torch.exp(l2[b, k, i, j]) for k in range(c))
                    y_tilde = [torch.exp(l2[b, k, i, j]) / z for k in range(c)]
                    y = [1.0 if k == labels[b, i, j] else 0.0 for k in range(c)]
                    per_pixel[b, i, j] = -sum(y[k] * torch.log(y_tilde[k]) for k in range(c))
        if reduction == "sum":  # Eq. (4): -1/C sum_c y log y~ per pixel, summed over pixels, mean over the batch
            reference = sum(v / c for v in per_pixel.values()) / 2
        else:
            reference = sum(per_pixel.values()) / len(per_pixel)
        reference.backward()  # type: ignore[union-attr]
        assert loss.item() == pytest.approx(reference.item(), rel=1e-10)  # type: ignore[union-attr]
        torch.testing.assert_close(logits.grad, l2.grad)
    with pytest.raises(ValueError, match="labels"):
        ParsingLoss()(torch.randn(2, 11, 3, 3), torch.zeros(2, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="reduction"):
        PixelLoss("max")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------- FHN and HRN parts
def test_tripath_output_shapes() -> None:
    generator = TriPathGenerator(channels=8, feature_channels=6, num_landmarks=68, num_parsing_classes=11, blocks=1)
    out = generator(torch.rand(2, 3, 32, 24))
    assert PRIOR_STRIDE == 2  # the paths predict at half resolution, as FSRNet's prior network
    assert out.features.shape == (2, 6, 16, 12)
    assert out.heatmaps.shape == (2, 68, 16, 12)
    assert out.parsing_logits.shape == (2, 11, 16, 12)
    maps = out.concat()
    assert maps.shape == (2, 6 + 68 + 11, 16, 12)
    assert torch.allclose(maps[:, 74:].sum(1), torch.ones(2, 16, 12))  # parsing enters as probabilities
    with pytest.raises(ValueError, match="even"):
        generator(torch.rand(1, 3, 31, 32))


def test_fhn_shapes_and_players() -> None:
    fhn = FaceHallucinationNet(channels=8, feature_channels=4, blocks=1, domain_dim=16)
    lr, hr = torch.rand(3, 3, 32, 32), torch.rand(3, 3, 32, 32)
    out = fhn(lr, hr)
    assert out.coarse.shape == out.sr.shape == (3, 3, 32, 32)
    assert out.heatmaps.shape == (3, 68, 16, 16) and out.parsing_logits.shape == (3, 11, 16, 16)
    assert out.maps.shape == out.maps_hr.shape == (3, 4 + 68 + 11, 16, 16)  # type: ignore[union-attr]
    features = fhn.domain(out.maps)
    assert features.shape == (3, 16)
    fhn.domain.normalize = True
    assert torch.allclose(fhn.domain(out.maps).norm(dim=1), torch.ones(3))
    assert fhn(lr).maps_hr is None
    generator = {id(p) for p in fhn.generator_parameters()}
    others = [p for m in (fhn.integrator, fhn.domain) for p in m.parameters()]
    assert generator and not generator & {id(p) for p in others}
    assert len(generator) + len(others) == len(list(fhn.parameters()))


def test_blockwise_iresnet_matches_backbone_and_adapters() -> None:
    net = build_backbone("iresnet18", embedding_size=16, image_size=(32, 32), width=8).eval()
    teacher = BlockwiseBackbone(net)
    x = torch.rand(2, 3, 32, 32)
    maps = teacher(x)
    assert [tuple(f.shape[1:]) for f in maps] == [(8, 16, 16), (16, 8, 8), (32, 4, 4), (64, 2, 2)]
    assert teacher.channels == [8, 16, 32, 64]
    torch.testing.assert_close(teacher.embed(x), net(x))
    student = BlockwiseBackbone(build_backbone("iresnet34", 16, (32, 32), width=4), keep_head=False)
    assert not any("fc." in k or "features." in k for k in student.state_dict())
    with pytest.raises(RuntimeError, match="keep_head"):
        student.head(maps[-1])
    adapted = AdaptedBlocks(student, teacher.shapes, "student")
    assert [f.shape for f in adapted(x)] == [f.shape for f in maps]
    same = BlockAdapters([8, 16], [8, 32])
    assert isinstance(same.adapters[0], torch.nn.Identity) and isinstance(same.adapters[1], torch.nn.Conv2d)


def test_blockwise_timm_and_shape_mismatch() -> None:
    net = build_backbone("resnet18", embedding_size=16, image_size=(64, 64)).eval()
    blocks = BlockwiseBackbone(net)
    x = torch.rand(1, 3, 64, 64)
    assert len(blocks(x)) == 4 and blocks.embed(x).shape == (1, 16)
    torch.testing.assert_close(blocks.embed(x), net(x))
    iresnet = BlockwiseBackbone(build_backbone("iresnet18", 16, (64, 64), width=8), keep_head=False)
    with pytest.raises(ValueError, match="spatial sizes"):
        AdaptedBlocks(iresnet, blocks.shapes, "student")
    assert math.isfinite(float(blocks.embed(x).sum()))
