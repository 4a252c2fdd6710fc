"""Speed switches from YAML, on CPU: channels_last, torch.compile (state dicts without ``_orig_mod.``), precision."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning
import lightning.pytorch as pl
import pytest
import torch

from crossres.cli import _default_precision
from crossres.data.datamodule import FaceDataModule
from crossres.data.options import DegradationOptions, SyntheticOptions
from crossres.methods import Baseline

SMALL: dict[str, Any] = {
    "num_classes": 4, "image_size": (32, 32), "backbone_kwargs": {"width": 8}, "embedding_size": 16,
}  # fmt: skip


def _baseline(**kwargs: Any) -> Baseline:
    pl.seed_everything(0)
    return Baseline(**(SMALL | kwargs))


def _images() -> torch.Tensor:
    return torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_compile_keeps_state_dict_keys_and_loads_into_an_eager_model() -> None:
    compiled, eager = _baseline(compile=True), _baseline()
    assert compiled.backbone._compiled_call_impl is not None  # compiled in place (lazily, on first call)
    assert compiled.compile_targets() == [compiled.backbone]
    keys = list(compiled.state_dict())
    assert keys == list(eager.state_dict()) and not any("_orig_mod" in k for k in keys)
    eager.load_state_dict(compiled.state_dict())  # strict


def test_checkpoint_of_a_torch_compile_wrapper_loads(tmp_path: Path) -> None:
    model = _baseline()
    expected = model.eval()(_images())
    model.backbone = torch.compile(model.backbone)  # the wrapper that puts `_orig_mod.` into keys
    state = model.state_dict()
    assert any(k.startswith("backbone._orig_mod.") for k in state)
    path = tmp_path / "wrapped.ckpt"
    checkpoint = {"state_dict": state, "hyper_parameters": dict(model.hparams)}
    torch.save(checkpoint | {"pytorch-lightning_version": lightning.__version__}, path)
    loaded = Baseline.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    torch.testing.assert_close(loaded.eval()(_images()), expected)


def test_channels_last_weights_same_embeddings() -> None:
    fast, plain = _baseline(channels_last=True), _baseline()
    weight = fast.backbone.conv1.weight
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    torch.testing.assert_close(fast.eval()(_images()), plain.eval()(_images()), rtol=1e-4, atol=1e-5)
    plain.load_state_dict(fast.state_dict())


def _fit(model: Baseline, tmp_path: Path) -> None:
    datamodule = FaceDataModule(
        image_size=(32, 32), synthetic=SyntheticOptions(num_identities=4, images_per_identity=4, pairs=20),
        protocols=[8], degradation=DegradationOptions(lr_sizes=[8]), batch_size=8, num_workers=0,
    )  # fmt: skip
    trainer = pl.Trainer(
        accelerator="cpu", max_epochs=1, limit_train_batches=2, limit_val_batches=0, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(model, datamodule=datamodule)


@pytest.mark.slow
def test_compiled_training_matches_eager(tmp_path: Path) -> None:
    # aot_eager traces forward and backward with dynamo + AOTAutograd but generates no code: the wiring, quickly.
    compiled, eager = _baseline(compile=True, compile_backend="aot_eager"), _baseline()
    _fit(compiled, tmp_path)
    _fit(eager, tmp_path)
    for (key, a), b in zip(compiled.state_dict().items(), eager.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=key)


@pytest.mark.slow
def test_inductor_compiled_backbone_embeds_like_eager() -> None:
    # Inductor on CPU builds C++ kernels: minutes on a 2-core machine.
    compiled, eager = _baseline(compile=True, channels_last=True), _baseline()
    torch.testing.assert_close(compiled.eval()(_images()), eager.eval()(_images()), rtol=1e-4, atol=1e-4)


def test_precision_default_bf16_for_rim_on_gpu_only(monkeypatch: pytest.MonkeyPatch) -> None:
    rim, baseline = "crossres.methods.rim.RIM", "crossres.methods.baseline.Baseline"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _default_precision(rim, "auto") == "32-true"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert _default_precision(rim, "auto") == "bf16-mixed"
    assert _default_precision(rim, "gpu") == "bf16-mixed"
    assert _default_precision(rim, "cpu") == "32-true"
    assert _default_precision(baseline, "auto") == "32-true"
