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
# # 02 · The degradation: what a 7 px face is
#
# Every method, every split and every protocol in crossres uses one definition of a low-resolution face
# (Knoche et al. 2021, 004 §3.3, Eq. (1)), `crossres.transforms.degrade`:
#
# $$I_{LR,r} = F_{up,112}\big(F_{down,r}(I_{HR})\big)$$
#
# antialiased bicubic down to `r` px, bicubic back up to the HR size, clamped to [0, 1]. The network always sees a
# 112 px image; what changes is how much of the face survives. The backend names the resampler:
#
# * `"pil"` (default): `torch.nn.functional.interpolate(bicubic, antialias=True)`, within 0.4/255 of PIL's
#   `Image.resize(BICUBIC)`;
# * `"kornia"`: Gaussian pre-blur, then plain bicubic (2–3.4/255 from PIL), as some published code did;
# * `"no_antialias"`: plain bicubic both ways (aliasing), as other published code did.
#
# With `CROSSRES_NOTEBOOK_TINY=1` the dataset means of the last section use a few faces instead of hundreds.

# %%
import os

import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import Markdown, display
from matplotlib_inline.backend_inline import set_matplotlib_formats

from crossres.data import SyntheticFaces
from crossres.transforms import degrade, downsample, to_float

TINY = os.environ.get("CROSSRES_NOTEBOOK_TINY") == "1"
plt.rcParams.update({"figure.dpi": 72, "font.size": 9})
set_matplotlib_formats("jpeg", pil_kwargs={"quality": 80})  # faces compress badly as PNG: keeps the notebook small
BACKENDS = ("pil", "kornia", "no_antialias")


def show(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) float in [0, 1] -> (H, W, 3) for imshow."""
    return image.clamp(0, 1).permute(1, 2, 0).cpu().numpy()


faces = SyntheticFaces(num_identities=4, images_per_identity=1, image_size=112, seed=0, return_priors=False)
hr = to_float(torch.stack([faces[i]["image"] for i in range(len(faces))]))  # (4, 3, 112, 112) in [0, 1]
print(tuple(hr.shape), hr.dtype)

# %% [markdown]
# ## The same faces from 5 to 112 px
#
# Top of each pair of rows: the LR face itself (its real pixels, drawn large); below: what the network sees,
# `degrade(hr, r)`, upsampled back to 112 px. Below about 14 px the eyes, nose and mouth merge into blobs; identity
# has to come from what is left (face shape, skin and hair colour).

# %%
sizes = [5, 7, 10, 14, 20, 28, 40, 56, 80, 112]
fig, axes = plt.subplots(2 * 2, len(sizes), figsize=(1.1 * len(sizes), 4.8))
for row, face in enumerate(hr[:2]):
    for col, size in enumerate(sizes):
        small = downsample(face[None], size)[0]
        axes[2 * row, col].imshow(show(small), interpolation="nearest")
        axes[2 * row + 1, col].imshow(show(degrade(face[None], size)[0]))
        axes[2 * row, col].set_title(f"{size} px")
for ax in axes.flat:
    ax.set_xticks([]), ax.set_yticks([])
for row in range(2):
    axes[2 * row, 0].set_ylabel("LR pixels")
    axes[2 * row + 1, 0].set_ylabel("degrade()")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## The three backends side by side
#
# One face at 7, 14 and 28 px with each backend, and the difference to the default `"pil"` (amplified ×4).
# `"no_antialias"` keeps high frequencies that alias into false detail; `"kornia"` blurs a little more than PIL.

# %%
face = hr[:1]
lr_sizes = [7, 14, 28]
fig, axes = plt.subplots(len(lr_sizes), 2 * len(BACKENDS) - 1, figsize=(8.5, 4.4))
differences = []
for row, size in enumerate(lr_sizes):
    reference = degrade(face, size, backend="pil")[0]
    col = 0
    for backend in BACKENDS:
        image = degrade(face, size, backend=backend)[0]
        axes[row, col].imshow(show(image))
        axes[row, col].set_title(f"{backend}, {size} px", fontsize=8)
        col += 1
        if backend != "pil":
            diff = (image - reference).abs().mean(0)
            axes[row, col].imshow(diff.clamp(0, 0.25).numpy() * 4, cmap="magma", vmin=0, vmax=1)
            axes[row, col].set_title(f"|{backend} - pil|", fontsize=8)
            col += 1
for ax in axes.flat:
    ax.set_xticks([]), ax.set_yticks([])
fig.tight_layout()
plt.show()

# %% [markdown]
# Mean absolute difference to `"pil"` over the four faces, in grey levels (x/255):

# %%
lines = ["| LR size | " + " | ".join(f"{b} vs pil" for b in BACKENDS[1:]) + " |", "|---|" + "---|" * 2]
for size in [5, 7, 14, 28, 56]:
    reference = degrade(hr, size, backend="pil")
    cells = [f"{255 * (degrade(hr, size, backend=b) - reference).abs().mean():.2f}" for b in BACKENDS[1:]]
    lines.append(f"| {size} px | " + " | ".join(cells) + " |")
display(Markdown("\n".join(lines)))

# %% [markdown]
# ## Pixel-difference maps (004 Fig. 4)
#
# Knoche et al. average a whole test set: the mean HR face $I^{mean}_{HR}$ (Eq. (4)) and the mean absolute pixel
# difference between every face and its degraded version,
# $D^{mean}_r = \frac{1}{N}\sum_i |F_{up,112}(F_{down,r}(I_{HR,i})) - I_{HR,i}|$ (Eq. (5)), for r = 7, 14, 28, 56.
# As in their figure, the loss concentrates on the eyes, nose and mouth and grows as r shrinks; here for each
# backend (left column: one sample face at each r; titles: the mean of the map in grey levels, x/255).

# %%
count = 16 if TINY else 400
dataset = SyntheticFaces(num_identities=count, images_per_identity=1, image_size=112, seed=1, return_priors=False)
images = to_float(torch.stack([dataset[i]["image"] for i in range(count)]))
resolutions = [7, 14, 28, 56]
fig, axes = plt.subplots(len(resolutions) + 1, 1 + len(BACKENDS), figsize=(6.4, 8.2))
axes[0, 0].imshow(show(images[0]))
axes[0, 0].set_title("sample, HR", fontsize=8)
axes[0, 1].imshow(show(images.mean(0)))  # Eq. (4)
axes[0, 1].set_title(f"mean HR face (N={count})", fontsize=8)
axes[0, 2].set_axis_off(), axes[0, 3].set_axis_off()
for row, r in enumerate(resolutions, 1):
    axes[row, 0].imshow(show(degrade(images[:1], r)[0]))
    axes[row, 0].set_title(f"sample, {r} px", fontsize=8)
    for col, backend in enumerate(BACKENDS, 1):
        d_mean = (degrade(images, r, backend=backend) - images).abs().mean(0).mean(0)  # Eq. (5), grey
        axes[row, col].imshow(d_mean.numpy(), cmap="inferno", vmin=0, vmax=0.25)
        axes[row, col].set_title(f"{backend}, {r} px: {255 * d_mean.mean():.1f}", fontsize=8)
for ax in axes.flat:
    ax.set_xticks([]), ax.set_yticks([])
fig.tight_layout()
plt.show()

# %% [markdown]
# The data module applies exactly this function on the device, in `FaceDataModule.on_after_batch_transfer`, for
# training batches (`data.degradation`: `lr_policy` fixed / choice / range, `lr_prob`) and for every evaluation
# protocol; pick the backend with `data.degradation.backend` (`crossres fit ... --data.degradation.backend kornia`).
