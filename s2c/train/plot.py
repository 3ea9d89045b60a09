"""Draw `loss.png` from `loss_log.jsonl`: training loss (and validation loss) against step."""
from __future__ import annotations

from pathlib import Path


def plot_loss(records: list[dict], path: Path, title: str = "s2c train") -> Path:
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and in CI
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    for key, label in (("loss", "train (weighted)"), ("nll", "train NLL (unweighted)"),
                       ("eval_loss", "validation")):
        pts = [(r["step"], r[key]) for r in records if isinstance(r.get(key), float)]
        if pts:
            ax.plot(*zip(*pts), marker="." if len(pts) < 50 else None, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
