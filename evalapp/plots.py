"""Server-side plots of a study's results (matplotlib, Agg): PNG or SVG bytes.

The plots draw from `summarize(records)`, a small summary (counts and sums per prompt, rater and
score) computed once with the cached results, so drawing a plot never re-reads the study's ratings.
matplotlib is imported when a plot is drawn, not when this module is: the results themselves need
only `summarize`.
"""

import io
import math
from collections import defaultdict

PLOTS = ("distributions", "differences", "severity", "agreement")


def summarize(records: list[dict]) -> dict:
    """What the four plots need from the analysis records, independent of how many ratings there are
    beyond one entry per scale x (arm x score, prompt x arm, rater). Likert criteria only: a
    nominal criterion's option indices have no mean (the results page shows their shares), and
    "not sure" answers have no score."""
    scores: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(int)))
    prompts: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(lambda: [0.0, 0])))
    raters: dict = defaultdict(lambda: defaultdict(lambda: [0, 0.0, 0.0]))
    for r in records:
        if r.get("level") == "nominal" or r["score"] is None or r["comparison_score"] is None:
            continue
        scale, used = r["scale"], r["comparison_score"]
        scores[scale][r["arm"]][used] += 1
        cell = prompts[scale][r["prompt"]][r["arm"]]
        cell[0] += used
        cell[1] += 1
        moments = raters[scale][r["rater"]]
        moments[0] += 1
        moments[1] += r["score"]
        moments[2] += r["score"] ** 2
    return {"scales": sorted(scores), "arms": sorted({r["arm"] for r in records}),
            "n_raters": len({r["rater"] for r in records}),
            "scores": _plain(scores), "prompts": _plain(prompts), "raters": _plain(raters)}


def _plain(value):
    """Nested defaultdicts as plain dicts: the summary is cached, and a lambda does not pickle."""
    return {k: _plain(v) for k, v in value.items()} if isinstance(value, dict) else value


def render(name: str, summary: dict, results: dict, fmt: str = "png") -> bytes:
    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    import matplotlib.pyplot as plt

    draw = {"distributions": _distributions, "differences": _differences, "severity": _severity,
            "agreement": _agreement}[name]
    if summary["scales"]:
        fig = draw(plt, summary, results, summary["scales"])
    else:
        fig = plt.figure(figsize=(5, 1.5))
        fig.text(0.5, 0.5, "No likert criterion has ratings to plot yet.", ha="center", va="center")
    if results.get("simulated"):
        fig.text(0.99, 0.01, "SIMULATED RATERS", ha="right", va="bottom", color="#a3302a", fontsize=9, weight="bold")
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, bbox_inches="tight", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def _distributions(plt, summary, results, scales):
    import numpy as np

    fig, axes = plt.subplots(1, len(scales), figsize=(5 * len(scales), 3.2), squeeze=False)
    for ax, scale in zip(axes[0], scales, strict=True):
        for arm in summary["arms"]:
            counts = summary["scores"].get(scale, {}).get(arm, {})
            ax.hist(list(counts), weights=list(counts.values()), bins=np.arange(0.5, 11.5, 1), alpha=0.55,
                    label=f"{arm} (n={sum(counts.values())})")
        ax.set_title(scale)
        ax.set_xlabel("score")
        ax.set_xticks(range(1, 11))
        ax.legend(fontsize=8)
    return fig


def _differences(plt, summary, results, scales):
    fig, axes = plt.subplots(1, len(scales), figsize=(5 * len(scales), 3.2), squeeze=False)
    arms = summary["arms"]
    for ax, scale in zip(axes[0], scales, strict=True):
        diffs = []
        if len(arms) == 2:
            for cells in summary["prompts"].get(scale, {}).values():
                if arms[0] in cells and arms[-1] in cells:
                    (high, n_high), (low, n_low) = cells[arms[-1]], cells[arms[0]]
                    diffs.append(high / n_high - low / n_low)
        diffs.sort()
        ax.scatter(diffs, range(len(diffs)), s=10)
        ax.axvline(0, color="grey", lw=1)
        ax.set_title(f"{scale}: {arms[-1]} − {arms[0]} per prompt" if len(arms) == 2 else scale)
        ax.set_yticks([])
        ax.set_xlabel("difference of means")
    return fig


def _severity(plt, summary, results, scales):
    height = 0.25 * max(8, summary["n_raters"]) + 1
    fig, axes = plt.subplots(1, len(scales), figsize=(5 * len(scales), height), squeeze=False)
    for ax, scale in zip(axes[0], scales, strict=True):
        moments = summary["raters"].get(scale, {})
        by_mean = sorted(moments, key=lambda k: moments[k][1] / moments[k][0])
        means, errs = [], []
        for rater in by_mean:
            n, total, squares = moments[rater]
            mean = total / n
            # Sample variance from the running sums; max() guards the rounding of a zero variance.
            sd = math.sqrt(max(squares - n * mean**2, 0.0) / (n - 1)) if n > 1 else 0.0
            means.append(mean)
            errs.append(1.96 * sd / math.sqrt(n) if n > 1 else 0)
        ax.errorbar(means, range(len(by_mean)), xerr=errs, fmt="o", ms=3)
        ax.set_yticks(range(len(by_mean)), by_mean, fontsize=7)
        ax.set_title(f"rater severity: {scale}")
        ax.set_xlabel("mean score (95% CI)")
    return fig


def _agreement(plt, summary, results, scales):
    fig, ax = plt.subplots(figsize=(6, 3))
    labels, values, lows, highs = [], [], [], []
    for scale, res in sorted((results.get("agreement") or {}).get("scales", {}).items()):
        for key, label in (("krippendorff_alpha_interval", "alpha (interval)"),
                           ("krippendorff_alpha_ordinal", "alpha (ordinal)")):
            entry = res.get(key) or {}
            if entry.get("value") is not None:
                labels.append(f"{scale} {label}")
                values.append(entry["value"])
                lo, hi = entry.get("ci95") or (None, None)
                lows.append(entry["value"] - lo if lo is not None else 0)
                highs.append(hi - entry["value"] if hi is not None else 0)
    if values:
        ax.errorbar(values, range(len(values)), xerr=[lows, highs], fmt="s")
        ax.set_yticks(range(len(values)), labels, fontsize=8)
    ax.axvline(0.667, color="#a3302a", lw=1, ls="--")
    ax.set_xlabel("agreement (95% CI); dashed: 0.667, Krippendorff's lowest tentative level")
    return fig
