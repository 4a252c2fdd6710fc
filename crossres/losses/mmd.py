"""Multi-kernel maximum mean discrepancy (MK-MMD), the domain loss of RIM (001, Eqs. (7)-(9)).

RIM measures the discrepancy between the features of the coarse super-resolved probes and of the real HR faces with
the MK-MMD of Gretton et al. 2012 (ref. [17] of 001): the squared RKHS distance between the two mean embeddings,
Eq. (7), written with the kernel trick as the biased (V-statistic) estimate of Eq. (8), for a kernel that is a convex
combination of Gaussian kernels, Eq. (9).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = ["MKMMD", "gaussian_kernel", "mk_mmd"]


def _squared_distances(x: Tensor, y: Tensor) -> Tensor:
    # ||x - y||^2 = ||x||^2 + ||y||^2 - 2 x.y, clamped (round-off) so that exp() of it stays <= 1; unlike cdist it has
    # a finite gradient at zero distance.
    d2 = x.pow(2).sum(1, keepdim=True) + y.pow(2).sum(1).unsqueeze(0) - 2.0 * x @ y.t()
    return d2.clamp_min(0.0)


def gaussian_kernel(x: Tensor, y: Tensor, bandwidths: Tensor, weights: Tensor) -> Tensor:
    """The multi-kernel Gram matrix ``k(x_i, y_j) = sum_u beta_u exp(-||x_i - y_j||^2 / (2 sigma_u))`` (Eq. (9)).

    Args:
        x: ``(N1, D)`` samples.
        y: ``(N2, D)`` samples.
        bandwidths: ``(U,)`` bandwidths ``sigma_u`` (in squared-distance units, as Eq. (9) writes the kernel).
        weights: ``(U,)`` kernel weights ``beta_u``.

    Returns:
        ``(N1, N2)`` kernel values.
    """
    d2 = _squared_distances(x, y)
    exponents = -d2.unsqueeze(-1) / (2.0 * bandwidths.to(d2))  # (N1, N2, U)
    return (torch.exp(exponents) * weights.to(d2)).sum(-1)


def mk_mmd(source: Tensor, target: Tensor, bandwidths: Tensor, weights: Tensor) -> Tensor:
    """Biased MK-MMD estimate of Eq. (8) between two samples.

    ``1/N1^2 sum k(s, s') - 2/(N1 N2) sum k(s, t) + 1/N2^2 sum k(t, t')``, diagonal terms included (Eq. (8) sums over
    all ``n1, n1'``).

    Args:
        source: ``(N1, D)`` features of the first domain (RIM: coarse SR probes ``X_sr``).
        target: ``(N2, D)`` features of the second domain (RIM: HR faces ``X_hr``).
        bandwidths: ``(U,)`` Gaussian bandwidths ``sigma_u``.
        weights: ``(U,)`` convex kernel weights ``beta_u``.

    Returns:
        Scalar MMD^2 (``>= 0`` up to round-off).
    """
    k_ss = gaussian_kernel(source, source, bandwidths, weights).mean()
    k_st = gaussian_kernel(source, target, bandwidths, weights).mean()
    k_tt = gaussian_kernel(target, target, bandwidths, weights).mean()
    return k_ss - 2.0 * k_st + k_tt


def _gather(x: Tensor) -> Tensor:
    # All ranks' samples with gradient flowing back to each rank's own part (torch.distributed.nn keeps autograd).
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x), dim=0)


class MKMMD(nn.Module):
    """MK-MMD loss of RIM (001, Eqs. (7)-(9)) with convex Gaussian-kernel weights.

    The kernel weights are ``beta = softmax(weight_logits)``, so ``beta_u > 0`` and ``sum_u beta_u = 1`` hold by
    construction (Eq. (9)). With ``learn_weights=True`` the logits are a parameter that the domain discriminator's
    optimizer updates while maximising the MMD (RIM Eq. (6)): the maximisation over the kernel family of Gretton et
    al. 2012. Otherwise they are a buffer and the weights stay uniform.

    Args:
        bandwidths: Gaussian bandwidths ``sigma_u`` of Eq. (9) (squared-distance units: ``exp(-d^2 / (2 sigma_u))``).
        learn_weights: make the kernel weights learnable (uniform at start).
        relative: multiply every bandwidth by the (detached) mean squared distance of the pooled samples, as DAN
            (Long et al. 2015) does, so that the kernels follow the scale of the features.
        gather_distributed: under DDP, estimate the MMD on the samples of all ranks (gathered with gradient).

    Raises:
        ValueError: if ``bandwidths`` is empty or holds a non-positive value.
    """

    weight_logits: Tensor
    bandwidths: Tensor

    def __init__(
        self,
        bandwidths: Sequence[float] = (0.125, 0.25, 0.5, 1.0, 2.0),
        learn_weights: bool = False,
        relative: bool = False,
        gather_distributed: bool = False,
    ) -> None:
        super().__init__()
        values = [float(b) for b in bandwidths]
        if not values or min(values) <= 0:
            raise ValueError(f"bandwidths must be a non-empty list of positive numbers, got {list(bandwidths)}")
        self.register_buffer("bandwidths", torch.tensor(values), persistent=False)
        logits = torch.zeros(len(values))
        if learn_weights:
            self.weight_logits = nn.Parameter(logits)
        else:
            self.register_buffer("weight_logits", logits)
        self.relative = relative
        self.gather_distributed = gather_distributed

    @property
    def kernel_weights(self) -> Tensor:
        """The convex weights ``beta_u`` of Eq. (9), shape ``(U,)``."""
        return torch.softmax(self.weight_logits, dim=0)

    def forward(self, source: Tensor, target: Tensor) -> Tensor:
        """MMD^2 of Eq. (8) between ``source`` ``(N1, D)`` and ``target`` ``(N2, D)``.

        Args:
            source: first-domain features (flattened if more than 2-D).
            target: second-domain features, same feature size.

        Returns:
            Scalar MMD^2.

        Raises:
            ValueError: if the feature sizes differ or a sample is empty.
        """
        source, target = source.flatten(1), target.flatten(1)
        if source.shape[1] != target.shape[1] or source.shape[0] == 0 or target.shape[0] == 0:
            raise ValueError(
                f"MK-MMD needs two non-empty samples of the same feature size, got {tuple(source.shape)} and "
                f"{tuple(target.shape)}"
            )
        if self.gather_distributed:
            source, target = _gather(source), _gather(target)
        bandwidths = self.bandwidths
        if self.relative:
            pooled = torch.cat([source, target]).detach()
            bandwidths = bandwidths * _squared_distances(pooled, pooled).mean().clamp_min(1e-12)
        return mk_mmd(source, target, bandwidths, self.kernel_weights)
