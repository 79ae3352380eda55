"""The length-vs-score plot (matplotlib, Agg): PNG or SVG bytes.

It draws from `evalapp.text_report.length_score_points` (plain data, cacheable): one panel per
criterion (at most MAX_PANELS, in a grid), words per response against the response's mean score
over raters, one colour per arm. matplotlib is imported when the plot is drawn, as in evalapp.plots.
"""

import io
import math

MAX_PANELS = 7
COLUMNS = 3


def length_score_plot(points: dict, fmt: str = "png", *, simulated: bool = False) -> bytes:
    """The scatter of words (x) against mean score (y) per arm, one panel per criterion."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    import matplotlib.pyplot as plt

    criteria = list(points.get("criteria") or [])
    shown = criteria[:MAX_PANELS]
    n = max(len(shown), 1)
    cols = min(n, COLUMNS)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.4 * rows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax, criterion in zip(flat, shown, strict=False):
        for arm in points.get("arms", []):
            xy = points["points"].get(criterion, {}).get(arm, [])
            ax.scatter([p[0] for p in xy], [p[1] for p in xy], s=10, alpha=0.6, label=f"{arm} (n={len(xy)})")
        ax.set_title(criterion)
        ax.set_xlabel("words per response")
        ax.set_ylabel("mean score over raters")
        ax.legend(fontsize=8)
    if not shown:
        flat[0].text(0.5, 0.5, "no scores yet", ha="center", va="center", transform=flat[0].transAxes)
        flat[0].set_axis_off()
    for ax in flat[len(shown):] if shown else []:
        ax.set_axis_off()
    if len(criteria) > MAX_PANELS:
        fig.text(0.01, 0.01, f"first {MAX_PANELS} of {len(criteria)} criteria", ha="left", va="bottom", fontsize=8)
    if simulated:
        fig.text(0.99, 0.01, "SIMULATED RATERS", ha="right", va="bottom", color="#a3302a", fontsize=9, weight="bold")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, bbox_inches="tight", dpi=110)
    plt.close(fig)
    return buffer.getvalue()
