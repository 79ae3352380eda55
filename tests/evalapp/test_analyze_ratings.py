"""`manage.py analyze_ratings`: published values through the CLI, and every bad input names its rows.

No database: the command only reads a file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import numpy as np
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from .test_analysis import SF_PUBLISHED, k2011_rows, sf_rows, simulated

ROOT = Path(__file__).resolve().parents[2]


def write_csv(tmp_path: Path, rows: list[dict] | str, name: str = "ratings.csv") -> Path:
    path = tmp_path / name
    if isinstance(rows, str):
        path.write_text(rows, encoding="utf-8")
    else:
        cols = list(rows[0])
        lines = [",".join(cols)] + [",".join(f"{r[c]:g}" if isinstance(r[c], float) else str(r[c]) for c in cols)
                                    for r in rows]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def no_nan(token: str) -> None:
    raise AssertionError(f"invalid JSON constant {token}")


def run_json(path: Path, *args: str) -> dict:
    out = StringIO()
    call_command("analyze_ratings", str(path), "--json", "--n-boot", "200", *args, stdout=out)
    return json.loads(out.getvalue(), parse_constant=no_nan)  # strict: NaN/Infinity would fail here


def run_bad(path: Path) -> str:
    err = StringIO()
    with pytest.raises(CommandError) as exc:
        call_command("analyze_ratings", str(path), "--json", stdout=StringIO(), stderr=err)
    return f"{exc.value}\n{err.getvalue()}"


def test_shrout_fleiss_icc_through_the_command(tmp_path):
    out = run_json(write_csv(tmp_path, sf_rows()))
    assert set(out) == {"scales", "settings"}
    s = out["scales"]["score"]
    assert {f: round(v["value"], 2) for f, v in s["icc"].items()} == SF_PUBLISHED
    assert s["icc_headline"]["single"] == "ICC2"
    for key in ("krippendorff_alpha_interval", "krippendorff_alpha_ordinal", "n_items", "n_raters", "n_ratings"):
        assert key in s
    assert out["settings"]["n_boot"] == 200 and out["settings"]["seed"] == 0


def test_krippendorff_2011_interval_alpha_and_single_rating_item(tmp_path):
    s = run_json(write_csv(tmp_path, k2011_rows()))["scales"]["score"]
    assert round(s["krippendorff_alpha_interval"]["value"], 3) == 0.849
    assert (s["n_items"], s["n_ratings"]) == (12, 41)  # the once-rated unit 12 is counted
    assert "comparison" not in s


@pytest.mark.parametrize(("lo", "hi"), [(0, 3), (1, 5)])
def test_scales_and_arm_comparison(tmp_path, lo, hi):
    df = simulated(n_prompts=30, lo=lo, hi=hi, seed=hi)
    out = run_json(write_csv(tmp_path, df.to_dict("records")), "--seed", "3")
    s = out["scales"]["score"]
    assert s["value_domain"][0] >= lo and s["value_domain"][-1] <= hi
    assert s["comparison"]["n_prompts"] == 30 and s["comparison"]["mean_diff"] > 0
    assert s["comparison"]["mixed"]["estimate"] is not None
    assert out["settings"]["arm_mapping"] == {"base": 0, "tuned": 1} and out["settings"]["seed"] == 3


def test_two_scales_with_scale_column_and_no_mixed(tmp_path):
    a = simulated(n_prompts=20, seed=1).assign(scale="empathy")
    b = simulated(n_prompts=20, seed=2, lo=0, hi=3).assign(scale="safety")
    out = run_json(write_csv(tmp_path, a.to_dict("records") + b.to_dict("records")), "--no-mixed")
    assert sorted(out["scales"]) == ["empathy", "safety"]
    assert all(s["comparison"]["mixed"] is None for s in out["scales"].values())
    assert out["scales"]["safety"]["comparison"]["wilcoxon_p_holm"] is not None


def test_table_output(tmp_path):
    out = StringIO()
    path = write_csv(tmp_path, simulated(n_prompts=15, seed=4).to_dict("records"))
    call_command("analyze_ratings", str(path), "--n-boot", "50", "--no-mixed", stdout=out)
    text = out.getvalue()
    assert "Scale score (interval): 30 items" in text and "Krippendorff alpha, interval" in text
    assert "Comparison tuned - base" in text and "[skipped]" in text


def test_degenerate_file_gives_strict_json(tmp_path):
    csv = "item,rater,score,arm\n" + "".join(f"i{i},{r},2,{'ab'[i % 2]}\n" for i in range(4) for r in "xy")
    s = run_json(write_csv(tmp_path, csv))["scales"]["score"]
    assert s["krippendorff_alpha_interval"]["value"] is None


BAD_INPUTS = {
    "missing column": ("item,rater\na,x\n", ["missing column(s) score"]),
    "non-numeric": ("item,rater,score\na,x,1\na,y,good\nb,x,\nb,y,nan\n",
                    ["score is not a finite number: rows 3, 5", "empty score: row 4"]),
    "one rater": ("item,rater,score\na,x,1\nb,x,2\n", ["only one rater"]),
    "duplicate": ("item,rater,score\na,x,1\na,y,2\nb,x,1\na,x,3\n", ["duplicate rating", "rows 2, 5"]),
    "duplicate per scale": ("item,rater,score,scale\na,x,1,e\na,y,2,e\na,x,2,s\na,y,2,s\na,x,3,s\n",
                            ["scale 's'", "rows 4, 6"]),
    "empty file": ("", ["empty file"]),
    "header only": ("item,rater,score\n", ["no data rows"]),
    "three arms": ("item,rater,score,arm\na,x,1,A\na,y,1,A\nb,x,1,B\nc,x,2,C\n", ["has 3 arms", "--arms A,B"]),
    "extra field": ("item,rater,score\na,x,1\na,y,2,oops\n", ["more fields than the header has: row 3"]),
    "blank line keeps numbering": ("item,rater,score\na,x,1\n\na,y,?\n", ["score is not a finite number: row 4"]),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_fails_with_rows_named(tmp_path, case):
    content, expected = BAD_INPUTS[case]
    message = run_bad(write_csv(tmp_path, content))
    for text in expected:
        assert text in message


def test_not_utf8(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("item,rater,score\ncaf\xe9,x,1\n".encode("latin-1"))
    assert "not UTF-8" in run_bad(path)


def test_missing_file(tmp_path):
    assert "Cannot read" in run_bad(tmp_path / "nope.csv")


def test_bom_and_header_case_are_accepted(tmp_path):
    path = tmp_path / "bom.csv"
    body = "".join(f"t{i},j{j},{v}\n" for i, row in enumerate(np.array([[1, 2], [2, 2], [3, 3]])) for j, v in
                   enumerate(row))
    path.write_bytes(("\ufeffItem, Rater ,SCORE\n" + body).encode("utf-8"))
    assert run_json(path)["scales"]["score"]["n_ratings"] == 6


def test_real_process_exit_status_and_stderr(tmp_path):
    path = write_csv(tmp_path, "item,rater,score\na,x,1\na,y,x\n")
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "evalapp.settings.test"}
    proc = subprocess.run([sys.executable, "manage.py", "analyze_ratings", str(path), "--json"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and proc.stdout == ""
    assert "score is not a finite number: row 3" in proc.stderr
