"""The decoding loop against HF generate, batch invariance, adapter arms, provenance (tiny random models)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from modelserver.inference import (
    DEFAULT_SYSTEM_PROMPT,
    GenerationOutput,
    GenerationParams,
    GenerationRequest,
    ProvenanceMismatch,
    generate,
    regenerate,
)
from modelserver.inference.adapters import use_adapter
from modelserver.inference.batching import plan_batches
from modelserver.inference.decoding import _process_logits, decode_batch, nucleus, sample_rows
from modelserver.inference.prompts import encode_prompt, stop_token_ids

TEXTS = [
    "I feel sad",
    "My partner and I keep arguing about money and chores. What should I do about it?",
    "Hello",
    "I can't sleep at night and I feel anxious all the time, it is hard to focus at work.",
    "How can I stop feeling worthless?",
    "Thanks",
    "Sometimes I think nobody would notice if I disappeared for a week.",
    "anxious",
]


def _requests(texts=TEXTS):
    return [GenerationRequest(f"q{i}", [{"role": "user", "content": t}], seed=1000 + i) for i, t in enumerate(texts)]


def _prompt_ids(loaded, req, params):
    return encode_prompt(loaded.tokenizer, req.messages, params.system_prompt)[1]


def _loop_ids(loaded, reqs, params, adapter=None):
    """Token ids from our loop for a list of requests forming ONE batch."""
    with use_adapter(loaded, adapter), torch.inference_mode():
        res = decode_batch(
            loaded.model,
            [_prompt_ids(loaded, r, params) for r in reqs],
            [r.seed for r in reqs],
            params,
            stop_ids=stop_token_ids(loaded),
            device=loaded.device,
        )
    return [ids for ids, _, _ in res]


def _hf_greedy_ids(loaded, req, params, adapter=None):
    assert not params.do_sample
    ids = _prompt_ids(loaded, req, params)
    with use_adapter(loaded, adapter), torch.inference_mode():
        out = loaded.model.generate(
            input_ids=torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            max_new_tokens=params.max_new_tokens,
            repetition_penalty=params.repetition_penalty,
            eos_token_id=stop_token_ids(loaded),
            pad_token_id=loaded.tokenizer.pad_token_id,
            do_sample=False,
        )
    return out[0, len(ids):].tolist()


@pytest.mark.parametrize("adapter", [None, "lora"])
def test_greedy_loop_equals_hf_generate_batch_of_one(tiny_long, adapter):
    params = GenerationParams(max_new_tokens=24, do_sample=False)
    lengths = []
    for req in _requests()[:4]:
        [ours] = _loop_ids(tiny_long, [req], params, adapter)
        assert ours == _hf_greedy_ids(tiny_long, req, params, adapter)
        lengths.append(len(ours))
    assert max(lengths) == params.max_new_tokens


def test_greedy_loop_equals_hf_generate_without_repetition_penalty(tiny_long):
    params = GenerationParams(max_new_tokens=24, do_sample=False, repetition_penalty=1.0)
    for req in _requests()[:4]:
        assert _loop_ids(tiny_long, [req], params) == [_hf_greedy_ids(tiny_long, req, params)]


def test_logits_processing_matches_hf_processors():
    from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 300, generator=gen) * 3
    history = torch.randint(0, 300, (4, 40), generator=gen)
    seen = torch.zeros(4, 300, dtype=torch.bool)
    seen.scatter_(1, history, True)
    params = GenerationParams(temperature=0.7, repetition_penalty=1.3)
    expected = TemperatureLogitsWarper(0.7)(history, RepetitionPenaltyLogitsProcessor(1.3)(history, logits.clone()))
    assert torch.equal(_process_logits(logits, seen, params), expected)


@pytest.mark.parametrize("top_p", [0.5, 0.9, 0.99])
@pytest.mark.parametrize("spread", [0.05, 1.0, 4.0])  # flat rows (nucleus > candidates: full sort) to peaked rows
def test_nucleus_equals_hf_top_p_warper(top_p, spread):
    from transformers.generation.logits_process import TopPLogitsWarper

    gen = torch.Generator().manual_seed(int(spread * 100 + top_p * 10))
    scores = torch.randn(6, 2000, generator=gen) * spread
    probs, ids = nucleus(scores, top_p)
    hf = TopPLogitsWarper(top_p)(None, scores.clone())
    for row in range(scores.shape[0]):
        ours = set(ids[row][probs[row] > 0].tolist())
        assert ours == set(torch.nonzero(hf[row] > -float("inf")).flatten().tolist())
        kept = probs[row][probs[row] > 0]
        assert torch.all(kept[:-1] >= kept[1:])  # descending order


def test_sampling_follows_the_nucleus_distribution():
    scores = torch.log(torch.tensor([[0.5, 0.25, 0.15, 0.06, 0.04]]))
    n = 6000
    draws = torch.cat([sample_rows(scores, 0.8, [torch.Generator().manual_seed(s)]) for s in range(n)])
    counts = torch.bincount(draws, minlength=5).float() / n
    # nucleus at top_p=0.8: tokens 0, 1, 2 (0.5 + 0.25 < 0.8), renormalised over 0.9
    assert counts[3] == counts[4] == 0
    expected = torch.tensor([0.5, 0.25, 0.15]) / 0.9
    assert torch.allclose(counts[:3], expected, atol=0.02)
    full = torch.cat([sample_rows(scores, 1.0, [torch.Generator().manual_seed(s)]) for s in range(n)])
    assert torch.allclose(torch.bincount(full, minlength=5).float() / n, scores.exp()[0], atol=0.02)


def test_a_rows_draws_do_not_depend_on_other_rows():
    scores = torch.randn(5, 400, generator=torch.Generator().manual_seed(1))
    together = sample_rows(scores, 0.9, [torch.Generator().manual_seed(s) for s in range(5)])
    alone = [sample_rows(scores[i:i + 1], 0.9, [torch.Generator().manual_seed(i)]).item() for i in range(5)]
    assert together.tolist() == alone


@pytest.mark.parametrize("do_sample", [False, True])
@pytest.mark.parametrize("adapter", [None, "lora"])
def test_batch_composition_does_not_change_a_row(tiny_loaded, do_sample, adapter):
    params = GenerationParams(max_new_tokens=30 if not do_sample else 10, do_sample=do_sample)
    reqs = _requests()
    alone = [generate(tiny_loaded, [r], params, adapter=adapter, batch_size=1)[0] for r in reqs]
    together = generate(tiny_loaded, reqs, params, adapter=adapter, batch_size=8)
    reordered = generate(tiny_loaded, reqs[::-1], params, adapter=adapter, batch_size=3)[::-1]
    subset = generate(tiny_loaded, reqs[1::2], params, adapter=adapter, batch_size=16)
    for a, b, c in zip(alone, together, reordered):
        assert (a.key, a.text, a.output_tokens, a.finish_reason) == (b.key, b.text, b.output_tokens, b.finish_reason)
        assert (a.key, a.text, a.output_tokens, a.finish_reason) == (c.key, c.text, c.output_tokens, c.finish_reason)
    for a, s in zip(alone[1::2], subset):
        assert (a.text, a.output_tokens) == (s.text, s.output_tokens)
    if do_sample:  # the test exercises rows finishing early (dropped from the batch) and rows hitting the limit
        reasons = {o.finish_reason for o in together}
        assert reasons == {"stop", "length"}, reasons


def test_token_ids_are_batch_invariant(tiny_loaded):
    params = GenerationParams(max_new_tokens=30, do_sample=True, temperature=1.0, top_p=0.95)
    reqs = _requests()
    batched = _loop_ids(tiny_loaded, reqs, params, "lora")
    for r, ids in zip(reqs, batched):
        assert _loop_ids(tiny_loaded, [r], params, "lora") == [ids]


def test_seed_controls_sampling(tiny_loaded):
    params = GenerationParams(max_new_tokens=30, temperature=1.0, top_p=1.0)
    msgs = [{"role": "user", "content": "I feel sad"}]
    outs = generate(tiny_loaded, [GenerationRequest(f"k{s}", msgs, seed=s) for s in range(6)], params)
    again = generate(tiny_loaded, [GenerationRequest("x", msgs, seed=3)], params)[0]
    assert again.text == outs[3].text
    assert len({o.text for o in outs}) > 1


def test_baseline_through_peft_equals_plain_base(tiny_loaded, tiny_plain):
    reqs = _requests()
    for params in (GenerationParams(max_new_tokens=30, do_sample=False), GenerationParams(max_new_tokens=30)):
        peft_baseline = _loop_ids(tiny_loaded, reqs, params, adapter=None)
        plain = _loop_ids(tiny_plain, reqs, params, adapter=None)
        assert peft_baseline == plain
        adapter_arm = _loop_ids(tiny_loaded, reqs, params, adapter="lora")
        assert sum(a != b for a, b in zip(adapter_arm, plain)) >= len(reqs) // 2
    # and the logits themselves are bit-identical with the adapter disabled
    ids = torch.tensor([_prompt_ids(tiny_plain, reqs[1], GenerationParams())])
    with torch.inference_mode():
        with tiny_loaded.model.disable_adapter():
            a = tiny_loaded.model(input_ids=ids).logits
        b = tiny_plain.model(input_ids=ids).logits
        tiny_loaded.model.set_adapter("lora")
        c = tiny_loaded.model(input_ids=ids).logits
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_unknown_adapter_and_adapter_on_plain_model(tiny_loaded, tiny_plain):
    req = _requests()[:1]
    with pytest.raises(ValueError, match="not loaded"):
        generate(tiny_loaded, req, GenerationParams(max_new_tokens=2), adapter="nope")
    with pytest.raises(ValueError, match="not loaded"):
        generate(tiny_plain, req, GenerationParams(max_new_tokens=2), adapter="lora")


def test_outputs_keep_input_order_and_stop_tokens(tiny_loaded):
    params = GenerationParams(max_new_tokens=12)
    reqs = _requests()
    seen = []
    outs = generate(tiny_loaded, reqs, params, adapter="lora", batch_size=3, progress=lambda d, t: seen.append((d, t)))
    assert [o.key for o in outs] == [r.key for r in reqs]
    assert seen == [(i, len(reqs)) for i in range(1, len(reqs) + 1)]
    stops = stop_token_ids(tiny_loaded)
    ids = _loop_ids(tiny_loaded, reqs, params, "lora")
    for o, row in zip(outs, ids):
        assert isinstance(o, GenerationOutput)
        assert o.output_tokens == len(row) <= params.max_new_tokens
        if o.finish_reason == "stop":
            assert row[-1] in stops and not any(t in stops for t in row[:-1])
        else:
            assert o.finish_reason == "length" and len(row) == params.max_new_tokens
        assert "<|im_end|>" not in o.text
        assert o.prompt_tokens == len(_prompt_ids(tiny_loaded, reqs[outs.index(o)], params))


def test_provenance_records_everything(tiny_loaded):
    import peft
    import transformers

    params = GenerationParams(max_new_tokens=8, temperature=0.9)
    outs = generate(tiny_loaded, _requests()[:3], params, adapter="lora", batch_size=2)
    assert sorted(o.provenance["batch_rows"] for o in outs) == [1, 2, 2]  # length-sorted batches of 2 + 1
    out = outs[2]
    p = out.provenance
    assert p["seed"] == 1002 and "per-row torch.Generator" in p["seeding"]
    assert p["params"] == params.to_dict()
    assert p["base_sha256"] == tiny_loaded.base_sha256 and len(p["base_sha256"]) == 64
    assert p["adapter"] == "lora" and p["adapter_sha256"] == tiny_loaded.adapter_sha256["lora"]
    assert p["chat_template_sha256"] == tiny_loaded.chat_template_sha256
    assert p["versions"]["torch"] == torch.__version__
    assert p["versions"]["transformers"] == transformers.__version__
    assert p["versions"]["peft"] == peft.__version__
    assert (p["device"], p["dtype"], p["batch_size"]) == ("cpu", "float32", 2)
    assert p["prompt_tokens"] == out.prompt_tokens and p["output_tokens"] == out.output_tokens
    assert p["seconds"] >= 0 and p["finish_reason"] == out.finish_reason
    base = generate(tiny_loaded, _requests()[:1], params, adapter=None)[0].provenance
    assert base["arm"] == "baseline" and base["adapter"] is None and base["adapter_sha256"] is None


@pytest.mark.parametrize("adapter", [None, "lora"])
def test_regenerate_from_provenance_alone(tiny_loaded, adapter):
    params = GenerationParams(max_new_tokens=30, temperature=1.0)
    reqs = _requests()
    outs = generate(tiny_loaded, reqs, params, adapter=adapter, batch_size=8)
    for req, out in zip(reqs, outs):
        again = regenerate(tiny_loaded, out.provenance, req.messages)
        assert again.text == out.text and again.output_tokens == out.output_tokens


def test_regenerate_detects_mismatch(tiny_loaded):
    req = _requests()[0]
    out = generate(tiny_loaded, [req], GenerationParams(max_new_tokens=4), adapter="lora")[0]
    with pytest.raises(ProvenanceMismatch, match="rendered prompt differs"):
        regenerate(tiny_loaded, out.provenance, [{"role": "user", "content": "something else"}])
    with pytest.raises(ProvenanceMismatch, match="base model"):
        regenerate(tiny_loaded, {**out.provenance, "base_sha256": "0" * 64}, req.messages)
    with pytest.raises(ProvenanceMismatch, match="adapter"):
        regenerate(tiny_loaded, {**out.provenance, "adapter_sha256": "0" * 64}, req.messages)


def test_system_prompt_is_always_sent(tiny_loaded):
    text, _ = encode_prompt(tiny_loaded.tokenizer, [{"role": "user", "content": "hi"}], DEFAULT_SYSTEM_PROMPT)
    assert text.startswith("<|im_start|>system\n" + DEFAULT_SYSTEM_PROMPT + "<|im_end|>")
    assert "SmolLM" not in text and text.endswith("<|im_start|>assistant\n")
    conv = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
    ]
    text, _ = encode_prompt(tiny_loaded.tokenizer, conv, "custom")
    assert text.count("<|im_start|>") == 5 and "custom" in text


@pytest.mark.parametrize(
    "messages, match",
    [
        ([], "non-empty"),
        ([{"role": "system", "content": "x"}, {"role": "user", "content": "y"}], "system"),
        ([{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}], "end with a user"),
        ([{"role": "tool", "content": "x"}], "unsupported role"),
        ([{"role": "user"}], "content"),
        ([{"role": "user", "content": "  "}], "empty or whitespace"),
    ],
)
def test_bad_messages(tiny_loaded, messages, match):
    with pytest.raises(ValueError, match=match):
        generate(tiny_loaded, [GenerationRequest("k", messages, 0)], GenerationParams(max_new_tokens=2))


def test_params_round_trip_and_validation():
    p = GenerationParams(max_new_tokens=5, temperature=0.3, top_p=0.5, repetition_penalty=1.0, do_sample=False)
    assert GenerationParams.from_dict(p.to_dict()) == p
    assert GenerationParams.from_dict({}) == GenerationParams()
    assert GenerationParams().system_prompt == DEFAULT_SYSTEM_PROMPT
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.temperature = 1.0  # type: ignore[misc]
    with pytest.raises(ValueError, match="Unknown"):
        GenerationParams.from_dict({"top_k": 5})
    for bad in ({"max_new_tokens": 0}, {"temperature": 0}, {"top_p": 1.5}, {"repetition_penalty": 0},
                {"system_prompt": " "}):
        with pytest.raises(ValueError):
            GenerationParams(**bad)


def test_empty_request_list(tiny_loaded):
    assert generate(tiny_loaded, [], GenerationParams()) == []


def test_plan_batches_groups_by_length_and_isolates_outliers():
    lengths = [50, 10, 12, 11, 400, 13, 420, 9]
    assert plan_batches(lengths, 3, budget=10**9) == [[7, 1, 3], [2, 5, 0], [4, 6]]
    # 4 short rows + a 400-token prompt would add (400 - 50) * 6 padded cells: over budget
    assert plan_batches(lengths, 8, budget=1000) == [[7, 1, 3, 2, 5, 0], [4, 6]]
    assert plan_batches([], 4, 10) == []


def test_pack_puts_length_groups_in_one_batch_within_its_rows_and_padding():
    from modelserver.inference.grouping import pack

    lengths = [10, 12, 11, 400, 13, 420, 9]
    groups = [[6, 0, 2, 1, 4], [3, 5]]
    # 7 rows x (420 + 20) padded cells against 875 + 7 x 20 needed: within 4x, one batch
    assert pack(groups, lengths, batch_size=8, extra=20) == [groups]
    assert pack(groups, lengths, batch_size=6, extra=20) == [[groups[0]], [groups[1]]]  # too many rows
    # one 900-token prompt with six of one token: 7 x 900 padded cells against 906 needed
    assert pack([[6, 0, 2, 1, 4, 5], [3]], [1, 1, 1, 900, 1, 1, 1], batch_size=8, extra=0) == [
        [[6, 0, 2, 1, 4, 5]], [[3]]]
    assert pack([], lengths, 8, 20) == []


@pytest.mark.parametrize("do_sample", [False, True])
def test_length_groups_decoded_together_give_a_batch_of_ones_texts(tiny_loaded, monkeypatch, do_sample):
    """Groups plan_batches keeps apart (a tiny padding budget) share one batch: each group's attention
    reads its own columns (fewer than the batch's), and every row's text is its batch of one's."""
    from transformers.integrations import sdpa_attention

    from modelserver.inference import generation

    monkeypatch.setattr(generation, "padding_budget", lambda model: 3)
    params = GenerationParams(max_new_tokens=12, do_sample=do_sample)
    texts = [*TEXTS[:3], "word " * 60, TEXTS[5], "Why " * 45]
    reqs = _requests(texts)
    alone = [generate(tiny_loaded, [r], params, batch_size=1)[0] for r in reqs]
    seen = []
    real = sdpa_attention.sdpa_attention_forward

    def spy(module, query, key, value, mask, **kwargs):
        seen.append((query.shape[0], query.shape[2], key.shape[2]))  # rows, new tokens, columns read
        return real(module, query, key, value, mask, **kwargs)

    monkeypatch.setattr(sdpa_attention, "sdpa_attention_forward", spy)
    together = generate(tiny_loaded, reqs, params, batch_size=8)
    monkeypatch.undo()
    assert [(o.text, o.output_tokens) for o in together] == [(o.text, o.output_tokens) for o in alone]
    assert {o.provenance["batch_rows"] for o in together} == {6}  # one batch, not one per group
    # Decoding steps (one new token a row) ran per group, each reading its own number of columns.
    steps = [(rows, width) for rows, new, width in seen if new == 1]
    assert steps and all(rows < 6 for rows, _ in steps) and len({width for _, width in steps}) > 1
