"""Re-analysis of long-form ratings: agreement and arm comparison per scale.

Pure (numpy/pandas + evalapp.stats, no Django) so it can run on an exported
CSV anywhere; the `analyze_ratings` command is a thin wrapper around it.

Long form: one row per rating with columns item, rater, score and optionally
scale, arm, prompt, level, not_sure.  When an arm column is present the rated
unit is (item, arm), so a file may reuse prompt ids as item ids across arms.
`level` (interval, ordinal or nominal; default interval) chooses each scale's
metrics: Krippendorff's alpha at that level, ICC only for interval, quadratic
weighted kappa for interval/ordinal and Cohen's (unweighted) kappa for nominal;
the arm comparison of a nominal scale is answer by answer (compare_choice).
A row with not_sure 1 has an empty score: it is missing in every statistic and
counted per scale as n_not_sure.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from evalapp.stats import agreement

__all__ = ["Problem", "analyze_long", "rating_matrices", "validate_long"]

REQUIRED = ("item", "rater", "score")
OPTIONAL = ("scale", "arm", "prompt", "level", "not_sure")
LEVELS = ("interval", "ordinal", "nominal")
DEFAULT_SCALE = "score"
ICC_FORMS = ("ICC1", "ICC2", "ICC3", "ICC1k", "ICC2k", "ICC3k")
_MAX_ROWS_SHOWN = 20  # a bad 100k-row file must still give a readable message


@dataclass(frozen=True)
class Problem:
    """One input problem; rows use CSV numbering (header = row 1, first data row = 2)."""

    message: str
    rows: list[int] = field(default_factory=list)

    def __str__(self) -> str:
        if not self.rows:
            return self.message
        shown = ", ".join(map(str, self.rows[:_MAX_ROWS_SHOWN]))
        more = f" and {len(self.rows) - _MAX_ROWS_SHOWN} more" if len(self.rows) > _MAX_ROWS_SHOWN else ""
        return f"{self.message}: row{'s' if len(self.rows) > 1 else ''} {shown}{more}"


def _number(text: object) -> float | None:
    """Finite float or None; NaN/inf count as non-numeric since no statistic can use them."""
    try:
        value = float(str(text).strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() == ""


def _truthy(value: object) -> bool:
    return not _blank(value) and str(value).strip().lower() in ("1", "true", "yes", "1.0")


def validate_long(
    rows: Sequence[Mapping[Any, Any]], columns: Sequence[str] | None = None, row_numbers: Sequence[int] | None = None
) -> list[Problem]:
    """Problems that stop analysis; [] when the rows can be analysed.

    `rows` are csv.DictReader-style mappings (extra fields under key None);
    `columns` is the header, taken from the first row when not given;
    `row_numbers` the CSV row of each row (default 2, 3, ...: header = row 1).
    """
    cols = list(columns) if columns is not None else [c for c in (rows[0] if rows else []) if c is not None]
    num = list(row_numbers) if row_numbers is not None else list(range(2, len(rows) + 2))
    if not cols and not rows:
        return [Problem("empty file: no header and no rows")]
    problems: list[Problem] = []
    repeated = sorted({c for c in cols if cols.count(c) > 1 and c in (*REQUIRED, *OPTIONAL)})
    if repeated:
        problems.append(Problem(f"column(s) {', '.join(repeated)} appear more than once in the header"))
    missing = [c for c in REQUIRED if c not in cols]
    if missing:
        problems.append(Problem(f"missing column(s) {', '.join(missing)} (have: {', '.join(map(str, cols))})"))
    if not rows:
        problems.append(Problem("empty file: no data rows after the header"))
    if problems:
        return problems

    present = [c for c in (*REQUIRED, *OPTIONAL) if c in cols]
    too_long = [num[i] for i, r in enumerate(rows) if r.get(None)]  # type: ignore[call-overload]
    if too_long:
        problems.append(Problem("more fields than the header has", too_long))
    for col in present:
        if col == "not_sure":
            continue
        # A "not sure" answer has no score; any other empty score is a problem.
        blank = [num[i] for i, r in enumerate(rows) if _blank(r.get(col)) and not (col == "score" and _truthy(r.get("not_sure")))]
        if blank:
            problems.append(Problem(f"empty {col}", blank))
    bad = [num[i] for i, r in enumerate(rows) if not _blank(r.get("score")) and _number(r.get("score")) is None]
    if bad:
        problems.append(Problem("score is not a finite number", bad))
    if "level" in cols:
        wrong = [num[i] for i, r in enumerate(rows) if not _blank(r.get("level")) and str(r.get("level")).strip() not in LEVELS]
        if wrong:
            problems.append(Problem(f"level must be one of {', '.join(LEVELS)}", wrong))
        levels: dict[str, set[str]] = defaultdict(set)
        for r in rows:
            levels[str(r.get("scale", DEFAULT_SCALE)).strip()].add(str(r.get("level", "")).strip())
        mixed = sorted(scale for scale, found in levels.items() if len(found) > 1)
        if mixed:
            problems.append(Problem(f"scale(s) {', '.join(mixed)} have more than one level"))

    key_cols = [c for c in ("item", "arm", "rater", "scale") if c in cols]
    seen: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        seen[tuple(str(r.get(c, "")).strip() for c in key_cols)].append(num[i])
    for key, where in seen.items():
        if len(where) > 1:
            what = ", ".join(f"{c} {v!r}" for c, v in zip(key_cols, key, strict=True))
            problems.append(Problem(f"duplicate rating ({what})", where))

    raters: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        if not _truthy(r.get("not_sure")):
            raters[str(r.get("scale", DEFAULT_SCALE)).strip()].add(str(r.get("rater", "")).strip())
    for scale, who in sorted(raters.items()):
        if len(who - {""}) < 2:
            where = f" in scale {scale!r}" if "scale" in cols else ""
            problems.append(Problem(f"only one rater{where}; agreement needs at least two"))
    if "arm" in cols:
        labels = sorted({str(r.get("arm")).strip() for r in rows if not _blank(r.get("arm"))})
        if len(labels) != 2:
            problems.append(Problem(f"arm must have exactly two labels, found {len(labels)}: {labels[:10]}"))
    return problems


def _plain(obj: Any) -> Any:
    """JSON-safe copy: numpy scalars -> Python, NaN/inf -> None, tuples -> lists."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | np.ndarray):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _frame(data: pd.DataFrame | Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    df = data.reset_index(drop=True) if isinstance(data, pd.DataFrame) else pd.DataFrame(list(data))
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ValueError(f"missing column(s): {', '.join(missing)}")
    df["not_sure"] = df["not_sure"].map(_truthy) if "not_sure" in df.columns else False
    if "scale" not in df.columns:
        df["scale"] = DEFAULT_SCALE
    df["level"] = df["level"].fillna("interval").replace("", "interval") if "level" in df.columns else "interval"
    if not df["level"].isin(LEVELS).all():
        raise ValueError(f"level must be one of {', '.join(LEVELS)}")
    df.loc[df["not_sure"], "score"] = np.nan
    df["score"] = pd.to_numeric(df["score"], errors="raise").astype(np.float64)
    if not np.isfinite(df.loc[~df["not_sure"], "score"]).all():
        raise ValueError("scores must be finite numbers")
    df["unit"] = list(zip(df["item"], df["arm"], strict=True)) if "arm" in df.columns else df["item"]
    if df.duplicated(["scale", "unit", "rater"]).any():
        raise ValueError("duplicate item/rater/scale ratings; run validate_long for the rows")
    return df


