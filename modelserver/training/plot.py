"""Loss-curve PNG for a training run (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path


def plot_loss(result, path: str | Path) -> Path:
    """Train loss per step and validation loss per evaluation; ``result`` is a TrainingResult or its dict."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = result if isinstance(result, dict) else result.to_dict()
    train = data.get("train_losses") or []
    val = [(e["step"], e["val_loss"]) for e in data.get("loss_curve") or [] if e.get("val_loss") is not None]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    try:
        if train:
            ax.plot([s for s, _ in train], [v for _, v in train], label="train loss", color="tab:blue", alpha=0.8)
        if val:
            ax.plot([s for s, _ in val], [v for _, v in val], "o-", label="validation loss", color="tab:orange")
        if data.get("best_step") is not None:
            ax.axvline(data["best_step"], color="grey", linestyle=":", label=f"best (step {data['best_step']})")
        cfg = data.get("config") or {}
        ax.set_title(f"LoRA r={cfg.get('rank')} on {data.get('base_ref', '?')}: loss per step (answer tokens)")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("cross-entropy (nats/token)")
        ax.grid(alpha=0.3)
        if train or val:
            ax.legend()
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path
