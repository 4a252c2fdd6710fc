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
# # 04 · Hallucination: what RIM and IPU-Net make of a low-resolution face
#
# Two methods recognise an LR probe by first super-resolving it:
#
# * **RIM** (001): a face hallucination network (FHN) — coarse SR, then a tri-path generator that also predicts
#   68 landmark heatmaps and an 11-class parsing map — feeds a student/assistant pair distilled from a frozen HR
#   teacher. `crossres.report.hallucination.rim_sr_grid` draws its SR faces with the *predicted* landmarks and
#   parsing.
# * **IPU-Net** (002): a U-Net turns the bicubic-upsampled probe into an SR face for a frozen HR recogniser,
#   trained with an embedding loss plus 5 × pixel loss. It predicts no landmarks; below, the *ground-truth*
#   landmarks and parsing of the synthetic faces are drawn over its SR faces to show where the features should be.
#
# **These models are tiny and barely trained** (a few steps on a few synthetic faces, so that the notebook runs
# in the test suite): their SR faces are close to bicubic and RIM's landmarks are noise. For trained models,
# run `crossres fit -c experiments/baseline.yaml --name hr_teacher`, then `crossres fit -c experiments/rim.yaml`
# and `crossres fit -c experiments/ipunet.yaml`, and point `CROSSRES_RIM_CHECKPOINT` / `CROSSRES_IPUNET_CHECKPOINT`
# at their `checkpoints/last.ckpt`. Unsetting `CROSSRES_NOTEBOOK_TINY` trains longer here (64 px faces, 8 px probes;
# tens of minutes on a CPU).

# %%
import logging
import os
import tempfile
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", message=".*(IProgress not found|is deprecated|many workers|in eval mode).*")
import torch
from IPython.display import Markdown, display
from lightning.pytorch import Trainer, seed_everything
from matplotlib import pyplot as plt
from matplotlib_inline.backend_inline import set_matplotlib_formats

from crossres.data import DegradationOptions, FaceDataModule, SyntheticFaces, SyntheticOptions
from crossres.methods import RIM, Baseline, IPUNet
from crossres.metrics import psnr, ssim
from crossres.report.hallucination import rim_sr_grid, sr_grid
from crossres.transforms import degrade, downsample, to_float

TINY = os.environ.get("CROSSRES_NOTEBOOK_TINY") == "1"
RIM_CHECKPOINT = os.environ.get("CROSSRES_RIM_CHECKPOINT")
IPUNET_CHECKPOINT = os.environ.get("CROSSRES_IPUNET_CHECKPOINT")
WORKDIR = Path(tempfile.mkdtemp(prefix="crossres_04_"))
for name in ("lightning.pytorch", "lightning.fabric"):
    logging.getLogger(name).setLevel(logging.WARNING)
set_matplotlib_formats("jpeg", pil_kwargs={"quality": 80})  # faces compress badly as PNG
torch.set_num_threads(min(4, os.cpu_count() or 1))
seed_everything(0)

SIZE, LR_SIZE = (32, 8) if TINY else (64, 8)  # RIM hallucinates 8x (224 -> 28 in the paper); 4x when TINY
EPOCHS = 1 if TINY else 6
print(f"TINY={TINY}: {SIZE} px faces, {LR_SIZE} px probes; working directory {WORKDIR}")

# %% [markdown]
# ## Data and the frozen HR recogniser
#
# Both methods need a pretrained HR network (RIM's teacher, IPU-Net's recogniser): an HR `Baseline`. The training
# faces carry their 68 landmarks and parsing maps (RIM supervises its prior paths with them); every training face
# is degraded to `LR_SIZE`.

# %%
data = FaceDataModule(
    image_size=(SIZE, SIZE),
    synthetic=SyntheticOptions(
        num_identities=6 if TINY else 50, images_per_identity=4 if TINY else 10, pairs=40 if TINY else 200
    ),
    protocols=[LR_SIZE],
    degradation=DegradationOptions(lr_policy="fixed", lr_sizes=[LR_SIZE]),
    batch_size=8 if TINY else 32,
    num_workers=0 if TINY else 2,
)
RECOGNISER = {"backbone": "iresnet18", "backbone_kwargs": {"width": 8}, "embedding_size": 32}


def trainer() -> Trainer:
    return Trainer(
        max_epochs=EPOCHS,
        accelerator="auto",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_train_batches=2 if TINY else None,
        limit_val_batches=0,
        num_sanity_val_steps=0,
    )


