"""The full report with the mixed model: evalapp.stats.mixed (sparse profiled REML) vs statsmodels' MixedLM.

    .venv/bin/python bench/mixed.py --repeats 3 --baseline-prompts 250,500

Data: bench/analysis.py's simulated study, 2,500 prompts x 2 arms = 5,000 responses, 3 of 200 raters
each, 2 scales, 2,000 bootstrap resamples.

  new      -- analyze_long(df, n_boot=2000, fit_mixed=True): bootstraps, agreement and the mixed model
              for both criteria, the full report as the results task computes it.
  baseline -- today's path before this change: the same mixed model fitted by statsmodels MixedLM with
              crossed variance components (bench/baselines.mixed_model_statsmodels), timed on the first
              --baseline-prompts prompts of one scale and extrapolated to 2,500 by a power law through
              the last two sizes (one fit at full size takes about 11 minutes on 2 cores); the full
              baseline report = the new report without its mixed models + 2 baseline fits.
The script checks that both fits give the same estimate, SE and variances (3 decimals) at each
baseline size.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.analysis import SCALES, simulate  # noqa: E402
from bench.baselines import mixed_model_statsmodels  # noqa: E402
from evalapp.analysis import analyze_long  # noqa: E402
from evalapp.stats.comparison import mixed_model  # noqa: E402


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - start, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument("--baseline-prompts", default="250,500")
    args = ap.parse_args()
    df = simulate()
    print(f"data: {len(df):,} ratings, {df['item'].nunique():,} responses, {df['prompt'].nunique():,} prompts, "
          f"{df['rater'].nunique()} raters; cores {len(os.sched_getaffinity(0))}, load avg "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    analyze_long(df.head(600), n_boot=20)  # imports outside the timings

    full, without, mixed_only = [], [], []
    for rep in range(args.repeats):
        t_full, result = timed(analyze_long, df, n_boot=args.n_boot, fit_mixed=True)
        t_without, _ = timed(analyze_long, df, n_boot=args.n_boot, fit_mixed=False)
        sub = df[df["scale"] == next(iter(SCALES))]
        t_mixed, _ = timed(mixed_model, sub["prompt"], sub["rater"], (sub["arm"] == "B").astype(int), sub["score"])
        full.append(t_full), without.append(t_without), mixed_only.append(t_mixed)
        print(f"  repeat {rep + 1}: full report {t_full:.2f} s (without mixed {t_without:.2f} s); one mixed fit "
              f"{t_mixed:.2f} s; load {os.getloadavg()[0]:.1f}", flush=True)
    for scale, r in result["scales"].items():
        m = r["comparison"]["mixed"]
        print(f"  {scale}: mixed beta {m['estimate']:.4f} (SE {m['se']:.4f}), converged {m['converged']}")

    sub = df[df["scale"] == next(iter(SCALES))]
    points = []
    for n in [int(x) for x in args.baseline_prompts.split(",")]:
        part = sub[sub["prompt"].astype(int) < n]
        cols = (part["prompt"], part["rater"], (part["arm"] == "B").astype(int), part["score"])
        t_base, base = timed(mixed_model_statsmodels, *cols)
        t_new, new = timed(mixed_model, *cols)
        points.append((n, t_base))
        same = (abs(base["estimate"] - new["estimate"]) < 1e-3 and abs(base["se"] - new["se"]) < 1e-3
                and all(abs(base["variances"][k] - new["variances"][k]) < 1e-3 for k in base["variances"]))
        print(f"  {n} prompts ({len(part):,} ratings): statsmodels {t_base:.1f} s, ours {t_new:.3f} s -> "
              f"{t_base / t_new:.0f}x; same to 3 decimals: {same} (beta {base['estimate']:.4f} / "
              f"{new['estimate']:.4f}, SE {base['se']:.4f} / {new['se']:.4f})", flush=True)
        if not same:
            raise SystemExit("the two fits disagree")
    (n0, t0), (n1, t1) = points[-2], points[-1]
    per_scale = t1 * (df["prompt"].nunique() / n1) ** (np.log(t1 / t0) / np.log(n1 / n0))
    med = statistics.median
    baseline_full = med(without) + len(SCALES) * per_scale
    print(f"\nmedian of {args.repeats}: full report with the mixed model {med(full):.2f} s "
          f"(range {min(full):.2f}-{max(full):.2f}; goal <= 30 s); one mixed fit {med(mixed_only):.2f} s")
    print(f"baseline extrapolated: statsmodels ~{per_scale:.0f} s a scale at {df['prompt'].nunique():,} prompts; "
          f"full report ~{baseline_full:.0f} s -> {baseline_full / med(full):.0f}x")


if __name__ == "__main__":
    main()