def _alpha(m: np.ndarray, level: agreement.Level, domain: np.ndarray, n_boot: int, seed: int) -> dict[str, Any]:
    """Alpha with bootstrap CI; value None plus a note where alpha is undefined."""
    res: dict[str, Any] = {"value": None, "ci95": [None, None], "n_boot": 0}
    if domain.size >= 2 and m.shape[1] >= 1:  # krippendorff raises on a one-value domain / no items
        with np.errstate(invalid="ignore", divide="ignore"):
            ci = agreement.krippendorff_alpha_ci(m, level, n_boot, seed, value_domain=domain)
        res = {"value": ci["value"], "ci95": list(ci["ci95"]), "n_boot": ci["n_boot"]}
    if res["value"] is None or not math.isfinite(res["value"]):
        res["note"] = "undefined: no variation among scores of items rated at least twice"
    return res


def _icc(sub: pd.DataFrame, n_single: int) -> dict[str, Any]:
    """ICC block: forms, headline and note, choosing the design from who rated what.

    Items with one rating are left out (ICC needs pairs).  Same raters on every
    item -> two-way items x raters matrix; else, if every item has the same
    number k of ratings, an items x k matrix in which only the one-way forms
    mean anything (a column is just "some rater", so ICC2/ICC3 are None).
    """
    dropped = f"; {n_single} item(s) with a single rating left out" if n_single else ""
    pairs = sub[sub.groupby("unit")["rater"].transform("size") >= 2]
    counts = pairs.groupby("unit").size()
    none = dict.fromkeys(("icc", "icc_headline"))
    if counts.size < 2:
        return {**none, "icc_note": f"ICC needs at least two items rated at least twice{dropped}"}
    if counts.nunique() != 1:
        return {**none, "icc_note": "ICC needs a complete matrix: items have different numbers of ratings "
                f"({counts.min()} to {counts.max()}){dropped}"}
    k = int(counts.iloc[0])
    # k distinct raters per item (no duplicates) and only k raters overall <=> one rater set for all.
    if pairs["rater"].nunique() == k:
        matrix = pairs.pivot(index="unit", columns="rater", values="score").to_numpy()
        design, keep = "same_raters_all_items", ICC_FORMS
    else:
        grouped = np.argsort(pd.factorize(pairs["unit"])[0], kind="stable")  # each item's k ratings together
        matrix = pairs["score"].to_numpy()[grouped].reshape(counts.size, k)
        design, keep = "different_raters_per_item", ("ICC1", "ICC1k")
    with np.errstate(invalid="ignore", divide="ignore"):
        forms = agreement.icc_all(matrix)
    icc = {f: ({"value": forms[f]["value"], "ci95": list(forms[f]["ci95"])} if f in keep
               else {"value": None, "ci95": [None, None]}) for f in ICC_FORMS}
    headline = agreement.icc_headline_form(design)  # type: ignore[arg-type]
    note = f"{design.replace('_', ' ')}: {matrix.shape[0]} items x {matrix.shape[1]} ratings{dropped}"
    if keep != ICC_FORMS:
        note += "; two-way forms (ICC2, ICC3) are undefined when raters differ between items"
    return {"icc": icc, "icc_headline": {"design": design, **headline}, "icc_note": note}