teacher_path = WORKDIR / "hr_teacher.ckpt"
if not (RIM_CHECKPOINT and IPUNET_CHECKPOINT):
    teacher = Baseline(num_classes=data.num_classes, image_size=(SIZE, SIZE), **RECOGNISER, scale=32.0, lr=0.05)
    fit = trainer()
    fit.fit(teacher, data)
    fit.save_checkpoint(teacher_path)

# %% [markdown]
# ## RIM
#
# Four players stepped by hand each batch (FHN, the domain discriminator, the student, the assistant); the
# teacher stays frozen. Arguments are the small ones of the tests, not `experiments/rim.yaml`'s.

# %%
if RIM_CHECKPOINT:
    rim = RIM.load_from_checkpoint(RIM_CHECKPOINT, map_location="cpu", weights_only=True)
else:
    rim = RIM(
        num_classes=data.num_classes,
        image_size=(SIZE, SIZE),
        teacher_backbone=RECOGNISER["backbone"],
        teacher_backbone_kwargs=RECOGNISER["backbone_kwargs"],
        teacher_embedding_size=RECOGNISER["embedding_size"],
        teacher_weights=str(teacher_path),
        student_backbone_kwargs={"width": 4},
        assistant_backbone_kwargs={"width": 4},
        fhn_channels=8,
        fhn_feature_channels=4,
        fhn_blocks=1,
        domain_dim=16,
        heatmap_sigma=1.0,
        quality_lr_sizes=[LR_SIZE],
        fhn_lr=1e-3,
    )
    trainer().fit(rim, data)
rim = rim.cpu().eval()

# %% [markdown]
# Test faces of identities the models never saw, with their ground-truth priors:

# %%
faces = SyntheticFaces(num_identities=8, images_per_identity=1, image_size=SIZE, seed=7, identity_offset=10_000)
items = [faces[i] for i in range(len(faces))]
hr = to_float(torch.stack([item["image"] for item in items]))
landmarks = torch.stack([item["landmarks"] for item in items])  # (B, 68, 2) pixel (x, y)
parsing = torch.stack([item["parsing"] for item in items])  # (B, H, W) Helen classes
lr = downsample(hr, LR_SIZE).clamp(0, 1)  # the probe's own pixels
bicubic = degrade(hr, LR_SIZE)  # Eq. (1) of 004: what the networks receive

# %% [markdown]
# Columns: the LR probe, its bicubic upsampling, RIM's SR face with the landmarks it predicts, the same with its
# predicted parsing map, and the HR face; PSNR against HR in the titles.

# %%
figure = rim_sr_grid(rim, hr[:3], LR_SIZE, title=f"RIM, {LR_SIZE} -> {SIZE} px (tiny, barely trained)")
display(figure)
plt.close(figure)

# %% [markdown]
# ## IPU-Net
#
# The U-Net works at `sr_size` (a power of two; 128 in the paper), so the face is resized to it and back.

# %%
if IPUNET_CHECKPOINT:
    ipunet = IPUNet.load_from_checkpoint(IPUNET_CHECKPOINT, map_location="cpu", weights_only=True)
else:
    ipunet = IPUNet(
        num_classes=data.num_classes,
        image_size=(SIZE, SIZE),
        **RECOGNISER,
        recognizer_weights=str(teacher_path),
        sr_size=SIZE,
        unet_depth=5,
        unet_width=4 if TINY else 16,
        lr=1e-3,
    )
    trainer().fit(ipunet, data)
ipunet = ipunet.cpu().eval()
with torch.no_grad():
    ipunet_sr = ipunet.super_resolve(bicubic)
figure = sr_grid(
    lr[:3],
    bicubic[:3],
    ipunet_sr[:3],
    hr[:3],
    landmarks=landmarks[:3],
    parsing=parsing[:3],
    title=f"IPU-Net, {LR_SIZE} -> {SIZE} px, ground-truth landmarks and parsing (tiny, barely trained)",
)
display(figure)
plt.close(figure)

# %% [markdown]
# ## PSNR and SSIM against the HR faces
#
# Over the eight test faces. The papers report SR gains of 1–3 dB over bicubic after full training; tiny
# untrained SR networks start at (RIM: exactly) bicubic, as FHN's output layers start at zero.

# %%
with torch.no_grad():
    rim_sr = rim.super_resolve(bicubic).sr.clamp(0, 1)
rows = [("bicubic", bicubic), ("RIM (FHN)", rim_sr), ("IPU-Net", ipunet_sr)]
lines = ["| probe | PSNR (dB) | SSIM |", "|---|---|---|"]
lines += [f"| {name} | {psnr(x, hr):.2f} | {ssim(x, hr):.3f} |" for name, x in rows]
display(Markdown("\n".join(lines)))
