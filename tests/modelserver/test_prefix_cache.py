"""The system turn's KV cache computed once and reused (tiny random models, the bundled tokenizer).

Where a prompt is split depends only on that prompt; a batch's rows equal the batch-of-one rows bit for
bit with the split prefill; sliding-window layers with a prefix longer than the window; greedy still
equals HF generate; regenerate repeats the recorded prefill (none recorded: one-shot); no adapter KV
reaches the baseline.
"""

from __future__ import annotations

import pytest
import torch
import transformers

from modelserver.inference import (
    DEFAULT_SYSTEM_PROMPT,
    GenerationParams,
    GenerationRequest,
    ProvenanceMismatch,
    generate,
    load_model,
    regenerate,
)
from modelserver.inference.adapters import use_adapter
from modelserver.inference.decoding import decode_batch
from modelserver.inference.kvcache import PrefixCaches, prefill_rows
from modelserver.inference.prompts import (
    MIN_PREFIX_TOKENS,
    encode_prompt,
    stop_token_ids,
    system_prefix_length,
    system_turn_ids,
)

from .conftest import save_lora_adapter
from .test_inference_generation import TEXTS as GENERATION_TEXTS
from .test_model_families import FAMILIES, build_family_model

TEXTS = GENERATION_TEXTS[:6]  # the generation tests' questions, short and long
CONVERSATION = [
    {"role": "user", "content": "I feel sad"},
    {"role": "assistant", "content": "I am sorry to hear that."},
    {"role": "user", "content": "Thanks"},
]


def _requests(texts=TEXTS):
    return [GenerationRequest(f"q{i}", [{"role": "user", "content": t}], seed=500 + i) for i, t in enumerate(texts)]


def _prefix(tok, messages, system_prompt=DEFAULT_SYSTEM_PROMPT):
    _, ids = encode_prompt(tok, messages, system_prompt)
    return ids, system_prefix_length(ids, system_turn_ids(tok, system_prompt))


def _same(outs_a, outs_b):
    return [(o.text, o.output_tokens, o.finish_reason) for o in outs_a] == [
        (o.text, o.output_tokens, o.finish_reason) for o in outs_b
    ]


@pytest.fixture(scope="module")
def bundled_tokenizer():
    from transformers import AutoTokenizer

    from modelserver.inference import resolve_base

    return AutoTokenizer.from_pretrained(resolve_base("bundled"), local_files_only=True)


@pytest.mark.parametrize("which", ["tiny", "bundled"])
def test_the_prefix_is_the_whole_system_turn_and_a_boundary_of_the_prompt(which, tiny_tokenizer, bundled_tokenizer):
    tok = tiny_tokenizer if which == "tiny" else bundled_tokenizer
    for system_prompt in (DEFAULT_SYSTEM_PROMPT, "Be kind and brief."):
        system_ids = system_turn_ids(tok, system_prompt)
        system_text = tok.apply_chat_template([{"role": "system", "content": system_prompt}], tokenize=False)
        for messages in ([{"role": "user", "content": t}] for t in TEXTS + ["\nstarts with a newline"]):
            text, ids = encode_prompt(tok, messages, system_prompt)
            n = system_prefix_length(ids, system_ids)
            # ChatML: the whole system turn, up to and including the newline after <|im_end|> ...
            assert n == len(system_ids) and ids[:n] == system_ids
            assert tok.decode(ids[:n]) == system_text and system_text.endswith("<|im_end|>\n")
            # ... a boundary that tokenizing the whole prompt has: the two halves tokenize to the prompt
            rest = tok(text[len(system_text):], add_special_tokens=False)["input_ids"]
            assert ids[:n] + rest == ids
        _, ids = encode_prompt(tok, CONVERSATION, system_prompt)
        assert system_prefix_length(ids, system_ids) == len(system_ids)


def test_the_prefix_rule_on_its_own():
    assert system_prefix_length([5, 6, 7, 8], [5, 6, 7]) == 3
    assert system_prefix_length([5, 6, 9, 8], [5, 6, 7]) == 2
    assert system_prefix_length([5, 9, 7, 8], [5, 6, 7]) == 0  # 1 < MIN_PREFIX_TOKENS: no prefix
    assert MIN_PREFIX_TOKENS == 2
    assert system_prefix_length([5, 6, 7], [5, 6, 7]) == 2  # one token is left to prefill
    assert system_prefix_length([5, 6, 7], []) == 0


