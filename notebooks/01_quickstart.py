# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 · Quickstart: train a cross-resolution method and read its table
#
# Cross-resolution face recognition matches a **low-resolution probe** (a 7–32 px CCTV crop) against a
# **high-resolution gallery** (112 px). This notebook builds the three pieces every crossres run has:
#
# 1. a `FaceDataModule` — here the embedded `SyntheticFaces`, no download: it degrades faces on the device
#    (antialiased bicubic down to the LR size, bicubic back up; Knoche et al. 2021, Eq. (1)),
# 2. a method from `crossres.methods` — here `BatchCR` (Knoche's BT-M: half of each batch degraded to a size
#    drawn from {7, 14, 28, 56, 112} px),
# 3. a plain Lightning `Trainer`,
#
# then evaluates HR-HR, LR-LR and HR-LR verification at several LR sizes and shows the table.
#
# **Settings.** With `CROSSRES_NOTEBOOK_TINY=1` (how the test suite and `make notebooks` run it) everything is
# tiny — 32 px faces, a few dozen images, one epoch — and the numbers mean nothing. Unset it for the real thing
# (112 px faces as `experiments/batch_cr_m.yaml`; about 40 minutes on two CPU cores, a few minutes on a GPU).

# %%
import logging
import os
import tempfile
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", message=".*(IProgress not found|is deprecated|many workers|in eval mode).*")
import torch
from IPython.display import Image, Markdown, display
from lightning.pytorch import Trainer, seed_everything

from crossres.data import DegradationOptions, FaceDataModule, SyntheticOptions
from crossres.methods import BatchCR
from crossres.report import results_table
from crossres.report.plots import accuracy_vs_resolution

TINY = os.environ.get("CROSSRES_NOTEBOOK_TINY") == "1"
WORKDIR = Path(tempfile.mkdtemp(prefix="crossres_01_"))  # checkpoints and figures of this notebook
for name in ("lightning.pytorch", "lightning.fabric"):
    logging.getLogger(name).setLevel(logging.WARNING)  # keep the outputs short
torch.set_num_threads(min(4, os.cpu_count() or 1))
seed_everything(0)
print(f"TINY={TINY}, working directory {WORKDIR}")

# %% [markdown]
# ## The data module
#
# Training items are faces (`uint8`, with 68 landmarks and a parsing map); the data module turns them into
# `{"hr", "lr", "lr_size", "label"}` batches on the device. Evaluation pair sets (`val_sets`) are scored at every
# protocol: here fixed LR heights. The options come in groups: `synthetic` (the embedded faces), `degradation` (the
# training LR sizes: `lr_prob=0.5` degrades half the training faces, BT-M) and `augmentation` (flip, colour, crop).

# %%
if TINY:
    size, identities, per_identity, pairs, protocols, epochs, width = 32, 8, 4, 40, [7, 14, 28], 1, 8
else:
    size, identities, per_identity, pairs, protocols, epochs, width = 112, 100, 30, 600, [7, 14, 28, 56], 12, 16

data = FaceDataModule(
    image_size=(size, size),
    synthetic=SyntheticOptions(num_identities=identities, images_per_identity=per_identity, pairs=pairs),
    protocols=protocols,
    degradation=DegradationOptions(
        lr_policy="choice", lr_sizes=[7, 14, 28, 56, 112] if size == 112 else [7, 14, 28, size], lr_prob=0.5
    ),
    batch_size=16 if TINY else 64,
    num_workers=0 if TINY else 2,
)
print(f"{data.num_classes} training identities, {identities * per_identity} faces of {size} px; protocols {protocols}")

# %% [markdown]
# ## The method
#
# Constructor arguments are plain values (backbone *names*, numbers), so the model can be rebuilt from its
# checkpoint with `BatchCR.load_from_checkpoint(path)`; `crossres fit --model.help BatchCR` lists them all.

# %%
model = BatchCR(
    num_classes=data.num_classes,
    image_size=(size, size),
    backbone="iresnet18",
    backbone_kwargs={"width": width, "stem_stride": 1 if TINY else 2},
    embedding_size=32 if TINY else 128,
    head="arcface",
    scale=32.0,
    margin=0.3,
    lr=0.05 if TINY else 0.1,
    milestones=[] if TINY else [8, 11],
    warmup_epochs=0 if TINY else 1,
)
print(f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters")

# %% [markdown]
# ## Train and evaluate
#
# `fit` validates after every epoch; `model.eval_results["val"]` holds the last evaluation as rows
# (pair set × HR-HR / LR-LR / HR-LR × protocol), which `crossres.report.results_table` formats as the papers do.

# %%
trainer = Trainer(
    max_epochs=epochs,
    accelerator="auto",
    devices=1,
    default_root_dir=WORKDIR,
    logger=False,
    enable_progress_bar=False,
    enable_model_summary=False,
    limit_train_batches=2 if TINY else None,
    num_sanity_val_steps=0,
)
trainer.fit(model, data)
rows = model.eval_results["val"]
display(Markdown(results_table(rows, title="BatchCR (BT-M): synthetic pairs, 10-fold accuracy")))

# %% [markdown]
# HR-LR averages both pair orders (Knoche et al. §3.4). The same rows as a curve (004 Fig. 5):

# %%
display(Image(filename=accuracy_vs_resolution(rows, WORKDIR / "accuracy.png", title="BatchCR (BT-M)"), width=640))

# %% [markdown]
# ## Reload the checkpoint
#
# Lightning saved a checkpoint after the last epoch; the model comes back from it alone (plain hparams,
# `weights_only=True`), and gives the same embeddings.

# %%
checkpoint = trainer.checkpoint_callback.best_model_path
again = BatchCR.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=True).eval()
faces = torch.rand(4, 3, size, size)
with torch.no_grad():
    same = torch.allclose(model.cpu().eval().embed(faces), again.embed(faces), atol=1e-6)
print(f"{Path(checkpoint).name}: same embeddings after reload: {same}")

# %% [markdown]
# ## The same from the command line
#
# ```bash
# crossres fit -c experiments/batch_cr_m.yaml          # runs/batch_cr_m/: config, metrics.csv, checkpoints, results
# crossres test -c experiments/batch_cr_m.yaml --ckpt_path runs/batch_cr_m/checkpoints/last.ckpt
# crossres report runs/batch_cr_m                      # report.md with the table and the figures
# ```
#
# Next: `02_degradation` (what the LR faces look like), `03_evaluate_checkpoint` (evaluate any checkpoint on a
# `.bin` pair set under the Knoche protocols), `04_hallucination` (the super-resolution methods).
