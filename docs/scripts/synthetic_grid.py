"""Render docs/img/synthetic_grid.png: synthetic identities at 112 px and degraded to 56-7 px, plus their priors.

Rows: 6 identities x 2 images. Columns: HR (112 px), the LR versions (``crossres.transforms.functional.degrade``:
antialiased bicubic down, bicubic back up), and the HR image with its parsing map and 68 landmarks overlaid.

Usage: ``python docs/scripts/synthetic_grid.py [--out docs/img/synthetic_grid.png] [--seed 0]``
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

from crossres.data.priors import PARSING_CLASSES  # noqa: E402
from crossres.data.synthetic import SyntheticFaces  # noqa: E402
from crossres.transforms.functional import degrade  # noqa: E402

LR_SIZES = (56, 28, 14, 8, 7)
PARSING_COLOURS = [
    (0, 0, 0, 0),
    (0.95, 0.75, 0.55, 0.45),
    (0.1, 0.3, 0.9, 0.8),
    (0.1, 0.7, 0.9, 0.8),
    (0.1, 0.9, 0.2, 0.8),
    (0.6, 0.9, 0.1, 0.8),
    (0.9, 0.5, 0.0, 0.7),
    (0.9, 0.1, 0.3, 0.8),
    (0.3, 0.0, 0.3, 0.8),
    (1.0, 0.4, 0.7, 0.8),
    (0.5, 0.3, 0.1, 0.6),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "img" / "synthetic_grid.png")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--identities", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5])
    args = parser.parse_args()

    data = SyntheticFaces(num_identities=max(args.identities) + 1, images_per_identity=2, seed=args.seed)
    items = [data.render(identity, index) for identity in args.identities for index in range(2)]
    hr = torch.stack([item["image"] for item in items]).float() / 255.0
    columns = [hr] + [degrade(hr, size) for size in LR_SIZES]
    titles = ["HR 112 px"] + [f"{size} px" for size in LR_SIZES] + ["parsing + landmarks"]

    rows, cols = len(items), len(columns) + 1
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.25, rows * 1.3))
    cmap = ListedColormap(PARSING_COLOURS)
    for r, item in enumerate(items):
        for c in range(cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(columns):
                ax.imshow(columns[c][r].permute(1, 2, 0).numpy())
            else:
                ax.imshow(hr[r].permute(1, 2, 0).numpy())
                ax.imshow(item["parsing"].numpy(), cmap=cmap, vmin=0, vmax=len(PARSING_CLASSES) - 1)
                landmarks = item["landmarks"].numpy()
                ax.scatter(landmarks[:, 0], landmarks[:, 1], s=1.5, c="yellow", linewidths=0)
                height, width = item["parsing"].shape
                ax.set_xlim(-0.5, width - 0.5)
                ax.set_ylim(height - 0.5, -0.5)
            if r == 0:
                ax.set_title(titles[c], fontsize=7)
            if c == 0:
                identity = args.identities[r // 2]
                ax.set_ylabel(f"id {identity} / img {r % 2}", fontsize=6)
    fig.subplots_adjust(wspace=0.03, hspace=0.05, left=0.04, right=0.99, top=0.96, bottom=0.01)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=130)
    print(f"wrote {args.out} ({np.prod(fig.get_size_inches() * 130):.0f} px)")


if __name__ == "__main__":
    main()
