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
# # 03 · Evaluate a checkpoint on a `.bin` pair set under the Knoche protocols
#
# Point the notebook at your own files with environment variables (or edit the next cell):
#
# | variable | what | without it |
# |---|---|---|
# | `CROSSRES_CHECKPOINT` | a `.ckpt` from `crossres fit` (any method) | a Baseline is trained here |
# | `CROSSRES_BACKBONE_PTH` | or an insightface `backbone.pth` (architecture: `CROSSRES_BACKBONE`) | – |
# | `CROSSRES_BACKBONE` | the architecture of that `backbone.pth` | `iresnet50` |
# | `CROSSRES_BIN` | an insightface verification `.bin` (`lfw.bin`, `agedb_30.bin`, …) | a small synthetic one |
# | `CROSSRES_PROTOCOL_DIR` | the btm-stm CSVs (`<dir>/LFW/low_res_focus.csv`, …) | sizes drawn with a seed |
#
# The Knoche et al. 2021 protocols (004 §6.3) keep the first face of each pair at 112 px and show the second at a
# size drawn per pair: `low_res_focus` 5–10 px, `mid_res_focus` 11–39 px, `high_res_focus` 40–112 px, `avg_sizes`
# (Table 2's all_res) 5–112 px. The published per-pair sizes (github.com/Martlgap/btm-stm,
# `evaluation-protocols/`) exist for LFW, AgeDB, CALFW, CPLFW and CFP-FP in the image order of their `.bin` files;
# any other pair set, like the synthetic one here, gets sizes drawn uniformly from the same ranges with a seed.
#
# With `CROSSRES_NOTEBOOK_TINY=1` (tests, `make notebooks`) the model trained here and the pair set are tiny and
# the numbers mean nothing.

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

from crossres.data import FaceDataModule, SyntheticOptions
from crossres.data.bin import export_pair_set, load_bin
from crossres.data.protocols import KNOCHE_PROTOCOLS, knoche_sizes, load_knoche_csv
from crossres.data.synthetic import synthetic_pair_set
from crossres.methods import Baseline, load_method
from crossres.nn import load_backbone_weights
from crossres.report import results_table, write_results, write_scores
from crossres.report.plots import accuracy_vs_resolution, distance_distributions, roc_curves
from crossres.report.run_report import knoche_table

TINY = os.environ.get("CROSSRES_NOTEBOOK_TINY") == "1"
CHECKPOINT = os.environ.get("CROSSRES_CHECKPOINT")
BACKBONE_PTH = os.environ.get("CROSSRES_BACKBONE_PTH")
BACKBONE = os.environ.get("CROSSRES_BACKBONE", "iresnet50")
PAIRS_BIN = os.environ.get("CROSSRES_BIN")
PROTOCOL_DIR = os.environ.get("CROSSRES_PROTOCOL_DIR")
WORKDIR = Path(tempfile.mkdtemp(prefix="crossres_03_"))
for name in ("lightning.pytorch", "lightning.fabric"):
    logging.getLogger(name).setLevel(logging.WARNING)
torch.set_num_threads(min(4, os.cpu_count() or 1))
seed_everything(0)
print(f"TINY={TINY}, working directory {WORKDIR}")

# %% [markdown]
# ## The model
#
# A checkpoint written by `crossres fit` names its class (`hyper_parameters["_class_path"]`), so
# `crossres.methods.load_method(path)` gives any method back, in eval mode, without knowing which it is. An
# insightface `backbone.pth` is loaded into the backbone of a `Baseline` with the same architecture by
# `crossres.nn.load_backbone_weights` (keys are checked, shapes must fit).
# Without either, an HR Baseline is trained here first: a tiny one with `CROSSRES_NOTEBOOK_TINY=1` (the numbers
# below then only show the mechanics), else one sized as `experiments/baseline.yaml` (half an hour on a CPU).

# %%
if CHECKPOINT:
    model = load_method(CHECKPOINT)
elif BACKBONE_PTH:
    model = Baseline(num_classes=2, backbone=BACKBONE, embedding_size=512)  # the head is not used to evaluate
    load_backbone_weights(model.backbone, BACKBONE_PTH)
else:
    identities, per_identity, epochs = (8, 4, 1) if TINY else (100, 30, 10)
    train_data = FaceDataModule(
        synthetic=SyntheticOptions(
            num_identities=identities, images_per_identity=per_identity, pairs=40 if TINY else 600
        ),
        protocols=[14],
        batch_size=16 if TINY else 64,
        num_workers=0 if TINY else 2,
    )
    model = Baseline(
        num_classes=train_data.num_classes,
        backbone="iresnet18",
        backbone_kwargs={"width": 8 if TINY else 16, "stem_stride": 2},
        embedding_size=32 if TINY else 128,
        scale=32.0,
        margin=0.3,
        lr=0.05 if TINY else 0.1,
        milestones=[] if TINY else [6, 9],
    )
    Trainer(
        max_epochs=epochs,
        accelerator="auto",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_train_batches=2 if TINY else None,
        limit_val_batches=0,
    ).fit(model, train_data)
    CHECKPOINT = str(WORKDIR / "baseline.ckpt")
    model.trainer.save_checkpoint(CHECKPOINT)
    # A checkpoint saved by a Trainer in a notebook does not name its class (only `crossres fit` adds it).
    model = Baseline.load_from_checkpoint(CHECKPOINT, map_location="cpu", weights_only=True).eval()