def test_a_template_that_refuses_a_system_turn_alone_gives_no_prefix(tiny_tokenizer):
    import copy

    tok = copy.deepcopy(tiny_tokenizer)  # the session's tokenizer keeps its template
    tok.chat_template = (
        "{% if messages[-1]['role'] != 'user' %}{{ raise_exception('end with a user turn') }}{% endif %}"
        + tiny_tokenizer.chat_template
    )
    assert system_turn_ids(tok, DEFAULT_SYSTEM_PROMPT) == []
    assert _prefix(tok, [{"role": "user", "content": "Hello"}])[1] == 0


def test_where_a_prompt_is_split_does_not_depend_on_its_batch(tiny_loaded):
    params = GenerationParams(max_new_tokens=4)
    reqs = _requests()
    together = generate(tiny_loaded, reqs, params, adapter="lora", batch_size=4)
    for req, out in zip(reqs, together):
        [alone] = generate(tiny_loaded, [req], params, adapter="lora", batch_size=1)
        assert out.provenance["prefix_tokens"] == alone.provenance["prefix_tokens"] > 0
        assert out.provenance["prefill"] == alone.provenance["prefill"] == "system-prefix-cache"
        assert out.provenance["prefix_tokens"] == _prefix(tiny_loaded.tokenizer, req.messages)[1]


@pytest.mark.parametrize("do_sample", [False, True])
@pytest.mark.parametrize("adapter", [None, "lora"])
def test_a_batch_equals_each_request_alone_bit_for_bit(tiny_loaded, do_sample, adapter):
    params = GenerationParams(max_new_tokens=20, do_sample=do_sample, temperature=1.0)
    reqs = _requests() + [GenerationRequest("conv", CONVERSATION, seed=9)]
    alone = [generate(tiny_loaded, [r], params, adapter=adapter, batch_size=1)[0] for r in reqs]
    for batch_size in (3, 7):
        assert _same(generate(tiny_loaded, reqs, params, adapter=adapter, batch_size=batch_size), alone)


def _prompt_and_prefix(tok, text, system_prompt):
    return _prefix(tok, [{"role": "user", "content": text}], system_prompt)


def test_rows_with_different_system_prompts_share_a_batch(tiny_loaded):
    """Rows of two system prompts and a row without prefix, in one batch: each prefix prefilled once,
    each row's prefill logits and tokens equal to its batch of one."""
    tok = tiny_loaded.tokenizer
    rows = [_prompt_and_prefix(tok, t, sp) for t, sp in zip(TEXTS, [DEFAULT_SYSTEM_PROMPT, "Be brief."] * 3)]
    ids0, _ = rows[0]
    rows.append((ids0, 0))  # the same prompt prefilled in one forward
    prompts, prefix_lengths = [r[0] for r in rows], [r[1] for r in rows]
    assert len({tuple(p[:k]) for p, k in rows if k}) == 2
    seeds = [7 + i for i in range(len(rows))]
    with use_adapter(tiny_loaded, "lora"), torch.inference_mode():
        prefixes = PrefixCaches(arm="lora")
        _, _, logits = prefill_rows(tiny_loaded.model, prompts, "cpu", 4, prefix_lengths, prefixes)
        assert prefixes.computed == 2
        for i, (p, k) in enumerate(rows):
            _, _, one = prefill_rows(tiny_loaded.model, [p], "cpu", 4, [k])
            assert torch.equal(logits[i], one[0])
        # the split prefill computes the one-shot prefill's logits up to rounding
        assert torch.allclose(logits[0], logits[-1], atol=1e-4)
        for do_sample in (False, True):
            params = GenerationParams(max_new_tokens=16, do_sample=do_sample, temperature=1.0)
            run = dict(stop_ids=stop_token_ids(tiny_loaded), device="cpu")
            together = decode_batch(tiny_loaded.model, prompts, seeds, params, prefix_lengths=prefix_lengths, **run)
            alone = [decode_batch(tiny_loaded.model, [p], [s], params, prefix_lengths=[k], **run)[0]
                     for (p, k), s in zip(rows, seeds)]
            assert [r[:2] for r in together] == [r[:2] for r in alone]


