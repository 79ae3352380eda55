"""Re-analyse an exported long-form ratings CSV (item, rater, score[, scale, arm, prompt])."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from evalapp.analysis import OPTIONAL, REQUIRED, analyze_long, validate_long


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _ci(block: dict[str, Any] | None) -> str:
    if not block or block.get("value") is None:
        return "-"
    lo, hi = block["ci95"]
    return f"{_fmt(block['value'])}  [{_fmt(lo)}, {_fmt(hi)}]"


EXPORT_ALIASES = {"response_id": "item", "prompt_id": "prompt"}


def read_rows(path: Path) -> tuple[list[str], list[dict[str, Any]], list[int]]:
    """Header (stripped, lower-cased), DictReader-style rows and their CSV row numbers (header = 1).

    CommandError if the file is unreadable or not UTF-8.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CommandError(f"Cannot read {path}: {exc.strerror}.") from None
    try:
        text = data.decode("utf-8-sig")  # -sig: Excel writes a BOM that would otherwise join the first name
    except UnicodeDecodeError as exc:
        raise CommandError(f"{path} is not UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
                           "save it as UTF-8 CSV.") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    header = [h.strip().lower() for h in next(reader, [])]
    # EmpathEval's own ratings.csv names its columns for what they are; read it as it comes.
    for export_name, name in EXPORT_ALIASES.items():
        if export_name in header and name not in header:
            header[header.index(export_name)] = name
    rows, numbers = [], []
    for number, values in enumerate(reader, start=2):
        if not any(v.strip() for v in values):
            continue  # blank lines carry no rating; numbers keep later rows' numbering right
        row: dict[Any, Any] = dict(zip(header, values, strict=False))
        if len(values) > len(header):
            row[None] = values[len(header):]  # csv.DictReader's convention, flagged by validate_long
        rows.append(row)
        numbers.append(number)
    return header, rows, numbers