method_name = type(model).__name__
hr_size = tuple(model.image_size)
print(f"{method_name} on {hr_size[0]}x{hr_size[1]} faces, from {CHECKPOINT or BACKBONE_PTH}")

# %% [markdown]
# ## The pair set
#
# An insightface `.bin` is a pickle of `(list of JPEG bytes, list of issame flags)`; pair `k` is images `2k, 2k+1`.
# crossres reads it with a restricted unpickler (bytes, lists, bools and numpy arrays only) and writes it with
# `crossres.data.bin.write_bin` / `export_pair_set`: here a synthetic pair set of identities the model never saw.

# %%
if not PAIRS_BIN:
    pairs = synthetic_pair_set(
        name="synthetic_pairs",
        num_identities=10 if TINY else 50,
        images_per_identity=2 if TINY else 4,
        num_pairs=40 if TINY else 600,
        image_size=hr_size,
        seed=1,
    )
    PAIRS_BIN = str(WORKDIR / "synthetic_pairs.bin")
    export_pair_set(pairs, PAIRS_BIN)
pair_set = load_bin(PAIRS_BIN)
print(
    f"{PAIRS_BIN}: {len(pair_set)} pairs ({int(pair_set.issame.sum())} positive), "
    f"{Path(PAIRS_BIN).stat().st_size / 1024:.0f} KiB"
)

# %% [markdown]
# ## The protocols
#
# `data.protocols` takes fixed LR heights and the Knoche names side by side. With `protocol_dir`, the data module
# reads `<protocol_dir>/<dataset>/<protocol>.csv` for a pair set whose file stem names a btm-stm dataset
# (`lfw.bin` → `LFW/`); every other pair set gets the seeded ranges, reproducible with `data.seed`.

# %%
knoche = list(KNOCHE_PROTOCOLS)[:4]  # low, mid, high, avg_sizes (all_res is an alias of avg_sizes)
fixed = [7, 14, 28, 56]
data = FaceDataModule(
    image_size=hr_size,
    val_sets=[PAIRS_BIN],
    test_sets=[PAIRS_BIN],
    protocols=[*fixed, *knoche],
    protocol_dir=PROTOCOL_DIR if PROTOCOL_DIR and Path(PROTOCOL_DIR).is_dir() else None,
    eval_batch_size=40 if TINY else 128,
    num_workers=0,
    seed=0,
)
sizes = data.pair_set(PAIRS_BIN).protocols
lines = ["| protocol | range (px) | drawn sizes: min / mean / max |", "|---|---|---|"]
for name in knoche:
    low, high = KNOCHE_PROTOCOLS[name]
    heights = sizes[name][:, 0].float()
    lines.append(f"| {name} | {low}–{high} | {heights.min():.0f} / {heights.mean():.1f} / {heights.max():.0f} |")
display(Markdown("\n".join(lines)))

# %% [markdown]
# Where the published CSVs are at hand (`CROSSRES_PROTOCOL_DIR`), their LFW sizes and a seeded draw of the same
# range have the same distribution — only the per-pair assignment differs:

# %%
csv = Path(PROTOCOL_DIR or "-") / "LFW" / "low_res_focus.csv"
if csv.is_file():
    published = load_knoche_csv(csv)
    drawn = knoche_sizes("low_res_focus", len(published), seed=0)
    counts = [(s, int((published == s).sum()), int((drawn == s).sum())) for s in range(5, 11)]
    table = "| LR size | published (LFW) | seeded |\n|---|---|---|\n"
    display(Markdown(table + "\n".join(f"| {s} px | {a} | {b} |" for s, a, b in counts)))
else:
    print("no btm-stm CSVs here (set CROSSRES_PROTOCOL_DIR): the Knoche protocols use seeded per-pair sizes")

# %% [markdown]
# ## Evaluate
#
# `Trainer.test` scores every pair HR-HR, LR-LR and HR-LR (both pair orders averaged, Knoche §3.4) at every
# protocol: LFW-style 10-fold accuracy, TAR@FAR=1e-3, EER.

# %%
trainer = Trainer(accelerator="auto", devices=1, logger=False, enable_progress_bar=False)
trainer.test(model, datamodule=data, verbose=False)
rows, scores = model.eval_results["test"], model.eval_scores["test"]
results_dir = WORKDIR / "results"
write_results(rows, results_dir, "test")
write_scores(scores, results_dir, "test")
display(Markdown(results_table(rows, title=f"{method_name} on {pair_set.name}")))

# %% [markdown]
# The Knoche protocols in the layout of 004 Table 2 (HR-LR accuracy %):

# %%
display(Markdown(knoche_table(rows, method_name)))

# %% [markdown]
# ## Curves (`crossres.report`)
#
# Accuracy against the LR size (004 Fig. 5), positive vs negative cosine-distance distributions per size and
# protocol (Fig. 7), ROC curves per protocol. `crossres report <run>` draws the same for a `crossres test` run.

# %%
display(Image(filename=accuracy_vs_resolution(rows, results_dir / "accuracy.png", title=method_name), width=640))

# %%
columns = [*fixed, *knoche, hr_size[0]]
path = distance_distributions(scores, results_dir / "distances.png", sizes=columns, hr_size=hr_size[0])
display(Image(filename=path, width=760))

# %%
display(Image(filename=roc_curves(scores, results_dir / "roc.png", max_protocols=4), width=760))
