"""Residual knowledge distillation of RIM's HRN (001, §3.2): the student loss Eq. (11), the assistant loss Eq. (12).

The teacher, student and assistant networks are split into ``K`` blocks; ``f_T^k``, ``f_S^k`` and ``f_A^k`` are the
feature maps at the output of block ``k`` (same shape for the three networks). The student reproduces the teacher's
last map, Eq. (11); the assistant learns the residual ``f_T^k - f_S^k`` at every block, Eq. (12); inference uses
``f_S = f_S^K + f_A^K``.

In joint training (§3.3) FHN also receives both errors relative to the teacher's map energy, ``L_S / ||f_T^K||²``
and ``L_A / sum_k w_k ||f_T^k||²`` (dimensionless; the raw squared norms scale with the teacher's activations): each
loss's :meth:`~StudentDistillationLoss.teacher_energy` is its denominator.

Both losses have two reductions: ``"sum"`` is the paper's squared L2 norm per sample, averaged over the batch;
``"mean"`` also averages over the elements of each map (a constant rescaling per block).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

__all__ = ["ResidualDistillationLoss", "StudentDistillationLoss"]

Reduction = Literal["mean", "sum"]


def _check_reduction(reduction: str) -> None:
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")


def _squared_norm(diff: Tensor, reduction: str) -> Tensor:
    squared = diff.pow(2)
    return squared.mean() if reduction == "mean" else squared.flatten(1).sum(1).mean()


def _energy(feature_map: Tensor, reduction: str) -> Tensor:
    return _squared_norm(feature_map, reduction).clamp_min(1e-12)


class StudentDistillationLoss(nn.Module):
    """Eq. (11): ``L_S = ||f_T^K - f_S^K||_2^2`` on the output of the last block.

    Args:
        reduction: ``"sum"`` (the squared norm per sample, averaged over the batch) or ``"mean"`` (per element).

    Raises:
        ValueError: on an unknown ``reduction``.
    """

    def __init__(self, reduction: Reduction = "mean") -> None:
        super().__init__()
        _check_reduction(reduction)
        self.reduction = reduction

    def forward(self, teacher: Tensor, student: Tensor) -> Tensor:
        """Student loss.

        Args:
            teacher: ``f_T^K``, ``(B, C, H, W)`` (the teacher is frozen; pass it detached).
            student: ``f_S^K``, same shape.

        Returns:
            Scalar loss.

        Raises:
            ValueError: if the shapes differ.
        """
        if teacher.shape != student.shape:
            raise ValueError(
                f"Eq. (11): teacher and student maps must have the same shape, got {tuple(teacher.shape)} and "
                f"{tuple(student.shape)} (add a 1x1 adapter where channels differ)"
            )
        return _squared_norm(teacher - student, self.reduction)

    def inner_blocks(self, teacher: Sequence[Tensor], student: Sequence[Tensor], blocks: Sequence[int]) -> Tensor:
        """The same squared error at inner blocks ``k < K`` (fitting the 1x1 adapters of a student's maps).

        Args:
            teacher: ``[f_T^1, ..., f_T^K]``.
            student: ``[f_S^1, ..., f_S^K]``, same shapes.
            blocks: 0-based indices of the blocks to compare.

        Returns:
            Scalar sum over ``blocks``.
        """
        return torch.stack([self(teacher[k], student[k]) for k in blocks]).sum()

    def teacher_energy(self, teacher: Sequence[Tensor]) -> Tensor:
        """``||f_T^K||²`` (Eq. (11) of a student that outputs zeros), at least ``1e-12``.

        Args:
            teacher: ``[f_T^1, ..., f_T^K]``.

        Returns:
            Scalar.
        """
        return _energy(teacher[-1], self.reduction)


class ResidualDistillationLoss(nn.Module):
    """Eq. (12): ``L_A = sum_k ||(f_T^k - f_S^k) - f_A^k||_2^2`` over all ``K`` blocks.

    ``L_A`` is the assistant's objective (it is minimised over ``theta_A``); with ``detach_student=True`` the
    student's maps are constants in it, so that a joint backward pass does not also move the student towards
    ``f_T - f_A`` (the student's own objective is Eq. (11)).

    Args:
        reduction: ``"sum"`` (squared norm per sample and block, averaged over the batch) or ``"mean"`` (per
            element of each block's map, summed over blocks).
        detach_student: treat ``f_S^k`` as constants.
        block_weights: a weight ``w_k >= 0`` per block, ``sum_k w_k ||...||^2`` (not in the paper, whose Eq. (12)
            weights every block by 1: the default, ``None``).

    Raises:
        ValueError: on an unknown ``reduction`` or a negative or all-zero ``block_weights``.
    """

    def __init__(
        self, reduction: Reduction = "mean", detach_student: bool = True, block_weights: Sequence[float] | None = None
    ) -> None:
        super().__init__()
        _check_reduction(reduction)
        if block_weights is not None and (any(w < 0 for w in block_weights) or not any(w > 0 for w in block_weights)):
            raise ValueError(f"block_weights must be >= 0 with at least one > 0, got {list(block_weights)}")
        self.reduction = reduction
        self.detach_student = detach_student
        self.block_weights = None if block_weights is None else [float(w) for w in block_weights]

    def weights(self, num_blocks: int) -> list[float]:
        """The weight ``w_k`` of each of ``num_blocks`` blocks (all 1 unless ``block_weights`` was given)."""
        return self.block_weights or [1.0] * num_blocks

    def teacher_energy(self, teacher: Sequence[Tensor]) -> Tensor:
        """``sum_k w_k ||f_T^k||²`` (Eq. (12) of a student and an assistant that output zeros; each block's norm at
        least ``1e-12``).

        Args:
            teacher: ``[f_T^1, ..., f_T^K]``.

        Returns:
            Scalar.
        """
        weights = self.weights(len(teacher))
        return sum(w * _energy(f, self.reduction) for w, f in zip(weights, teacher, strict=True))  # type: ignore[return-value]

    def forward(self, teacher: Sequence[Tensor], student: Sequence[Tensor], assistant: Sequence[Tensor]) -> Tensor:
        """Assistant loss.

        Args:
            teacher: ``[f_T^1, ..., f_T^K]``.
            student: ``[f_S^1, ..., f_S^K]``, same shapes.
            assistant: ``[f_A^1, ..., f_A^K]``, same shapes.

        Returns:
            Scalar loss.

        Raises:
            ValueError: if the numbers of blocks or the shapes differ.
        """
        if not (len(teacher) == len(student) == len(assistant)) or not teacher:
            raise ValueError(
                f"Eq. (12): teacher, student and assistant need the same number K >= 1 of block outputs, got "
                f"{len(teacher)}, {len(student)} and {len(assistant)}"
            )
        weights = self.weights(len(teacher))
        if len(weights) != len(teacher):
            raise ValueError(f"Eq. (12): {len(weights)} block_weights for {len(teacher)} blocks")
        total: Tensor | None = None
        for k, (f_t, f_s, f_a) in enumerate(zip(teacher, student, assistant, strict=True)):
            if not (f_t.shape == f_s.shape == f_a.shape):
                raise ValueError(
                    f"Eq. (12): block {k + 1} maps must have one shape, got teacher {tuple(f_t.shape)}, student "
                    f"{tuple(f_s.shape)}, assistant {tuple(f_a.shape)}"
                )
            if self.detach_student:
                f_s = f_s.detach()
            if weights[k] == 0:
                continue
            term = weights[k] * _squared_norm((f_t - f_s) - f_a, self.reduction)
            total = term if total is None else total + term
        assert total is not None
        return total
