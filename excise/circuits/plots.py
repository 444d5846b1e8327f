"""PNG figures of a circuit: performance vs sparsity, and where in the model the circuit lies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from excise.circuits.sweep import CurvePoint  # noqa: E402


def plot_curves(curves: dict[str, list[CurvePoint]], dense: float, retain: float, path: Path, *, title: str) -> Path:
    """Logit difference relative to the dense model vs the share of units removed, one line per label."""
    figure, axis = plt.subplots(figsize=(6.4, 4.2))
    for label, curve in curves.items():
        points = sorted(curve, key=lambda p: p.sparsity)
        axis.plot([p.sparsity for p in points], [p.logit_diff / dense for p in points], marker="o", ms=3, label=label)
    axis.axhline(retain, color="grey", linestyle="--", linewidth=1, label=f"{retain:.0%} of dense")
    axis.set_xlabel("share of units removed (after rounding)")
    axis.set_ylabel("logit difference / dense")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def plot_heatmap(layers: list[dict[str, Any]], path: Path, *, title: str) -> Path:
    """Left: layer x head, share of each head's o_proj weights kept (0 = head removed).
    Right: per layer, share of MLP neurons kept (and share of down-projection weights kept)."""
    heads = np.array([[share if h in unit["heads"] else 0.0 for h, share in enumerate(unit["head_share"])] for unit in layers])
    neurons = np.array([[len(unit["neurons"]) / unit["num_neurons"], unit["mlp_share"]] for unit in layers])
    figure, (left, right) = plt.subplots(
        1, 2, figsize=(7.5, max(3.0, 0.22 * len(layers) + 1.5)), layout="constrained",
        gridspec_kw={"width_ratios": [heads.shape[1], 2.2]},
    )
    image = left.imshow(heads, aspect="auto", cmap="viridis", vmin=0, vmax=1, origin="lower")
    left.xaxis.set_major_locator(MaxNLocator(integer=True))
    left.yaxis.set_major_locator(MaxNLocator(integer=True))
    left.set_xlabel("head")
    left.set_ylabel("layer")
    left.set_title("heads: share kept")
    right.imshow(neurons, aspect="auto", cmap="viridis", vmin=0, vmax=1, origin="lower")
    right.set_xticks([0, 1], ["neurons", "down W"])
    right.set_yticks([])
    right.set_title("MLP: share kept")
    figure.colorbar(image, ax=[left, right], fraction=0.05)
    figure.suptitle(title)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