def test_the_lru_keeps_a_few_prefixes(tiny_plain):
    tok = tiny_plain.tokenizer
    prefixes = PrefixCaches(arm=None, capacity=2)
    with torch.inference_mode():
        for sp in ("First.", "Second one.", "First.", "Third here.", "Second one."):
            ids, n = _prompt_and_prefix(tok, "Hello", sp)
            prefixes.row_cache(tiny_plain.model, tuple(ids[:n]), "cpu")
    assert prefixes.computed == 4  # "First." hit; "Second one." was evicted by "Third here."


@pytest.mark.parametrize("adapter", [None, "lora"])
def test_greedy_generate_with_the_prefix_cache_still_equals_hf_generate(tiny_long, adapter):
    params = GenerationParams(max_new_tokens=24, do_sample=False)
    outs = generate(tiny_long, _requests(), params, adapter=adapter, batch_size=4)
    assert all(o.provenance["prefill"] == "system-prefix-cache" for o in outs)
    for req, out in zip(_requests(), outs):
        assert _hf_greedy_text(tiny_long, req, params, adapter) == (out.text, out.output_tokens)


def _hf_greedy_text(loaded, req, params, adapter):
    ids, _ = _prefix(loaded.tokenizer, req.messages, params.system_prompt)
    with use_adapter(loaded, adapter), torch.inference_mode():
        out = loaded.model.generate(
            input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            max_new_tokens=params.max_new_tokens, repetition_penalty=params.repetition_penalty,
            eos_token_id=stop_token_ids(loaded), pad_token_id=loaded.tokenizer.pad_token_id, do_sample=False,
        )
    new = out[0, len(ids):].tolist()
    return loaded.tokenizer.decode(new, skip_special_tokens=True).strip(), len(new)


# A window of 4 (3 columns kept between steps) against a system turn of ~36 tiny-tokenizer tokens.
SMALL_WINDOW = 4
WINDOWED = {
    "mistral-window": {"sliding_window": SMALL_WINDOW},
    "gemma2": {"sliding_window": SMALL_WINDOW},
}


@pytest.fixture(scope="module", params=list(WINDOWED))
def windowed(request, tmp_path_factory, tiny_tokenizer):
    name = request.param
    assert name in FAMILIES
    base_dir = tmp_path_factory.mktemp(f"prefix-{name}")
    model = build_family_model(name, tiny_tokenizer)
    model.config.sliding_window = WINDOWED[name]["sliding_window"]
    model.save_pretrained(base_dir)
    tiny_tokenizer.save_pretrained(base_dir)
    adapter_dir = save_lora_adapter(base_dir, tmp_path_factory.mktemp(f"prefix-lora-{name}"), target_modules="all-linear")
    loaded = load_model(str(base_dir), {"lora": str(adapter_dir)}, device="cpu")
    assert loaded.model.config.sliding_window == SMALL_WINDOW
    torch.set_num_threads(1)
    return loaded


@pytest.mark.parametrize("adapter", [None, "lora"])
def test_a_sliding_window_model_with_a_prefix_longer_than_the_window(windowed, adapter):
    reqs = _requests()[:4]
    tok = windowed.tokenizer
    assert all(_prefix(tok, r.messages)[1] > 2 * SMALL_WINDOW for r in reqs)
    # the split prefill's logits are the one-shot prefill's up to rounding: the window is right
    with use_adapter(windowed, adapter), torch.inference_mode():
        for r in reqs:
            ids, n = _prefix(tok, r.messages)
            _, _, split = prefill_rows(windowed.model, [ids], "cpu", 4, [n])
            _, _, whole = prefill_rows(windowed.model, [ids], "cpu", 4, [0])
            assert torch.allclose(split, whole, atol=1e-4), (split - whole).abs().max()
    greedy = GenerationParams(max_new_tokens=10, do_sample=False)
    outs = generate(windowed, reqs, greedy, adapter=adapter, batch_size=4)
    for r, o in zip(reqs, outs):
        assert _hf_greedy_text(windowed, r, greedy, adapter) == (o.text, o.output_tokens)
    sampled = GenerationParams(max_new_tokens=10, temperature=1.0)
    alone = [generate(windowed, [r], sampled, adapter=adapter, batch_size=1)[0] for r in reqs]
    assert _same(generate(windowed, reqs, sampled, adapter=adapter, batch_size=4), alone)


