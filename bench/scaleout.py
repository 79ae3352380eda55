"""Wall time of one study's generation with one real `celery worker -Q gpu` against two sharing its chunks.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/scaleout_bench REDIS_URL=redis://127.0.0.1:6379/8 \
        .venv/bin/python bench/scaleout.py --repeats 3

The study: --n-prompts val/test-split CounselChat questions x 2 arms on the bundled SmolLM2-135M-Instruct
(CPU fp32): a baseline, and a random LoRA adapter (seeded, made here) so both paths of the shared model run.
Every worker is a subprocess `celery -A evalapp worker -Q gpu --pool solo -c 1` with
DJANGO_SETTINGS_MODULE=evalapp.settings.base, this database (a throwaway `test_` one made on DATABASE_URL's
server) and this Redis, and OMP_NUM_THREADS=1, so that one worker uses one core and two use two.

Each repeat runs both configurations (order alternating between repeats, so drift hits both alike): start
the workers, warm them (a run with max_new_tokens=1 that each worker must have taken a chunk of, so every
one has loaded the model), delete the responses, then time one run of the whole study (same seed every
time): created_at to finished_at of the run row. Then per run:

- duplicates: (prompt, arm, sample) keys with more than one response (the unique constraint makes it 0);
- never claimed: chunks that no worker took (attempts 0) or that did not succeed;
- idle while queued: for each worker, the time between finishing a chunk (or the run's creation) and
  claiming its next one, and after its last chunk until the last claim by anyone, i.e. time it had nothing
  to do while a chunk was still waiting in the queue; an "idle chunk" is a chunk that waited so more than
  --idle-threshold seconds. The tail (a worker done while the other finishes the last chunk) is not idle
  time: nothing was queued. Reported separately;
- texts identical to the first run's (same prompts, seeds and chunks: who runs a chunk must not matter).

Prints a Markdown table for bench/RESULTS.md (median and range over repeats) and, with --json, the raw rows.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ["DJANGO_SETTINGS_MODULE"] = "evalapp.settings.base"
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/scaleout_bench")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/8")
os.environ.setdefault("DEBUG", "false")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-prompts", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--chunk-batches", type=int, default=1, help="GENERATION_CHUNK_BATCHES for the runs")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--idle-threshold", type=float, default=1.0)
    ap.add_argument("--json", type=Path)
    return ap.parse_args(argv)


ARGS = parse_args()
os.environ["GENERATION_CHUNK_BATCHES"] = str(ARGS.chunk_batches)  # read by the settings: this process splits

import django  # noqa: E402

django.setup()

import redis  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.db import connection  # noqa: E402
from django.db.models import Count  # noqa: E402

from bench.generation import load_questions  # noqa: E402
from bench.testdb import throwaway_database  # noqa: E402
from evalapp import services as study_services  # noqa: E402
from evalapp.models import Prompt, Response  # noqa: E402
from modelserver.corpus import COUNSELCHAT_QUESTIONS  # noqa: E402
from modelserver.models import GenerationRun, WorkerHeartbeat  # noqa: E402
from modelserver.services import generation_run_create  # noqa: E402


def make_adapter(out: Path) -> Path:
    """A random LoRA on the bundled model, seeded: it changes the texts, which is all the bench needs."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from modelserver.inference.loading import resolve_base

    base = AutoModelForCausalLM.from_pretrained(resolve_base("bundled"), local_files_only=True)
    model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], lora_dropout=0))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.02)
    model.save_pretrained(out)
    return out


