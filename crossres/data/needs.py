"""`DataNeeds`: what a method needs from the training batches, checked by the data module before a fit.

A method declares its needs (:meth:`CrossResMethod.data_needs <crossres.methods.base.CrossResMethod.data_needs>`);
:meth:`FaceDataModule.check_needs <crossres.data.datamodule.FaceDataModule.check_needs>` checks them against its
options at ``setup("fit")``, in one place, and names the ``data.*`` key to set. The requirements stop the run
(:class:`~crossres.errors.InputError`); the paper's settings (``lr_prob``, ``several_lr_sizes``) only warn.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DataNeeds"]


@dataclass(frozen=True)
class DataNeeds:
    """What a method needs from the training data; the defaults need nothing.

    Args:
        lr_views: LR views that ``batch["lr_views"]`` must hold, as ``data.degradation.lr_views`` spells them
            (``"14"``, ``"16x12"``; the batch key is ``"14px"``): one network per size (GuidedCNN's learners,
            DCR's resolutions).
        lr_views_key: the model option the ``lr_views`` come from (``"model.learner_sizes"``), for the message.
        any_lr_views: ``batch["lr_views"]`` must hold at least one view, whichever (SiameseCR ST-M2: one branch
            per view).
        landmarks: training items carry ``"landmarks"`` (68 iBUG points: RIM's priors).
        images_per_identity: every batch holds at least this many images of each identity in it
            (``data.train_sampler: identity_balanced``, ``data.images_per_class`` >= it; Octuplet's positives).
        mixed_batches: every batch holds HR and degraded faces (``0 < data.degradation.lr_prob < 1``, ``lr_per:
            sample``, an LR size below the HR size; BatchCR).
        lr_prob: advice: the paper's share of degraded training faces; another ``data.degradation.lr_prob`` warns.
        several_lr_sizes: advice: ``True``: the paper draws each face's LR size from several; ``False``: it trains
            at one; the other warns. ``None``: either.
    """

    lr_views: tuple[str, ...] = ()
    lr_views_key: str | None = None
    any_lr_views: bool = False
    landmarks: bool = False
    images_per_identity: int = 1
    mixed_batches: bool = False
    lr_prob: float | None = None
    several_lr_sizes: bool | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "lr_views", tuple(str(v) for v in self.lr_views))
        if self.images_per_identity < 1:
            raise ValueError(f"DataNeeds.images_per_identity must be >= 1, got {self.images_per_identity}")
        if self.lr_prob is not None and not 0.0 <= self.lr_prob <= 1.0:
            raise ValueError(f"DataNeeds.lr_prob must lie in [0, 1], got {self.lr_prob}")

    @property
    def empty(self) -> bool:
        """Whether nothing is needed (every field at its default)."""
        return self == DataNeeds()

    def describe(self) -> str:
        """The needs in words, for a message: ``"batch['lr_views'] at [4, 8]; HR and LR faces within every batch"``."""
        parts = []
        if self.lr_views:
            parts.append(f"batch['lr_views'] at [{', '.join(self.lr_views)}]")
        if self.any_lr_views:
            parts.append("batch['lr_views'] with at least one view")
        if self.landmarks:
            parts.append("68 landmarks per training face (batch['landmarks'])")
        if self.images_per_identity > 1:
            parts.append(f"at least {self.images_per_identity} images per identity in every batch")
        if self.mixed_batches:
            parts.append("HR and LR faces within every batch")
        if self.lr_prob is not None:
            parts.append(f"a share of {self.lr_prob} degraded faces")
        if self.several_lr_sizes is not None:
            parts.append("several training LR sizes" if self.several_lr_sizes else "one training LR size")
        return "; ".join(parts) or "nothing"
