"""`python -m modelserver generate` end to end on a tiny model directory (no Django)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from modelserver.cli import build_parser, main
from modelserver.inference.seeds import request_seed

PROMPTS = [
    {"id": "a", "text": "I feel sad and alone."},
    {"id": "b", "messages": [{"role": "user", "content": "My partner and I keep arguing."}]},
    {"id": "c", "messages": [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello, how can I help?"},
        {"role": "user", "content": "I can't sleep."},
    ], "seed": 42},
]


def _write_prompts(path, rows=PROMPTS):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_cli_both_arms(tmp_path, tiny_model_dir, tiny_adapter_dir, capsys):
    prompts = _write_prompts(tmp_path / "p.jsonl")
    out = tmp_path / "out" / "o.jsonl"
    rc = main([
        "generate", "--base", str(tiny_model_dir), "--adapter", str(tiny_adapter_dir), "--baseline",
        "--prompts", str(prompts), "--out", str(out), "--max-new-tokens", "12", "--seed", "7",
        "--batch-size", "2", "--temperature", "0.9", "--top-p", "0.8",
    ])
    assert rc == 0
    rows = _read(out)
    assert [(r["id"], r["arm"]) for r in rows] == [
        ("a", "baseline"), ("b", "baseline"), ("c", "baseline"), ("a", "adapter"), ("b", "adapter"), ("c", "adapter")
    ]
    for r in rows:
        prov = r["provenance"]
        assert prov["params"]["max_new_tokens"] == 12 and prov["params"]["top_p"] == 0.8
        assert prov["batch_size"] == 2 and r["output_tokens"] <= 12 and r["finish_reason"] in ("stop", "length")
    assert rows[0]["provenance"]["seed"] == request_seed(7, "a") == rows[3]["provenance"]["seed"]
    assert rows[2]["provenance"]["seed"] == 42
    assert rows[3]["provenance"]["adapter_sha256"] and rows[0]["provenance"]["adapter_sha256"] is None
    assert [r["text"] for r in rows[:3]] != [r["text"] for r in rows[3:]]
    assert "generate" in capsys.readouterr().err  # tqdm progress bar

    # the same run again reproduces every text; the baseline alone equals the baseline arm above
    again = tmp_path / "again.jsonl"
    assert main(["generate", "--base", str(tiny_model_dir), "--prompts", str(prompts), "--out", str(again),
                 "--max-new-tokens", "12", "--seed", "7", "--batch-size", "3", "--temperature", "0.9",
                 "--top-p", "0.8", "--no-progress"]) == 0
    assert [r["text"] for r in _read(again)] == [r["text"] for r in rows[:3]]


def test_cli_subprocess_without_django(tmp_path, tiny_model_dir):
    prompts = _write_prompts(tmp_path / "p.jsonl", PROMPTS[:2])
    out = tmp_path / "o.jsonl"
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    code = (
        "import runpy, sys; sys.argv = ['modelserver'] + sys.argv[1:]; "
        "sys.modules['django'] = None; "  # any Django import would now fail
        "runpy.run_module('modelserver', run_name='__main__')"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, "generate", "--base", str(tiny_model_dir), "--prompts", str(prompts),
         "--out", str(out), "--max-new-tokens", "6", "--greedy"],
        capture_output=True, text=True, env=env, cwd=os.getcwd(), timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    rows = _read(out)
    assert [r["id"] for r in rows] == ["a", "b"] and rows[0]["provenance"]["params"]["do_sample"] is False


@pytest.mark.parametrize(
    "lines, match",
    [
        (["not json"], "invalid JSON"),
        ([json.dumps({"text": "x"})], "needs an 'id'"),
        ([json.dumps({"id": 1})], "needs 'messages'"),
        ([json.dumps({"id": 1, "text": "x"}), json.dumps({"id": 1, "text": "y"})], "duplicate id"),
        ([json.dumps({"id": 1, "messages": [{"role": "assistant", "content": "x"}]})], "end with a user"),
        ([], "no prompts"),
    ],
)
def test_cli_bad_input(tmp_path, tiny_model_dir, capsys, lines, match):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("\n".join(lines) + "\n")
    rc = main(["generate", "--base", str(tiny_model_dir), "--prompts", str(prompts), "--out", str(tmp_path / "o")])
    assert rc == 2
    assert match in capsys.readouterr().err


def test_cli_bad_model(tmp_path, capsys):
    prompts = _write_prompts(tmp_path / "p.jsonl")
    rc = main(["generate", "--base", str(tmp_path / "missing"), "--prompts", str(prompts),
               "--out", str(tmp_path / "o.jsonl")])
    assert rc == 2 and "not found" in capsys.readouterr().err


def test_parser_has_subcommands():
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args([])
    args = parser.parse_args(["generate", "--prompts", "p", "--out", "o"])
    assert args.base == "bundled" and args.command == "generate" and args.temperature == 0.7