class Command(BaseCommand):
    requires_system_checks: list[str] = []  # reads a file and touches neither models nor database
    help = (
        "Agreement (Krippendorff's alpha with bootstrap CIs, ICC, weighted kappa, exact/within-one) "
        "and, with an arm column, the arm comparison, per scale, from a long-form CSV with columns "
        "item, rater, score and optionally scale, arm (two labels), prompt, level (interval, ordinal or "
        "nominal: which metrics fit each scale) and not_sure (1 = the rater was not sure; score empty). "
        "EmpathEval's ratings.csv is read as it is exported (response_id is the item, prompt_id the "
        "prompt, rows marked excluded are left out)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path, help="UTF-8 CSV, one rating per row.")
        parser.add_argument("--json", action="store_true", help="Print one JSON object instead of tables.")
        parser.add_argument("--n-boot", type=int, default=2000, help="Bootstrap resamples (default 2000).")
        parser.add_argument("--seed", type=int, default=0, help="Bootstrap seed (default 0).")
        parser.add_argument("--arms", default="",
                            help="Two arm labels, comma-separated, to compare when the file has more than two "
                                 "(e.g. --arms baseline,fine-tuned); other arms' rows are left out.")
        parser.add_argument("--no-mixed", action="store_true",
                            help="Skip the mixed model (it takes minutes once there are thousands of prompts).")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["n_boot"] < 1:
            raise CommandError("--n-boot must be at least 1.")
        path: Path = options["file"]
        header, rows, numbers = read_rows(path)
        if "excluded" in header:  # an EmpathEval export: its excluded rows are out of the analysis too
            kept = [(r, n) for r, n in zip(rows, numbers, strict=True) if str(r.get("excluded", "")).strip() != "1"]
            n_excluded = len(rows) - len(kept)
            rows, numbers = [r for r, _ in kept], [n for _, n in kept]
            if n_excluded:
                self.stderr.write(f"note: {n_excluded} row(s) marked excluded were left out.")
        if "arm" in header:
            labels = sorted({str(r.get("arm", "")).strip() for r in rows} - {""})
            chosen = [a.strip() for a in options["arms"].split(",") if a.strip()]
            if chosen:
                unknown = [a for a in chosen if a not in labels]
                if len(chosen) != 2 or unknown:
                    raise CommandError(f"--arms takes two of the file's arms {labels}"
                                       + (f"; not in the file: {unknown}" if unknown else ""))
                kept = [(r, n) for r, n in zip(rows, numbers, strict=True) if str(r.get("arm", "")).strip() in chosen]
                rows, numbers = [r for r, _ in kept], [n for _, n in kept]
            elif len(labels) > 2:
                raise CommandError(f"{path} has {len(labels)} arms {labels}; choose the two to compare with "
                                   "--arms A,B (one run per pair).")
        problems = validate_long(rows, columns=header, row_numbers=numbers)
        if problems:
            for problem in problems:
                self.stderr.write(f"error: {problem}")
            raise CommandError(f"{path}: {len(problems)} problem(s); nothing analysed.")
        # Stripped like validate_long compares them, so " r1" and "r1" are one rater in both.
        records = [{c: r[c].strip() for c in (*REQUIRED, *OPTIONAL) if c in header} for r in rows]
        for r in records:
            r["score"] = float(r["score"]) if r["score"] else None
        chosen = [a.strip() for a in options["arms"].split(",") if a.strip()]
        result = analyze_long(records, n_boot=options["n_boot"], seed=options["seed"],
                              fit_mixed=not options["no_mixed"], arm_order=chosen or None)
        # A choice's answers by the keys raters saw (ratings.csv's score_label), not by their index.
        self._labels = {}
        if "score_label" in header:
            for r in rows:
                if str(r.get("score", "")).strip() and str(r.get("level", "")).strip() == "nominal":
                    self._labels.setdefault(r.get("scale", ""), {})[str(int(float(r["score"])))] = r["score_label"]
        result["settings"]["file"] = str(path)
        if options["json"]:
            # allow_nan=False: analyze_long maps NaN to None, so a NaN here is a bug to surface, not hide.
            self.stdout.write(json.dumps(result, indent=2, allow_nan=False))
            return
        for name, scale in result["scales"].items():
            self.stdout.write(self._table(name, scale, result["settings"]))

    def _table(self, name: str, s: dict[str, Any], settings: dict[str, Any]) -> str:
        if "value_domain" not in s:
            return f"Scale {name} ({s['level']}): {s['n_not_sure']} not-sure answers; {s.get('note', '')}\n"
        dom = s["value_domain"]
        lines = [
            f"Scale {name} ({s['level']}): {s['n_items']} items, {s['n_raters']} raters, {s['n_ratings']} ratings, "
            f"scores {dom[0]:g}..{dom[-1]:g} ({s['n_items_single_rating']} items rated once); "
            f"{s['n_not_sure']} not-sure answers left out",
        ]
        for level in ("interval", "ordinal", "nominal"):
            if f"krippendorff_alpha_{level}" in s:
                lines.append(f"  Krippendorff alpha, {level:<9} {_ci(s[f'krippendorff_alpha_{level}'])}")
        if s["icc"]:
            head = s["icc_headline"]
            for form in (head["single"], head["average"]):
                lines.append(f"  {form:<30} {_ci(s['icc'][form])}")
        lines.append(f"  ICC note: {s['icc_note']}")
        kappa = s["weighted_kappa"]
        lines += [
            f"  Kappa ({kappa['weights']:<11})         {_fmt(kappa['mean'])}  (mean of {kappa['n_pairs']} rater pairs "
            f"sharing >= {kappa['min_shared_items']} items)",
            f"  Exact / within-one agreement   {_fmt(s['exact_agreement'])} / {_fmt(s['within_one_agreement'])}",
        ]
        c = s.get("comparison")
        if c and "options" in c:
            lines.append(f"  Comparison {c['contrast']}, answer by answer, "
                         f"{c['n_prompts']} prompts in both arms")
            for option, o in c["options"].items():
                arms = o["arms"]
                shown = getattr(self, "_labels", {}).get(name, {}).get(option, option)
                lines.append(
                    f"    answer {shown}: share {_fmt(arms['0']['share'])} vs {_fmt(arms['1']['share'])}, "
                    f"paired difference {_fmt(o['mean_diff'])} [{_fmt(o['ci95'][0])}, {_fmt(o['ci95'][1])}], "
                    f"p {_fmt((o['test'] or {}).get('p'), 4)} (Holm over answers {_fmt(o['p_holm'], 4)})"
                    + (f" [{o['test']['method']}]" if o["test"] else ""))
            lines.append(f"    criterion p (Holm over criteria) {_fmt(c.get('p_holm'), 4)}")
        elif c:
            mixed = c.get("mixed") or {}
            lines += [
                f"  Comparison {c['contrast']}, {c['n_prompts']} prompts in both arms",
                f"    mean per-prompt difference   {_fmt(c['mean_diff'])}  [{_fmt(c['ci95'][0])}, "
                f"{_fmt(c['ci95'][1])}] (prompt x rater bootstrap)",
                f"    Wilcoxon p                   {_fmt((c['wilcoxon'] or {}).get('p'), 4)}  "
                f"(Holm {_fmt(c['wilcoxon_p_holm'], 4)})",
                f"    d_z / P(superiority)         {_fmt(c['d_z'])} / {_fmt(c['prob_superiority'])}",
                f"    mixed model estimate (SE)    {_fmt(mixed.get('estimate'))} ({_fmt(mixed.get('se'))}), "
                f"p {_fmt(mixed.get('p'), 4)} (Holm {_fmt(c['mixed_p_holm'], 4)})"
                + (f"  [{mixed['reason']}]" if mixed.get("reason") else "" if c.get("mixed") else "  [skipped]"),
            ]
            if c.get("note"):
                lines.append(f"    note: {c['note']}")
        return "\n".join(lines) + "\n"
