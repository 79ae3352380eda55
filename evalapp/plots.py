"""Server-side plots of a study's results (matplotlib, Agg): PNG or SVG bytes."""

import io
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")  # no display on servers
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

PLOTS = ("distributions", "differences", "severity", "agreement")


def _finish(fig, fmt: str, simulated: bool) -> bytes:
    if simulated:
        fig.text(0.99, 0.01, "SIMULATED RATERS", ha="right", va="bottom", color="#a3302a", fontsize=9, weight="bold")
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, bbox_inches="tight", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def render(name: str, records: list[dict], results: dict, fmt: str = "png") -> bytes:
    simulated = bool(results.get("simulated"))
    scales = sorted({r["scale"] for r in records}) or ["empathy", "fluency"]
    if name == "distributions":
        fig, axes = plt.subplots(1, len(scales), figsize=(5 * len(scales), 3.2), squeeze=False)
        for ax, scale in zip(axes[0], scales, strict=True):
            arms = sorted({r["arm"] for r in records})
            for arm in arms:
                values = [r["comparison_score"] for r in records if r["scale"] == scale and r["arm"] == arm]
                ax.hist(values, bins=np.arange(0.5, 11.5, 1), alpha=0.55, label=f"{arm} (n={len(values)})")
            ax.set_title(scale)
            ax.set_xlabel("score")
            ax.set_xticks(range(1, 11))
            ax.legend(fontsize=8)
        return _finish(fig, fmt, simulated)
    if name == "differences":
        fig, axes = plt.subplots(1, len(scales), figsize=(5 * len(scales), 3.2), squeeze=False)
        arms = sorted({r["arm"] for r in records})
        for ax, scale in zip(axes[0], scales, strict=True):
            means: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
            for r in records:
                if r["scale"] == scale:
                    means[r["prompt"]][r["arm"]].append(r["comparison_score"])
            diffs = sorted(np.mean(v[arms[-1]]) - np.mean(v[arms[0]]) for v in means.values()
                           if len(arms) == 2 and v[arms[0]] and v[arms[-1]])
            ax.scatter(diffs, range(len(diffs)), s=10)
            ax.axvline(0, color="grey", lw=1)
            ax.set_title(f"{scale}: {arms[-1]} − {arms[0]} per prompt" if len(arms) == 2 else scale)
            ax.set_yticks([])
            ax.set_xlabel("difference of means")
        return _finish(fig, fmt, simulated)
    if name == "severity":
        fig, axes = plt.subplots(1, len(scales), figsize=(5 * len(scales), 0.25 * max(8, len({r['rater'] for r in records})) + 1), squeeze=False)
        for ax, scale in zip(axes[0], scales, strict=True):
            by_rater: dict[str, list] = defaultdict(list)
            for r in records:
                if r["scale"] == scale:
                    by_rater[r["rater"]].append(r["score"])
            raters = sorted(by_rater, key=lambda k: np.mean(by_rater[k]))
            means = [np.mean(by_rater[k]) for k in raters]
            errs = [1.96 * np.std(by_rater[k], ddof=1) / np.sqrt(len(by_rater[k])) if len(by_rater[k]) > 1 else 0
                    for k in raters]
            ax.errorbar(means, range(len(raters)), xerr=errs, fmt="o", ms=3)
            ax.set_yticks(range(len(raters)), raters, fontsize=7)
            ax.set_title(f"rater severity: {scale}")
            ax.set_xlabel("mean score (95% CI)")
        return _finish(fig, fmt, simulated)
    if name == "agreement":
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
        return _finish(fig, fmt, simulated)
    raise KeyError(name)