def rating_matrices(sub: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(raters x items, slots x items) score matrices of one scale, NaN where missing.

    Alpha and exact/within-one agreement depend only on each item's multiset of
    scores, not on who gave them, so they get the "slot" matrix (row j = j-th
    rating of each item): k_max rows instead of one per rater makes them about
    n_raters/k_max times cheaper (200 raters, 3 per item: 66x).  Kappa needs the
    rater identities, so it gets the raters x items matrix.
    """
    u_codes, units = pd.factorize(sub["unit"], sort=True)
    r_codes, raters = pd.factorize(sub["rater"], sort=True)
    m = np.full((len(raters), len(units)), np.nan)  # the krippendorff layout
    m[r_codes, u_codes] = sub["score"].to_numpy()
    slot = sub.groupby(u_codes).cumcount().to_numpy()
    slots = np.full((int(slot.max()) + 1 if len(slot) else 0, len(units)), np.nan)
    slots[slot, u_codes] = sub["score"].to_numpy()
    return m, slots


# The alpha levels reported per criterion level: the first is the headline.
ALPHA_LEVELS: dict[str, tuple[agreement.Level, ...]] = {
    "interval": ("interval", "ordinal"), "ordinal": ("ordinal",), "nominal": ("nominal",)}


def _scale(sub: pd.DataFrame, n_boot: int, seed: int, level: str = "interval", n_not_sure: int = 0) -> dict[str, Any]:
    n_per_unit = sub.groupby("unit")["rater"].transform("size")
    n_single = int(sub.loc[n_per_unit < 2, "unit"].nunique())
    m, slots = rating_matrices(sub[n_per_unit >= 2])  # single ratings add nothing to pair statistics
    domain = np.unique(sub["score"].to_numpy())  # value domain from the data, whatever the scale
    weights = "unweighted" if level == "nominal" else "quadratic"
    kappa = agreement.weighted_kappa_pairs(m, weights, min_shared=5, labels=domain) if m.size else None
    icc = _icc(sub, n_single) if level == "interval" else {
        "icc": None, "icc_headline": None, "icc_note": f"ICC is for interval criteria; this one is {level}"}
    out: dict[str, Any] = {
        "level": level,
        "n_items": int(sub["unit"].nunique()),
        "n_raters": int(sub["rater"].nunique()),
        "n_ratings": len(sub),
        "n_not_sure": int(n_not_sure),
        "n_items_single_rating": n_single,
        "value_domain": domain.tolist(),
        "alpha_headline": f"krippendorff_alpha_{ALPHA_LEVELS[level][0]}",
        **{f"krippendorff_alpha_{lv}": _alpha(slots, lv, domain, n_boot, seed) for lv in ALPHA_LEVELS[level]},
        **icc,
        "weighted_kappa": {
            "weights": weights, "min_shared_items": 5,
            "mean": kappa["mean"] if kappa else None,
            "n_pairs": sum(p["kappa"] is not None for p in kappa["pairs"]) if kappa else 0,
        },
        "exact_agreement": agreement.exact_agreement(slots) if slots.size else None,
        "within_one_agreement": (agreement.within_one_agreement(slots) if slots.size else None)
        if level != "nominal" else None,
    }
    return out


def analyze_long(
    data: pd.DataFrame | Iterable[Mapping[str, Any]], *, n_boot: int = 2000, seed: int = 0, fit_mixed: bool = True,
    arm_order: Sequence[str] | None = None,
) -> dict[str, Any]:
    """{"scales": {scale: {...}}, "settings": {...}} for long-form ratings, JSON-serialisable.

    Raises ValueError on input validate_long would reject (missing columns,
    non-numeric scores, duplicates, an arm column without exactly two labels).
    """
    df = _frame(data)
    settings: dict[str, Any] = {"n_boot": n_boot, "seed": seed, "fit_mixed": fit_mixed, "arm_mapping": None,
                                "prompt_column": "prompt" if "prompt" in df.columns else "item"}
    levels = {str(k): v for k, v in df.groupby("scale")["level"].first().items()}
    not_sure = {str(k): int(v) for k, v in df[df["not_sure"]].groupby("scale").size().items()}
    arm_labels = sorted(df["arm"].unique(), key=str) if "arm" in df.columns else []
    if arm_order and sorted(map(str, arm_order)) == sorted(map(str, arm_labels)):
        # The caller's order (e.g. baseline first): the contrast is the second minus the first.
        arm_labels = [next(a for a in arm_labels if str(a) == str(o)) for o in arm_order]
    df = df[~df["not_sure"]].reset_index(drop=True)
    scales = {str(name): _scale(sub, n_boot, seed, levels[str(name)], not_sure.get(str(name), 0))
              for name, sub in df.groupby("scale", sort=True)}
    for name in sorted(set(not_sure) - set(scales)):  # every answer "not sure": nothing to analyse
        scales[name] = {"level": levels[name], "n_items": 0, "n_raters": 0, "n_ratings": 0,
                        "n_not_sure": int(not_sure[name]), "note": "every answer was \"not sure\""}

    if "arm" in df.columns:
        labels = arm_labels  # sorted so the same file always maps the same way
        if len(labels) != 2:
            raise ValueError(f"arm must have exactly two labels, found {len(labels)}")
        mapping = {str(label): i for i, label in enumerate(labels)}
        settings["arm_mapping"] = mapping
        settings["contrast"] = f"{labels[1]} - {labels[0]}"
        df["arm_code"] = df["arm"].map(lambda a: mapping[str(a)])
        df["prompt_key"] = (df["prompt"] if "prompt" in df.columns else df["item"]).astype(str)
        # statsmodels import only when needed
        from evalapp.stats.comparison import compare_choice, compare_scales

        groups = {str(name): sub for name, sub in df.groupby("scale", sort=True)}
        data_by_scale = {
            name: {"prompt": sub["prompt_key"].to_numpy(), "rater": sub["rater"].astype(str).to_numpy(),
                   "arm": sub["arm_code"].to_numpy(), "score": sub["score"].to_numpy()}
            for name, sub in groups.items() if levels.get(name, "interval") != "nominal"
        }
        comparison = compare_scales(data_by_scale, n_boot=n_boot, seed=seed, fit_mixed=fit_mixed)
        for name, sub in groups.items():
            if levels.get(name, "interval") == "nominal":
                comparison[name] = compare_choice(sub["prompt_key"].to_numpy(), sub["arm_code"].to_numpy(),
                                                  sub["score"].to_numpy(), n_boot=n_boot, seed=seed)
        # One Holm family over every criterion's comparison: a likert criterion's Wilcoxon p and a
        # choice criterion's smallest adjusted option p (the mixed model's p has its own family).
        from evalapp.stats.comparison import holm

        family = holm({name: (res.get("p") if "options" in res else (res.get("wilcoxon") or {}).get("p"))
                       for name, res in comparison.items()})
        for name, res in comparison.items():
            if "options" in res:
                res["p_holm"] = family[name]
            else:
                res["wilcoxon_p_holm"] = family[name]
        for name, res in comparison.items():
            res["contrast"] = f"{labels[1]} - {labels[0]}"
            if not res["n_prompts"]:
                res["note"] = "no prompt was rated in both arms (is the prompt column missing?)"
            if name in scales:
                scales[name]["comparison"] = res
    return _plain({"scales": scales, "settings": settings})
