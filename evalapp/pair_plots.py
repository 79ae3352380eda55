"""Plots of the pairwise results (matplotlib, Agg): PNG bytes drawn from evalapp.pair_results' cached dict,
so a plot never re-reads the judgments. As in evalapp.plots, matplotlib is imported when a plot is drawn.
"""

import io

PLOTS = ("strengths", "outcomes")


def render(name: str, results: dict) -> bytes:
    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    import matplotlib.pyplot as plt

    draw = {"strengths": _strengths, "outcomes": _outcomes}[name]
    criteria = [c for c in results.get("criteria", []) if c.get("arm_pairs")]
    fig = draw(plt, criteria) if criteria else None
    if fig is None:
        fig = plt.figure(figsize=(5, 1.5))
        fig.text(0.5, 0.5, "No pairwise judgments to plot yet.", ha="center", va="center")
    if results.get("simulated"):
        fig.text(0.99, 0.01, "SIMULATED RATERS", ha="right", va="bottom", color="#a3302a", fontsize=9, weight="bold")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def _strengths(plt, criteria):
    """Davidson's centered log-strength per arm and question, with its bootstrap 95% CI."""
    fitted = [c for c in criteria if c["strengths"].get("fitted")]
    if not fitted:
        return None
    height = 0.6 * len(fitted[0]["strengths"]["arms"]) + 1.6
    fig, axes = plt.subplots(1, len(fitted), figsize=(4.5 * len(fitted), height), squeeze=False)
    for ax, c in zip(axes[0], fitted, strict=True):
        arms = c["strengths"]["arms"]
        y = list(range(len(arms)))
        centers = [a["centered"] for a in arms]
        low = [a["centered"] - a["centered_ci95"][0] if a["centered_ci95"][0] is not None else 0 for a in arms]
        high = [a["centered_ci95"][1] - a["centered"] if a["centered_ci95"][1] is not None else 0 for a in arms]
        ax.errorbar(centers, y, xerr=[low, high], fmt="o", capsize=4, color="#2a5d8f")
        ax.axvline(0, color="#888888", linewidth=0.8)
        ax.set_yticks(y, [a["arm"] for a in arms])
        ax.set_title(c["key"])
        ax.set_xlabel("log-strength (Davidson, centered; 95% bootstrap CI)")
    return fig


def _outcomes(plt, criteria):
    """Win, tie and loss shares of each arm pair (B vs A, from B's side), stacked."""
    height = 0.55 * max(len(c["arm_pairs"]) for c in criteria) + 1.6
    fig, axes = plt.subplots(1, len(criteria), figsize=(5 * len(criteria), height), squeeze=False)
    for ax, c in zip(axes[0], criteria, strict=True):
        pairs = c["arm_pairs"]
        y = list(range(len(pairs)))
        wins = [p["win_share"] for p in pairs]
        ties = [p["tie_share"] for p in pairs]
        losses = [p["loss_share"] for p in pairs]
        ax.barh(y, wins, color="#2a7f62", label="B wins")
        ax.barh(y, ties, left=wins, color="#bbbbbb", label="tie")
        ax.barh(y, losses, left=[w + t for w, t in zip(wins, ties, strict=True)], color="#a3302a", label="A wins")
        ax.set_yticks(y, [f"{p['label']} (n={p['n']})" for p in pairs])
        ax.set_xlim(0, 1)
        ax.axvline(0.5, color="#444444", linewidth=0.6, linestyle=":")
        ax.set_title(c["key"])
        ax.set_xlabel("share of judgments")
        ax.legend(fontsize=8, loc="lower right")
    return fig
