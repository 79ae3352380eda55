"""LoRA training core: data cleaning / splitting, label masking, batching, training, resume, CLI.

Long because the steps share the session's tiny models (conftest) and this file's data helpers; the
sections follow the training package's modules in order.

Tiny random Llama models (conftest) except one test that trains the real bundled model for 2 steps.
No Django, no database.
"""

from __future__ import annotations

import csv
import json
import random

import pytest

from modelserver.corpus import COUNSELCHAT_QUESTIONS
from modelserver.training import (
    Example,
    TrainingConfig,
    TrainingResult,
    clean_examples,
    load_source,
    prepare_data,
    read_id_file,
    split_by_question,
    train_adapter,
)
from modelserver.training.collate import LengthGroupedSampler, PackedCollator, SFTCollator, pack_features
from modelserver.training.tokens import IGNORE_INDEX, tokenize_conversation, tokenize_examples

SYSTEM = "You are a supportive assistant. Respond to the user's message."
ANSWER = "It sounds like you are going through a difficult time."


def _chat_file(path, n=40):
    rows = [
        {
            "id": f"q{i}",
            "messages": [
                {"role": "user", "content": f"I have been feeling anxious and I can't sleep at night {i}."},
                {"role": "assistant", "content": ANSWER if i % 2 else "Talking to a counselor can help."},
            ],
        }
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _tiny_config(tiny_model_dir, **kw):
    defaults = dict(
        base=str(tiny_model_dir), max_steps=8, batch_size=4, learning_rate=5e-3, dropout=0.0,
        eval_every=4, save_every=4, eval_max_examples=8, perplexity_max_examples=8, val_fraction=0.2,
        threads=1,  # a 32-wide model gains nothing from threads, and they stall on a busy machine
    )
    defaults.update(kw)
    return TrainingConfig(**defaults)


# --------------------------------------------------------------------------- data


def test_cleaning_counts_after_each_step(tmp_path):
    path = tmp_path / "cc.csv"
    fields = ["questionID", "questionTitle", "questionText", "questionLink", "topic", "answerText", "split"]
    rows = [
        (1, "T1", "How do I sleep?", "https://x/q/how-sleep", "sleep", "Try a <b>routine</b> &amp; rest.", "train"),
        # a duplicate once the HTML is stripped
        (1, "T1", "How do I sleep?", "https://x/q/how-sleep", "sleep", "Try a routine & rest.", "train"),
        # empty questionText: the title is used
        (2, "T2", "", "https://x/q/title-only", "misc", "Answer   with\u00a0spaces\n\n\n\nand gaps", "train"),
        (3, "T3", "Empty answer?", "https://x/q/empty", "misc", "   ", "val"),  # dropped: empty
        (4, "T4", "Only tags?", "https://x/q/tags", "misc", "<p> </p>", "test"),  # empty after cleaning
        (5, "T5", "Fine question", "https://x/q/fine", "misc", "Fine answer.", "test"),
        (5, "T5", "Fine question", "https://x/q/fine", "misc", "Fine answer.", "test"),  # exact duplicate
    ]
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(fields)
        w.writerows(rows)
    raw = load_source(path)
    cleaned, steps = clean_examples(raw.examples)
    assert [(s.step, s.rows) for s in steps] == [
        ("loaded", 7), ("drop_empty", 6), ("strip_html", 6), ("normalise_whitespace", 6),
        ("drop_empty_after_cleaning", 5), ("drop_duplicates", 3),
    ]
    by_step = {s.step: s for s in steps}
    assert by_step["strip_html"].changed == 2 and by_step["normalise_whitespace"].changed == 2  # " " -> ""
    answers = [e.messages[1]["content"] for e in cleaned]
    assert answers == ["Try a routine & rest.", "Answer with spaces\n\nand gaps", "Fine answer."]
    assert cleaned[1].messages[0]["content"] == "T2"  # questionText empty -> questionTitle
    assert [e.question_id for e in cleaned] == ["how-sleep", "title-only", "fine"]  # no questions file: link slug


def test_counselchat_bundled_manifest_uses_question_slugs():
    questions = [json.loads(line) for line in COUNSELCHAT_QUESTIONS.read_text().splitlines() if line.strip()]
    splits = {q["question_id"]: set(q["splits"]) for q in questions}
    study = ["can-i-change-my-feeling-of-being-worthless-to-everyone", "not-a-question"]
    data = prepare_data("counselchat", exclude_question_ids=study)
    m = data.manifest
    assert [s["rows"] for s in m.cleaning][0] == 2129
    assert m.cleaning[-1]["step"] == "drop_duplicates" and m.cleaning[-1]["dropped"] > 0
    assert {s["format"] for s in m.sources} == {"counselchat-csv", "counselchat-questions"}
    assert all(len(s["sha256"]) == 64 for s in m.sources)
    ids = m.question_ids
    assert set(ids["train"]) | set(ids["val"]) | set(ids["test"]) | set(ids["excluded"]) <= set(splits)
    assert ids["excluded"] == [study[0]]
    # train only if all of the question's answers are train; mixed questions are held out
    assert all(splits[q] == {"train"} for q in ids["train"])
    assert all("test" in splits[q] for q in ids["test"])
    assert all("val" in splits[q] and "test" not in splits[q] for q in ids["val"])
    mixed = [q for q, s in splits.items() if len(s) > 1]
    assert mixed and not set(mixed) & set(ids["train"])
    assert m.overlap(study) == [] and m.overlap(ids["train"][:2]) == ids["train"][:2]
    # CSV questionID 1 covers two different questions; rows follow their link, not the first slug
    for e in data.train + data.val:
        assert e.question_id in splits
    json.dumps(m.to_dict())


def _random_examples(rng, n_questions=60):
    out = []
    for q in range(n_questions):
        for a in range(rng.randint(1, 4)):
            out.append(Example(f"e{q}-{a}", f"q{q}", (
                {"role": "user", "content": f"question {q}"}, {"role": "assistant", "content": f"answer {a}"}),
                "chat", (f"q{q}",)))
    return out


@pytest.mark.parametrize("seed", range(5))
def test_split_by_question_is_disjoint_and_respects_exclusions(seed):
    rng = random.Random(seed)
    examples = _random_examples(rng)
    excluded = {f"q{i}" for i in rng.sample(range(60), 10)}
    test_ids = {f"q{i}" for i in rng.sample(range(60), 10)}
    declared = {f"q{i}": frozenset(rng.choice([{"train"}, {"train", "test"}, {"val"}, {"train", "val"}]))
                for i in rng.sample(range(60), 20)}
    split = split_by_question(examples, 0.25, test_question_ids=test_ids, exclude_question_ids=excluded,
                              question_splits=declared, seed=seed)
    sets = {name: {e.question_id for e in getattr(split, name)} for name in ("train", "val", "test", "excluded")}
    names = list(sets)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not sets[a] & sets[b], (a, b)
    assert sum(len(getattr(split, n)) for n in names) == len(examples)
    assert sets["excluded"] == excluded
    assert not (sets["train"] | sets["val"]) & (excluded | test_ids)
    assert (test_ids - excluded) <= sets["test"]
    for q, s in declared.items():
        if q in sets["train"]:
            assert s == {"train"}
    # same seed, same split
    again = split_by_question(examples, 0.25, test_question_ids=test_ids, exclude_question_ids=excluded,
                              question_splits=declared, seed=seed)
    assert [e.id for e in again.val] == [e.id for e in split.val]


def test_transcripts_and_chat_jsonl(tmp_path):
    txt = tmp_path / "t.txt"
    txt.write_text("<USER> Hi there <AI> Hello, how can I help? <USER> I can't sleep. <AI> That sounds hard.\n---\n"
                   "<USER> only a question\n---\n<USER>Second<AI>Reply<USER>unanswered\n")
    raw = load_source(txt)
    assert [e.question_id for e in raw.examples] == ["t1", "t3"]
    assert raw.examples[0].prompt_ids == ("t1-u1", "t1-u2")
    assert [m["role"] for m in raw.examples[1].messages] == ["user", "assistant"]  # trailing user turn dropped
    assert raw.problems and "transcript 2" in raw.problems[0]

    jl = tmp_path / "c.jsonl"
    jl.write_text("\n".join([
        json.dumps({"id": "a", "messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}),
        json.dumps({"messages": [{"role": "user", "content": "no id"}, {"role": "assistant", "content": "z"}],
                    "split": "test"}),
        json.dumps({"id": "tr", "transcript": "<USER> a <AI> b <USER> c <AI> d"}),
        json.dumps({"id": "bad", "messages": [{"role": "system", "content": "s"}]}),
    ]))
    raw = load_source(jl)
    assert [e.question_id for e in raw.examples][0] == "a"
    assert raw.examples[1].question_id.startswith("chat-")
    assert raw.examples[2].prompt_ids == ("tr-u1", "tr-u2") and raw.examples[2].source == "transcript"
    assert raw.question_splits[raw.examples[1].question_id] == {"test"}
    assert len(raw.problems) == 1 and "line 4" in raw.problems[0]


def test_read_id_file(tmp_path):
    (tmp_path / "a.txt").write_text("# study prompts\nq1\n\nq2\n")
    (tmp_path / "b.jsonl").write_text('{"external_id": "q3"}\n{"question_id": "q4"}\n{"id": 5}\n')
    (tmp_path / "c.json").write_text('["q6", {"id": "q7"}]')
    assert read_id_file(tmp_path / "a.txt") == ["q1", "q2"]
    assert read_id_file(tmp_path / "b.jsonl") == ["q3", "q4", "5"]
    assert read_id_file(tmp_path / "c.json") == ["q6", "q7"]


# --------------------------------------------------------------------------- tokenisation and batching


def _unmasked(feat):
    return [t for t in feat["labels"] if t != IGNORE_INDEX]


def test_masking_counts_exactly_the_assistant_tokens(tiny_tokenizer):
    tok = tiny_tokenizer
    messages = [{"role": "user", "content": "I feel sad every day."}, {"role": "assistant", "content": ANSWER}]
    feat = tokenize_conversation(tok, messages, system_prompt=SYSTEM, max_length=512)
    expected = tok(ANSWER, add_special_tokens=False)["input_ids"] + [tok.convert_tokens_to_ids("<|im_end|>")]
    assert _unmasked(feat) == expected
    assert tok.decode(_unmasked(feat)) == ANSWER + "<|im_end|>"
    # labelled tokens are contiguous and equal the input ids there; the rendered prompt has the system message
    idx = [i for i, t in enumerate(feat["labels"]) if t != IGNORE_INDEX]
    assert idx == list(range(idx[0], idx[-1] + 1))
    assert all(feat["input_ids"][i] == feat["labels"][i] for i in idx)
    assert tok.decode(feat["input_ids"]).startswith(f"<|im_start|>system\n{SYSTEM}<|im_end|>")
    assert feat["input_ids"][idx[-1] + 1:] == tok("\n", add_special_tokens=False)["input_ids"]  # newline not trained

    multi = [
        {"role": "user", "content": "Hello, how are you today?"},
        {"role": "assistant", "content": "Thanks for sharing."},
        {"role": "user", "content": "I can't sleep at night."},
        {"role": "assistant", "content": ANSWER},
    ]
    eot = "<|im_end|>"
    all_turns = tokenize_conversation(tok, multi, system_prompt=SYSTEM, max_length=512, train_on="all")
    last = tokenize_conversation(tok, multi, system_prompt=SYSTEM, max_length=512, train_on="last")
    assert tok.decode(_unmasked(all_turns)) == "Thanks for sharing." + eot + ANSWER + eot
    assert tok.decode(_unmasked(last)) == ANSWER + eot
    assert all_turns["input_ids"] == last["input_ids"]


def test_truncation_and_dropping(tiny_tokenizer):
    messages = [{"role": "user", "content": "I feel sad every day. " * 5}, {"role": "assistant", "content": ANSWER}]
    full = tokenize_conversation(tiny_tokenizer, messages, system_prompt=SYSTEM, max_length=10_000)
    n = len(full["input_ids"])
    cut = tokenize_conversation(tiny_tokenizer, messages, system_prompt=SYSTEM, max_length=n - 3)
    assert cut["input_ids"] == full["input_ids"][: n - 3] and cut["labels"] == full["labels"][: n - 3]
    first_label = next(i for i, t in enumerate(full["labels"]) if t != IGNORE_INDEX)
    assert tokenize_conversation(tiny_tokenizer, messages, system_prompt=SYSTEM, max_length=first_label) is None
    ex = Example("e", "q", tuple(messages), "chat")
    feats, stats = tokenize_examples(tiny_tokenizer, [ex, ex], system_prompt=SYSTEM, max_length=n - 3)
    assert stats.kept == 2 and stats.truncated == 2 and all(len(f["input_ids"]) == n - 3 for f in feats)


def _features(tok, n=6):
    msgs = [
        [{"role": "user", "content": "Hi" * (i + 1)}, {"role": "assistant", "content": ANSWER[: 10 + 7 * i]}]
        for i in range(n)
    ]
    return [tokenize_conversation(tok, m, system_prompt=SYSTEM, max_length=512) for m in msgs]


def test_length_grouped_sampler():
    rng = random.Random(0)
    lengths = [rng.randint(10, 256) for _ in range(30)]
    sampler = LengthGroupedSampler(lengths, batch_size=4, seed=1)
    first = list(sampler)
    assert sorted(first) == list(range(30)) and len(sampler) == 30
    assert list(sampler) == first  # same epoch, same order (what a resumed run relies on)
    sampler.set_epoch(1)
    assert list(sampler) != first and sorted(sampler) == list(range(30))

    def padding(order):
        batches = [order[k:k + 4] for k in range(0, len(order), 4)]
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)

    shuffled = list(range(30))
    random.Random(2).shuffle(shuffled)
    assert padding(first) < padding(shuffled) / 3
    assert [len(b) for b in sampler.batches()] == [4] * 7 + [2]  # the short batch is last


def test_collator_left_and_right_padding_agree(tiny_tokenizer, tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    feats = _features(tiny_tokenizer, 3)
    pad = tiny_tokenizer.pad_token_id
    right = SFTCollator(pad, "right")(feats)
    left = SFTCollator(pad, "left")(feats)
    lengths = [len(f["input_ids"]) for f in feats]
    assert right["attention_mask"].sum(-1).tolist() == lengths and int(right["num_tokens"]) == sum(lengths)
    assert (right["labels"][right["attention_mask"] == 0] == IGNORE_INDEX).all()
    assert (left["labels"][left["attention_mask"] == 0] == IGNORE_INDEX).all()
    with torch.no_grad():
        out_r = model(**{k: v for k, v in right.items() if k not in ("labels", "num_tokens")}).logits
        out_l = model(**{k: v for k, v in left.items() if k not in ("labels", "num_tokens")}).logits
    for i, n in enumerate(lengths):
        w = right["input_ids"].shape[1]
        torch.testing.assert_close(out_r[i, :n], out_l[i, w - n:], rtol=1e-4, atol=1e-4)


def test_packed_rows_equal_separate_examples(tiny_tokenizer, tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    feats = _features(tiny_tokenizer, 6)
    longest = max(len(f["input_ids"]) for f in feats)
    rows = pack_features(feats, max_length=2 * longest + 5, seed=0)
    assert len(rows) < len(feats) and sum(r["n_examples"] for r in rows) == len(feats)
    batch = PackedCollator(tiny_tokenizer.pad_token_id)(rows)
    assert "attention_mask" not in batch and int(batch["num_tokens"]) == sum(len(f["input_ids"]) for f in feats)

    def summed_loss(logits, labels):
        return torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
            ignore_index=IGNORE_INDEX, reduction="sum",
        )

    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
        packed = summed_loss(logits, batch["labels"])
        separate = sum(
            summed_loss(model(input_ids=torch.tensor([f["input_ids"]]), use_cache=False).logits,
                        torch.tensor([f["labels"]]))
            for f in feats
        )
    torch.testing.assert_close(packed, separate, rtol=1e-4, atol=1e-3)


# --------------------------------------------------------------------------- training


def test_tiny_model_trains_loss_falls_and_adapter_reloads(tmp_path, tiny_model_dir):
    from modelserver.inference import GenerationParams, GenerationRequest, generate, load_model, sha256_of_adapter
    from modelserver.training import plot_loss

    data = _chat_file(tmp_path / "chat.jsonl")
    seen = []
    result = train_adapter(_tiny_config(tiny_model_dir), str(data), tmp_path / "out", progress=seen.append)
    losses = [loss for _, loss in result.train_losses]
    assert len(losses) == 8 and losses[-1] < losses[0] - 0.5
    vals = [c["val_loss"] for c in result.loss_curve]
    assert [c["step"] for c in result.loss_curve] == [0, 4, 8] and vals[-1] < vals[0]
    assert result.perplexity["adapter"] < result.perplexity["base"]
    assert result.best_step == 8 and result.global_step == 8 and not result.stopped_early
    assert result.adapter_sha256 == sha256_of_adapter(tmp_path / "out")
    assert result.config["rank"] == 8 and result.versions["peft"] and result.device == "cpu"
    assert result.manifest["examples"]["train"] == 32 and result.manifest["examples"]["val"] == 8
    assert result.tokens_per_s > 0 and all(s["tokens"] > 0 for s in result.steps)
    train_progress = [p for p in seen if p.phase == "train"]
    assert [p.step for p in train_progress] == list(range(1, 9)) and train_progress[-1].eta_s == 0
    assert {"eval", "perplexity", "done"} <= {p.phase for p in seen}
    saved = TrainingResult.load(tmp_path / "out" / "training_result.json")
    assert saved.to_dict() == json.loads(json.dumps(result.to_dict()))

    loaded = load_model(str(tiny_model_dir), {"x": str(tmp_path / "out")}, device="cpu")
    assert loaded.adapter_sha256["x"] == result.adapter_sha256
    req = [GenerationRequest("a", [{"role": "user", "content": "I can't sleep at night."}], 1)]
    params = GenerationParams(max_new_tokens=8, do_sample=False)
    tuned = generate(loaded, req, params, adapter="x")[0]
    base = generate(loaded, req, params, adapter=None)[0]
    assert tuned.output_tokens > 0 and tuned.text != base.text

    png = plot_loss(result, tmp_path / "loss.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


class _Interrupt(Exception):
    pass


def test_resume_after_interruption_continues_from_checkpoint(tmp_path, tiny_model_dir):
    import torch
    from safetensors.torch import load_file

    data = _chat_file(tmp_path / "chat.jsonl")
    # 32 training examples = 8 steps an epoch: the interruption falls in the second epoch.
    cfg = dict(eval_every=0, save_every=3, max_steps=12)

    full = train_adapter(_tiny_config(tiny_model_dir, **cfg), str(data), tmp_path / "full")

    def stop_at_11(p):
        if p.phase == "train" and p.step == 11:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        train_adapter(_tiny_config(tiny_model_dir, **cfg), str(data), tmp_path / "run", progress=stop_at_11)
    assert not (tmp_path / "run" / "training_result.json").exists()
    with pytest.raises(ValueError, match="resume"):
        train_adapter(_tiny_config(tiny_model_dir, **cfg), str(data), tmp_path / "run")

    steps = []
    resumed = train_adapter(_tiny_config(tiny_model_dir, **cfg), str(data), tmp_path / "run",
                            progress=lambda p: steps.append(p.step) if p.phase == "train" else None, resume=True)
    assert resumed.resumed_from_step == 9 and steps == [10, 11, 12] and resumed.global_step == 12
    assert [s for s, _ in resumed.train_losses] == list(range(1, 13))  # history restored from the checkpoint
    # Same data order, RNG and optimizer state: the resumed run ends where the uninterrupted one does.
    a = load_file(tmp_path / "full" / "adapter_model.safetensors")
    b = load_file(tmp_path / "run" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(torch.tensor(full.train_losses), torch.tensor(resumed.train_losses),
                               rtol=1e-4, atol=1e-5)


def test_resume_with_more_steps_and_refuses_a_different_run(tmp_path, tiny_model_dir):
    data = _chat_file(tmp_path / "chat.jsonl")
    first = train_adapter(_tiny_config(tiny_model_dir, max_steps=4), str(data), tmp_path / "run")
    assert first.global_step == 4
    more = train_adapter(_tiny_config(tiny_model_dir, max_steps=6, eval_every=2, save_every=2), str(data),
                         tmp_path / "run", resume=True)
    assert more.resumed_from_step == 4 and more.global_step == 6 and [s["step"] for s in more.steps] == [5, 6]
    assert [c["step"] for c in more.loss_curve] == [0, 4, 6]
    with pytest.raises(ValueError, match="rank"):
        train_adapter(_tiny_config(tiny_model_dir, max_steps=8, rank=4), str(data), tmp_path / "run", resume=True)


def test_early_stopping_keeps_the_best_adapter(tmp_path, tiny_model_dir):
    data = _chat_file(tmp_path / "chat.jsonl")
    # A learning rate this large makes the validation loss climb after the first steps.
    cfg = _tiny_config(tiny_model_dir, max_steps=30, eval_every=1, save_every=1, patience=2, learning_rate=0.3,
                       warmup_ratio=0.0, lr_scheduler="constant", max_grad_norm=100.0)
    result = train_adapter(cfg, str(data), tmp_path / "out")
    assert result.stopped_early and result.global_step < 30
    vals = {c["step"]: c["val_loss"] for c in result.loss_curve if c["step"] > 0}
    assert result.best_step == min(vals, key=vals.get) and result.best_val_loss == pytest.approx(min(vals.values()))
    assert result.global_step == result.best_step + 2


def test_settings_are_validated():
    with pytest.raises(ValueError, match="multiple"):
        TrainingConfig(eval_every=10, save_every=15)
    with pytest.raises(ValueError, match="patience"):
        TrainingConfig(eval_every=0, patience=2)
    with pytest.raises(ValueError, match="batching"):
        TrainingConfig(batching="sorted")
    assert TrainingConfig.from_dict(TrainingConfig(max_steps=3).to_dict()).max_steps == 3


def test_cli_trains_and_writes_plot(tmp_path, tiny_model_dir, capsys):
    from modelserver.training.cli import run_cli

    data = _chat_file(tmp_path / "chat.jsonl")
    (tmp_path / "exclude.txt").write_text("q1\nq2\n")
    out = tmp_path / "cli"
    rc = run_cli(["--base", str(tiny_model_dir), "--data", str(data), "--out", str(out), "--max-steps", "3",
                  "--lr", "0.005", "--rank", "4", "--targets", "q_proj,v_proj", "--batch-size", "2",
                  "--eval-every", "3", "--batching", "pack", "--exclude-questions", str(tmp_path / "exclude.txt"),
                  "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    result = json.loads((out / "training_result.json").read_text())
    assert result["config"]["target_modules"] == ["q_proj", "v_proj"] and result["config"]["rank"] == 4
    assert result["manifest"]["question_ids"]["excluded"] == ["q1", "q2"]
    assert not {"q1", "q2"} & set(result["manifest"]["question_ids"]["train"])
    assert (out / "loss.png").exists() and (out / "adapter_model.safetensors").exists()
    assert "perplexity" in capsys.readouterr().out
    assert run_cli(["--base", str(tiny_model_dir), "--data", str(tmp_path / "missing.jsonl"), "--out", str(out / "x"),
                    "--no-progress"]) == 2


# --------------------------------------------------------------------------- the real bundled model


def test_bundled_tokenizer_labels_exactly_the_counselchat_answers():
    from transformers import AutoTokenizer

    from modelserver.inference import resolve_base

    tok = AutoTokenizer.from_pretrained(resolve_base("bundled"), local_files_only=True)
    examples = prepare_data("counselchat").train[:150]
    feats, stats = tokenize_examples(tok, examples, system_prompt=SYSTEM, max_length=100_000)
    assert stats.kept == len(examples)
    for e, f in zip(examples, feats):
        answer = e.messages[-1]["content"]
        assert tok.decode(_unmasked(f)) == answer + "<|im_end|>"
        assert len(_unmasked(f)) == len(tok(answer, add_special_tokens=False)["input_ids"]) + 1


def test_bundled_model_trains_two_steps(tmp_path):
    from modelserver.inference import GenerationParams, GenerationRequest, generate, load_model

    study = ["can-i-change-my-feeling-of-being-worthless-to-everyone"]
    cfg = TrainingConfig(base="bundled", max_steps=2, batch_size=1, max_length=64, eval_every=0,
                         perplexity_max_examples=2, exclude_question_ids=study, target_modules=["q_proj", "v_proj"],
                         learning_rate=1e-3)
    result = train_adapter(cfg, "counselchat", tmp_path / "bundled")
    assert result.global_step == 2 and all(0 < loss < 20 for _, loss in result.train_losses)
    assert result.manifest["question_ids"]["excluded"] == study
    assert study[0] not in result.manifest["question_ids"]["train"]
    assert result.perplexity["base"] > 1 and result.perplexity["adapter"] > 1
    loaded = load_model("bundled", {"x": str(tmp_path / "bundled")}, device="cpu")
    out = generate(loaded, [GenerationRequest("a", [{"role": "user", "content": "I feel anxious."}], 1)],
                   GenerationParams(max_new_tokens=4, do_sample=False), adapter="x")[0]
    assert out.output_tokens > 0
