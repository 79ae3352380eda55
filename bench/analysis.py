"""Re-analysis wall time: `evalapp.analysis.analyze_long` vs a naive per-resample loop.

    .venv/bin/python bench/analysis.py --repeats 3 --naive-boot 50

Simulated study: 2,500 prompts x 2 arms = 5,000 responses, each rated by 3 of
200 raters on 2 scales (1-5 and 0-3), true arm effect +0.5 on the latent
scale; 2,000 bootstrap resamples for the alpha CIs and the comparison.

  fast  -- analyze_long(df, n_boot=2000, fit_mixed=False), i.e. --no-mixed;
  naive -- the same report with its bootstraps done per resample in Python:
           krippendorff_alpha_boot_naive (one krippendorff.alpha per resample)
           and a pandas groupby per resample for the two-way cluster bootstrap
           of the mean per-prompt difference.  The naive loops run
           --naive-boot resamples and are extrapolated linearly to --n-boot
           (each resample costs the same); everything else is shared and
           taken from the fast run.
  mixed -- comparison.mixed_model is timed on the first --mixed-prompts
           prompts of one scale and extrapolated (power law through the last
           two sizes): at 2,500 prompts it takes tens of minutes, too long to
           repeat on a shared 2-core machine (--mixed-full measures it once).

The naive cluster bootstrap draws the same resamples as the fast one (same
generator, same order, for --naive-boot <= 500), so its CI over those
resamples must equal cluster_bootstrap_ci's; the script checks that.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.baselines import krippendorff_alpha_boot_naive  # noqa: E402
from evalapp.analysis import analyze_long, rating_matrices  # noqa: E402
from evalapp.stats import agreement  # noqa: E402
from evalapp.stats.comparison import cluster_bootstrap_ci, mixed_model  # noqa: E402

SCALES = {"empathy": (1, 5), "safety": (0, 3)}


def simulate(n_prompts: int = 2500, n_raters: int = 200, per_item: int = 3, effect: float = 0.5,
             seed: int = 0) -> pd.DataFrame:
    """Long-form ratings: latent = prompt + arm effect + rater bias + noise, rounded into each scale."""
    rng = np.random.default_rng(seed)
    n_items = 2 * n_prompts
    prompt = np.repeat(np.arange(n_prompts), 2)
    arm = np.tile([0, 1], n_prompts)
    # per_item distinct raters per response: argsort of random keys is a vectorised sample without replacement
    raters = np.argsort(rng.random((n_items, n_raters)), axis=1)[:, :per_item]
    frames = []
    for scale, (lo, hi) in SCALES.items():
        mid, spread = (lo + hi) / 2, (hi - lo) / 6  # little clipping at the ends
        quality = rng.normal(0, spread, n_prompts)[prompt] + effect * arm
        bias = rng.normal(0, spread / 2, n_raters)
        latent = quality[:, None] + bias[raters] + rng.normal(0, spread, raters.shape) + mid - effect / 2
        frames.append(pd.DataFrame({
            "item": np.repeat(np.arange(n_items), per_item).astype(str), "rater": raters.ravel().astype(str),
            "score": np.clip(np.round(latent), lo, hi).ravel(), "scale": scale,
            "arm": np.where(np.repeat(arm, per_item) == 1, "B", "A"), "prompt": np.repeat(prompt, per_item).astype(str),
        }))
    return pd.concat(frames, ignore_index=True)


def naive_cluster_boot(df: pd.DataFrame, n_boot: int, seed: int) -> tuple[float, float]:
    """Per-resample pandas version of cluster_bootstrap_ci (same draws, same statistic)."""
    prompts = np.sort(df["prompt"].unique())
    raters = np.sort(df["rater"].unique())
    rng = np.random.default_rng(seed)
    # Draw exactly as cluster_bootstrap_ci does (prompts then raters, one batch) so the resamples coincide.
    draw_p = rng.integers(0, prompts.size, size=(n_boot, prompts.size))
    draw_r = rng.integers(0, raters.size, size=(n_boot, raters.size))
    out = []
    for b in range(n_boot):
        w_p = pd.Series(np.bincount(draw_p[b], minlength=prompts.size), index=prompts)
        w_r = pd.Series(np.bincount(draw_r[b], minlength=raters.size), index=raters)
        d = df.assign(w=df["rater"].map(w_r))
        d = d.assign(ws=d["w"] * d["score"]).groupby(["prompt", "arm"])[["ws", "w"]].sum()
        mean = (d["ws"] / d["w"]).unstack("arm")
        diff = (mean[1] - mean[0]).dropna()  # a prompt-arm may lose all its raters
        wp = w_p[diff.index]
        out.append(float((wp * diff).sum() / wp.sum()))
    lo, hi = np.percentile(out, [2.5, 97.5])
    return float(lo), float(hi)


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    t0 = time.perf_counter()
    res = fn(*args, **kwargs)
    return time.perf_counter() - t0, res


def bootstrap_parts(df: pd.DataFrame, n_boot: int, naive_boot: int, seed: int) -> tuple[float, float, float]:
    """Seconds for (fast bootstraps as analyze_long runs them, naive alpha loops, naive comparison loops).

    Naive loops run naive_boot resamples and are scaled to n_boot; both paths get
    the same slot matrix analyze_long uses, so the ratio measures the bootstrap
    alone.  Each naive result is checked against the fast one on the same resamples.
    """
    fast = naive_alpha = naive_comp = 0.0
    for _, sub in df.groupby("scale"):
        sub = sub.assign(unit=sub["item"], arm=(sub["arm"] == "B").astype(int))
        _, slots = rating_matrices(sub)
        dom = np.unique(sub["score"])
        idx = agreement.bootstrap_item_indices(slots.shape[1], n_boot, seed)[:naive_boot]
        for level in ("interval", "ordinal"):
            fast += timed(agreement.krippendorff_alpha_ci, slots, level, n_boot, seed, dom)[0]
            t_point = timed(agreement.krippendorff_alpha, slots, level, dom)[0]
            t_loop, naive = timed(krippendorff_alpha_boot_naive, slots, level, idx, dom)
            naive_alpha += t_point + t_loop * n_boot / naive_boot
            np.testing.assert_allclose(agreement.krippendorff_alpha_boot(slots, level, idx, dom), naive, atol=1e-10)
        cols = (sub["prompt"], sub["rater"], sub["arm"], sub["score"])
        fast += timed(cluster_bootstrap_ci, *cols, n_boot=n_boot, seed=seed)[0]
        t_loop, ci_naive = timed(naive_cluster_boot, sub, naive_boot, seed)
        naive_comp += t_loop * n_boot / naive_boot
        np.testing.assert_allclose(ci_naive, cluster_bootstrap_ci(*cols, n_boot=naive_boot, seed=seed), atol=1e-10)
    return fast, naive_alpha, naive_comp


def mixed_scaling(df: pd.DataFrame, sizes: list[int], full: int) -> tuple[list[tuple[int, float]], float]:
    """mixed_model seconds on the first n prompts of one scale, and a power-law extrapolation to `full`."""
    sub = df[df["scale"] == next(iter(SCALES))]
    points = []
    for n in sizes:
        part = sub[sub["prompt"].astype(int) < n]
        t, res = timed(mixed_model, part["prompt"], part["rater"], (part["arm"] == "B").astype(int), part["score"])
        points.append((n, t))
        print(f"  mixed_model, {n} prompts ({len(part):,} ratings): {t:.1f} s, estimate {res['estimate']:.3f}",
              flush=True)
    (n0, t0), (n1, t1) = points[-2], points[-1]
    exponent = np.log(t1 / t0) / np.log(n1 / n0)
    return points, float(t1 * (full / n1) ** exponent)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument("--naive-boot", type=int, default=50, help="resamples actually run by the naive loops")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mixed-prompts", default="250,500",
                    help="prompt counts to time mixed_model at (extrapolated to the full data set)")
    ap.add_argument("--mixed-full", action="store_true", help="also time the full run with the mixed model "
                    "(tens of minutes at 2,500 prompts)")
    args = ap.parse_args()
    if not 2 <= args.naive_boot <= 500:
        ap.error("--naive-boot must be in 2..500 (one draw batch, see the docstring)")

    df = simulate(seed=args.seed)
    diff = df.groupby(["scale", "arm"])["score"].mean().unstack()
    print(f"data: {len(df):,} ratings, {df['item'].nunique():,} responses, {df['prompt'].nunique():,} prompts, "
          f"{df['rater'].nunique()} raters; observed mean B - A: {(diff['B'] - diff['A']).round(3).to_dict()}; "
          f"cores: {len(os.sched_getaffinity(0))}, load avg {os.getloadavg()[0]:.1f}", flush=True)
    analyze_long(df.head(600), n_boot=20)  # warm imports (statsmodels, scipy) outside the timings

    fast, fast_boot, naive_alpha, naive_comp = [], [], [], []
    for rep in range(args.repeats):
        t, result = timed(analyze_long, df, n_boot=args.n_boot, seed=args.seed, fit_mixed=False)
        b, a, c = bootstrap_parts(df, args.n_boot, args.naive_boot, args.seed)
        for series, value in ((fast, t), (fast_boot, b), (naive_alpha, a), (naive_comp, c)):
            series.append(value)
        print(f"  repeat {rep + 1}: full --no-mixed {t:.2f} s (bootstraps {b:.2f} s); naive bootstraps "
              f"{a + c:.1f} s (alpha {a:.1f}, comparison {c:.1f})", flush=True)

    med = statistics.median
    naive_full = [f - b + a + c for f, b, a, c in zip(fast, fast_boot, naive_alpha, naive_comp, strict=True)]
    naive_boot = [a + c for a, c in zip(naive_alpha, naive_comp, strict=True)]
    print(f"\nmedian of {args.repeats}; naive loops ran {args.naive_boot} of {args.n_boot} resamples, "
          f"x{args.n_boot / args.naive_boot:g} linear extrapolation")
    print(f"full --no-mixed:  fast {med(fast):.2f} s (range {min(fast):.2f}-{max(fast):.2f}), naive "
          f"{med(naive_full):.1f} s -> {med(naive_full) / med(fast):.1f}x")
    print(f"bootstraps only:  fast {med(fast_boot):.2f} s, naive {med(naive_boot):.1f} s -> "
          f"{med(naive_boot) / med(fast_boot):.1f}x (goal >= 20x)")
    print(f"full --no-mixed under 10 s: {med(fast) < 10}", flush=True)

    sizes = [int(x) for x in args.mixed_prompts.split(",")]
    _, per_scale = mixed_scaling(df, sizes, df["prompt"].nunique())
    est = med(fast) + len(SCALES) * per_scale
    print(f"mixed model extrapolated to {df['prompt'].nunique():,} prompts: ~{per_scale:.0f} s a scale; full run "
          f"with it ~{est:.0f} s, mixed share ~{len(SCALES) * per_scale / est:.0%}")
    if args.mixed_full:
        t, _ = timed(analyze_long, df, n_boot=args.n_boot, seed=args.seed, fit_mixed=True)
        print(f"full run with mixed model (measured): {t:.1f} s, mixed share {(t - med(fast)) / t:.0%}")
    for scale, r in result["scales"].items():  # type: ignore[union-attr]
        c = r["comparison"]
        print(f"  {scale}: alpha interval {r['krippendorff_alpha_interval']['value']:.3f}, ICC1 "
              f"{r['icc']['ICC1']['value']:.3f}, mean diff {c['mean_diff']:.3f} [{c['ci95'][0]:.3f}, {c['ci95'][1]:.3f}]")


if __name__ == "__main__":
    main()