def test_regenerate_an_old_provenance_uses_the_one_shot_prefill(tiny_loaded, monkeypatch):
    params = GenerationParams(max_new_tokens=20, temperature=1.0)
    reqs = _requests()[:3]
    old = generate(tiny_loaded, reqs, params, adapter="lora", batch_size=3, prefix_cache=False)
    assert {o.provenance["prefill"] for o in old} == {"full"} and {o.provenance["prefix_tokens"] for o in old} == {0}
    calls = []
    original = PrefixCaches.row_cache
    monkeypatch.setattr(PrefixCaches, "row_cache", lambda self, *a: calls.append(a) or original(self, *a))
    for req, out in zip(reqs, old):
        record = {k: v for k, v in out.provenance.items() if k not in ("prefill", "prefix_tokens")}
        again = regenerate(tiny_loaded, record, req.messages)
        assert (again.text, again.output_tokens) == (out.text, out.output_tokens)
        assert again.provenance["prefill"] == "full"
    assert calls == []
    new = generate(tiny_loaded, reqs[:1], params, adapter="lora")[0]
    calls.clear()
    again = regenerate(tiny_loaded, new.provenance, reqs[0].messages)
    assert again.text == new.text and again.provenance["prefill"] == "system-prefix-cache" and len(calls) == 1


def test_regenerate_refuses_a_prefill_it_cannot_repeat(tiny_loaded):
    req = _requests()[0]
    out = generate(tiny_loaded, [req], GenerationParams(max_new_tokens=3), adapter="lora")[0]
    with pytest.raises(ProvenanceMismatch, match="unknown prefill mode 'chunked'"):
        regenerate(tiny_loaded, {**out.provenance, "prefill": "chunked"}, req.messages)
    with pytest.raises(ProvenanceMismatch, match="system prefix is 36 tokens, the response was made with 5"):
        regenerate(tiny_loaded, {**out.provenance, "prefix_tokens": 5}, req.messages)


def test_no_adapter_kv_reaches_the_baseline(tiny_loaded, tiny_plain):
    """Adapter, then baseline on the same peft model: the baseline equals a fresh plain base's."""
    params = GenerationParams(max_new_tokens=20, do_sample=False)
    reqs = _requests()
    tuned = generate(tiny_loaded, reqs, params, adapter="lora", batch_size=3)
    after = generate(tiny_loaded, reqs, params, adapter=None, batch_size=3)
    fresh = generate(tiny_plain, reqs, params, adapter=None, batch_size=3)
    assert _same(after, fresh)
    assert sum(a.text != b.text for a, b in zip(tuned, fresh)) >= len(reqs) // 2  # the adapter's KV is other KV
    again = generate(tiny_loaded, reqs, params, adapter="lora", batch_size=3)
    assert _same(again, tuned)


def test_bad_prefix_lengths_are_refused(tiny_plain):
    with torch.inference_mode(), pytest.raises(ValueError, match="shorter than its prompt"):
        prefill_rows(tiny_plain.model, [[5, 6, 7]], "cpu", 2, [3])
    with torch.inference_mode(), pytest.raises(ValueError, match="shorter than its prompt"):
        prefill_rows(tiny_plain.model, [[5, 6, 7], [5, 6]], "cpu", 2, [1])


def test_transformers_version_builds_sliding_caches(windowed):
    # guards the window test above: its layers really are sliding ones
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicSlidingWindowLayer

    layers = DynamicCache(config=windowed.model.config).layers
    assert any(isinstance(layer, DynamicSlidingWindowLayer) for layer in layers), transformers.__version__