class Workers:
    def __init__(self, n: int, logs: Path):
        db = connection.settings_dict
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "evalapp.settings.base",
            "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "HF_HUB_OFFLINE": "1",
        }
        self.names = [f"bench{i}-{uuid.uuid4().hex[:6]}" for i in range(n)]
        self.logs = logs
        self.processes = []

    def __enter__(self):
        for name in self.names:
            log = (self.logs / f"{name}.log").open("wb")
            self.processes.append(subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "evalapp", "worker", "-Q", "gpu", "--pool", "solo", "-c", "1",
                 "-n", f"{name}@%h", "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "warning"],
                cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 120
        while WorkerHeartbeat.objects.filter(hostname__regex=rf"^({'|'.join(self.names)})@").count() < len(self.names):
            if time.monotonic() > deadline or any(p.poll() is not None for p in self.processes):
                raise SystemExit(f"workers did not start; see {self.logs}")
            time.sleep(0.2)
        return self

    def __exit__(self, *exc):
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_finished(run_id: int, timeout: float = 1800) -> GenerationRun:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = GenerationRun.objects.get(id=run_id)
        if run.status in ("succeeded", "failed"):
            return run
        time.sleep(0.2)
    raise SystemExit(f"run {run_id} did not finish in {timeout} s")


def idle(run: GenerationRun, chunks: list[dict], threshold: float) -> dict:
    """Per worker, the time it had nothing to do while a chunk was still queued (see the module docstring)."""
    start = run.created_at.timestamp()
    last_claim = max(c["started_at"] for c in chunks)
    by_worker: dict[str, list[dict]] = {}
    for chunk in sorted(chunks, key=lambda c: c["started_at"]):
        by_worker.setdefault(chunk["worker"], []).append(chunk)
    gaps, tail = [], 0.0
    for own in by_worker.values():
        free = start
        for chunk in own:
            gaps.append(chunk["started_at"] - free)
            free = chunk["finished_at"]
        gaps.append(max(0.0, last_claim - free))
        tail = max(tail, run.finished_at.timestamp() - free)
    return {"idle_s": sum(gaps), "idle_chunks": sum(g > threshold for g in gaps), "max_gap_s": max(gaps),
            "tail_s": tail}


def one_run(study, owner, n_workers: int, logs: Path, reference: dict | None) -> tuple[dict, dict]:
    with Workers(n_workers, logs) as workers:
        warm = generation_run_create(study=study, user=owner, seed=ARGS.seed, batch_size=ARGS.batch_size,
                                     generation_params={"max_new_tokens": 1})
        warm = wait_finished(warm.id)
        warmed = set(warm.chunks.values_list("worker", flat=True))
        if warm.status != "succeeded" or len(warmed) != n_workers:
            raise SystemExit(f"warm-up: {warm.status} {warm.error!r}, taken by {sorted(warmed)}")
        Response.objects.filter(prompt__study=study).delete()
        run = generation_run_create(study=study, user=owner, seed=ARGS.seed, batch_size=ARGS.batch_size)
        run = wait_finished(run.id)
        if run.status != "succeeded":
            raise SystemExit(f"run {run.id} failed: {run.error}; see {logs}")
    chunks = [{"worker": c["worker"].split("@")[0], "attempts": c["attempts"], "status": c["status"], "size": c["size"],
               "started_at": c["started_at"].timestamp(), "finished_at": c["finished_at"].timestamp()}
              for c in run.chunks.values("worker", "attempts", "status", "size", "started_at", "finished_at")]
    responses = Response.objects.filter(prompt__study=study)
    texts = {f"{p}/{a}/{s}": t for p, a, s, t in
             responses.values_list("prompt__external_id", "arm__label", "sample_index", "text")}
    duplicates = responses.values("prompt", "arm", "sample_index").annotate(n=Count("id")).filter(n__gt=1).count()
    row = {
        "workers": n_workers,
        "wall_s": (run.finished_at - run.created_at).total_seconds(),
        "responses": responses.count(),
        "tokens": sum(r.provenance["output_tokens"] for r in responses.only("provenance")),
        "chunks": len(chunks),
        "chunks_per_worker": sorted(Counter(c["worker"] for c in chunks).values(), reverse=True),
        "never_claimed": sum(c["attempts"] == 0 or c["status"] != "succeeded" for c in chunks),
        "retried": sum(c["attempts"] > 1 for c in chunks),
        "duplicates": duplicates,
        "identical_texts": None if reference is None else sum(texts.get(k) == v for k, v in reference.items()),
        **idle(run, chunks, ARGS.idle_threshold),
    }
    Response.objects.filter(prompt__study=study).delete()
    return row, texts


def fmt(values, digits=1):
    return f"{statistics.median(values):.{digits}f} [{min(values):.{digits}f}-{max(values):.{digits}f}]"


def main() -> int:
    t0 = time.perf_counter()
    broker = redis.Redis.from_url(os.environ["REDIS_URL"])
    broker.flushdb()  # this bench's own Redis database only
    work = Path(tempfile.mkdtemp(prefix="empatheval-scaleout-"))
    load = os.getloadavg()
    with throwaway_database():
        adapter = make_adapter(work / "lora")
        owner = get_user_model().objects.create_user("bench-owner", password="x")
        study = study_services.study_create(owner=owner, title="scale-out bench")
        for q in load_questions(COUNSELCHAT_QUESTIONS, ARGS.n_prompts):
            Prompt.objects.create(study=study, external_id=q["question_id"],
                                  messages=[{"role": "user", "content": q["text"]}])
        params = {"max_new_tokens": ARGS.max_new_tokens, "temperature": 0.7, "top_p": 0.9, "repetition_penalty": 1.1,
                  "do_sample": True}
        study_services.arm_create(study=study, label="fine-tuned", adapter=str(adapter), generation_params=params)
        study_services.arm_create(study=study, label="baseline", generation_params=params)
        rows, reference = [], None
        for rep in range(ARGS.repeats):
            for n in (1, 2) if rep % 2 == 0 else (2, 1):
                row, texts = one_run(study, owner, n, work, reference)
                if reference is None:
                    reference, row["identical_texts"] = texts, len(texts)
                row["repeat"] = rep + 1
                rows.append(row)
                print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    total = time.perf_counter() - t0

    one = [r for r in rows if r["workers"] == 1]
    two = [r for r in rows if r["workers"] == 2]
    ratios = [a["wall_s"] / b["wall_s"] for a, b in zip(one, two)]
    print(f"\n{ARGS.n_prompts} prompts x 2 arms = {one[0]['responses']} responses, max_new_tokens "
          f"{ARGS.max_new_tokens}, batch {ARGS.batch_size}, {one[0]['chunks']} chunks of "
          f"{ARGS.batch_size * ARGS.chunk_batches}; cpus {os.cpu_count()}, load average at start "
          f"{load[0]:.1f} / end {os.getloadavg()[0]:.1f}\n")
    print("| workers | wall s, median [range] | tok/s | chunks per worker | duplicates | never claimed | "
          "idle s while chunks queued | idle chunks (> %.0f s) | tail s | texts identical to the first run |"
          % ARGS.idle_threshold)
    print("|---|---|---|---|---|---|---|---|---|---|")
    def each(rs, key, form="{}"):
        return ", ".join(form.format(r[key]) for r in rs)

    for n, rs in ((1, one), (2, two)):
        print(f"| {n} | {fmt([r['wall_s'] for r in rs])} | {fmt([r['tokens'] / r['wall_s'] for r in rs])} | "
              f"{', '.join('/'.join(map(str, r['chunks_per_worker'])) for r in rs)} | {each(rs, 'duplicates')} | "
              f"{each(rs, 'never_claimed')} | {each(rs, 'idle_s', '{:.2f}')} | {each(rs, 'idle_chunks')} | "
              f"{each(rs, 'tail_s', '{:.1f}')} | "
              f"{', '.join(str(r['identical_texts']) + '/' + str(r['responses']) for r in rs)} |")
    print(f"\none / two workers, per repeat: {', '.join(f'{x:.2f}' for x in ratios)}; median "
          f"{statistics.median(ratios):.2f}x\ntotal wall time {total:.0f}s")
    if ARGS.json:
        ARGS.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(ARGS).items()}, "rows": rows,
                                         "ratios": ratios, "total_seconds": total}, indent=1))
    broker.flushdb()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
