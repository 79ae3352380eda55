"""The judge validation report's Bland-Altman plot of one criterion (matplotlib, Agg), drawn from
evalapp.judge_validation's cached dict, so a plot never re-reads the answers. As in evalapp.plots,
matplotlib is imported when a plot is drawn.
"""

import io
from collections import Counter


def criterion_keys(report: dict) -> list[str]:
    return [c["key"] for c in report.get("criteria", [])]


def render(key: str, report: dict) -> bytes:
    """PNG: per response, the judge minus the experts' mean against the mean of the two, with the bias
    and the 95% limits of agreement (bias +- 1.96 SD). Raises KeyError for a criterion not in the report."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    import matplotlib.pyplot as plt

    block = {c["key"]: c for c in report.get("criteria", [])}[key]
    data = (block.get("stats") or {}).get("bland_altman")
    if not data:
        fig = plt.figure(figsize=(5, 1.5))
        fig.text(0.5, 0.5, block.get("skipped") or "Fewer than two responses with both a judge score and expert "
                 "ratings.", ha="center", va="center", wrap=True)
    else:
        fig, ax = plt.subplots(figsize=(6, 4))
        # Scores are on a few scale points, so many responses fall on one spot: the marker's area counts them
        # (no jitter, which would draw differences that are not there).
        points = Counter(zip(data["means"], data["differences"], strict=True))
        xs, ys = zip(*points, strict=True)
        ax.scatter(xs, ys, s=[18 * n for n in points.values()], alpha=0.6, color="#2a5d8f", edgecolor="none",
                   label="responses (area = count)")
        low, high = data["limits"]
        ax.axhline(data["bias"], color="#a3302a", linewidth=1.2, label=f"bias {data['bias']:+.2f}")
        for limit in (low, high):
            ax.axhline(limit, color="#a3302a", linewidth=0.9, linestyle="--")
        ax.axhline(0, color="#888888", linewidth=0.6, linestyle=":")
        ax.text(1.0, high, f" +1.96 SD {high:+.2f}", transform=ax.get_yaxis_transform(), va="bottom", ha="right",
                fontsize=8)
        ax.text(1.0, low, f" -1.96 SD {low:+.2f}", transform=ax.get_yaxis_transform(), va="top", ha="right",
                fontsize=8)
        expert = report.get("expert") or "experts"
        ax.set_xlabel("(judge + expert mean) / 2")
        ax.set_ylabel(f"judge - expert mean (group: {expert})")
        ax.set_title(f"{key}: Bland-Altman, judge {report['judge']['name']} vs {expert}")
        ax.legend(fontsize=8, loc="best")
    if report.get("simulated"):
        fig.text(0.99, 0.01, "SIMULATED RATERS", ha="right", va="bottom", color="#a3302a", fontsize=9, weight="bold")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight", dpi=110)
    plt.close(fig)
    return buffer.getvalue()
