"""The model families labs fine-tune, through our decoding loop and our training: one tiny random model
of each (fp32, CPU), with a random LoRA adapter whose B weights are non-zero.

Windowed families use a window of 8 and prompts of 3, 7, 8, 9 and 17 tokens with 12 new tokens, so
every prompt crosses the window (7 columns is what a sliding layer keeps between steps) and the long
ones move their sliding buffers back to the front while decoding.  No Django, no database.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import transformers

from modelserver.inference import GenerationParams, GenerationRequest, ModelLoadError, generate, load_model
from modelserver.inference.adapters import use_adapter
from modelserver.inference.decoding import decode_batch
from modelserver.inference.kvcache import check_supported
from modelserver.inference.prompts import encode_prompt, stop_token_ids

from .conftest import build_tiny_tokenizer, save_lora_adapter

WINDOW = 8
PROMPT_LENGTHS = (3, 7, 8, 9, 17)
NEW_TOKENS = 12
ARMS = (None, "lora")
SEEDS = [100 + i for i in range(len(PROMPT_LENGTHS))]

# family: (config class, model class, settings beyond the shared tiny ones, expected cache layer kinds)
FAMILIES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", {}, ["full", "full"]),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {}, ["full", "full"]),
    "qwen2-window": ("Qwen2Config", "Qwen2ForCausalLM",
                     {"use_sliding_window": True, "sliding_window": WINDOW, "max_window_layers": 1},
                     ["full", "sliding"]),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {}, ["full", "full"]),
    "mistral": ("MistralConfig", "MistralForCausalLM", {"sliding_window": None}, ["full", "full"]),
    "mistral-window": ("MistralConfig", "MistralForCausalLM", {"sliding_window": WINDOW}, ["sliding", "sliding"]),
    "gemma": ("GemmaConfig", "GemmaForCausalLM", {}, ["full", "full"]),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", {"sliding_window": WINDOW}, ["sliding", "full"]),
    "gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM",
               {"sliding_window": WINDOW, "num_hidden_layers": 3,
                "layer_types": ["sliding_attention", "sliding_attention", "full_attention"]},
               ["sliding", "sliding", "full"]),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", {}, ["full", "full"]),
}


def build_family_model(family: str, tokenizer, seed: int = 0):
    config_name, model_name, extra, _ = FAMILIES[family]
    settings = dict(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        # Untied, so that Gemma's scaled input embeddings do not make every tiny model repeat its last token.
        tie_word_embeddings=False, initializer_range=0.2,
    )
    config = getattr(transformers, config_name)(**{**settings, **extra})
    torch.manual_seed(seed)
    model = getattr(transformers, model_name)(config).eval()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


@pytest.fixture(scope="module", autouse=True)
def threads_restored():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny models gain nothing from threads, and on a busy machine threads wait on each other
    # (load_model sets every core: the family fixture and the training test set it back).
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request, tmp_path_factory, tokenizer):
    """(name, base directory, the base loaded with its adapter 'lora')."""
    name = request.param
    base_dir = tmp_path_factory.mktemp(f"base-{name}")
    build_family_model(name, tokenizer).save_pretrained(base_dir)
    tokenizer.save_pretrained(base_dir)
    adapter_dir = save_lora_adapter(base_dir, tmp_path_factory.mktemp(f"lora-{name}"), target_modules="all-linear")
    loaded = load_model(str(base_dir), {"lora": str(adapter_dir)}, device="cpu")
    torch.set_num_threads(1)
    return name, base_dir, loaded


def _prompts(vocab: int, seed: int = 7):
    gen = torch.Generator().manual_seed(seed)
    # ids 0-2 are the special tokens: a prompt of ordinary tokens never starts by stopping
    return [torch.randint(3, vocab, (n,), generator=gen).tolist() for n in PROMPT_LENGTHS]


def _params(do_sample: bool) -> GenerationParams:
    return GenerationParams(max_new_tokens=NEW_TOKENS, do_sample=do_sample, temperature=1.0)


def _ours(loaded, prompts, arm, params, stop_ids, seeds):
    with use_adapter(loaded, arm), torch.inference_mode():
        return decode_batch(loaded.model, prompts, seeds, params, stop_ids=stop_ids, device="cpu")


def _hf(loaded, prompt, arm, params, stop_ids):
    with use_adapter(loaded, arm), torch.inference_mode():
        out = loaded.model.generate(
            input_ids=torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
            max_new_tokens=params.max_new_tokens, repetition_penalty=params.repetition_penalty,
            eos_token_id=list(stop_ids), pad_token_id=loaded.tokenizer.pad_token_id, do_sample=False,
        )
    return out[0, len(prompt):].tolist()


@pytest.fixture(scope="module")
def alone(family):
    """Each prompt decoded on its own with no stop token, so that every row runs its 12 tokens across
    the window: {(do_sample, arm): [token ids per prompt]}.  With a stop token a row's output is this
    one cut after the stop token's first occurrence (a row's tokens and draws never depend on when it stops)."""
    _, _, loaded = family
    prompts = _prompts(len(loaded.tokenizer))
    return {
        (do_sample, arm): [_ours(loaded, [p], arm, _params(do_sample), [], [s])[0][0] for p, s in zip(prompts, SEEDS)]
        for do_sample in (False, True) for arm in ARMS
    }


def test_the_cache_has_the_layers_transformers_builds_for_the_config(family):
    name, _, loaded = family
    assert check_supported(loaded.model.config) == FAMILIES[name][3]


def test_greedy_equals_hf_generate_across_the_window_with_and_without_the_adapter(family, alone):
    _, _, loaded = family
    prompts = _prompts(len(loaded.tokenizer))
    for arm in ARMS:
        # eos_token_id=[]: HF stops on no token either
        assert alone[False, arm] == [_hf(loaded, p, arm, _params(False), []) for p in prompts]
    assert alone[False, None] != alone[False, "lora"]  # the adapter really computes something else


def _stop_token(rows, steps: slice):
    """A token the longest prompt's row generates at ``steps`` and some other row never does: with it as
    the stop token the longest row (the one that set the batch's padding) leaves while others go on."""
    others = [set(ids) for ids in rows[:-1]]
    for token in rows[-1][steps]:
        if any(token not in ids for ids in others):
            return token
    pytest.fail("no stop token splits the batch; pick another prompt seed")


def _cut(ids, stop):
    return (ids[: ids.index(stop) + 1], "stop") if stop in ids else (ids, "length")


# All prompts, the longest leaving midway; and the shortest with the longest leaving at once, so that
# trimming its padding leaves fewer columns than a sliding layer keeps.
BATCHES = {"all": (range(len(PROMPT_LENGTHS)), slice(2, -2)), "short-after-long": ((0, -1), slice(0, 2))}


@pytest.mark.parametrize("batch", list(BATCHES))
@pytest.mark.parametrize("do_sample", [False, True])
def test_a_left_padded_batch_equals_each_prompt_alone(family, alone, do_sample, batch):
    _, _, loaded = family
    rows, steps = BATCHES[batch]
    prompts = _prompts(len(loaded.tokenizer))
    for arm in ARMS:
        free = [alone[do_sample, arm][i] for i in rows]
        stop = _stop_token(free, steps)
        expected = [_cut(ids, stop) for ids in free]
        assert expected[-1][1] == "stop" and "length" in {reason for _, reason in expected}
        together = _ours(loaded, [prompts[i] for i in rows], arm, _params(do_sample), [stop], [SEEDS[i] for i in rows])
        assert [(ids, reason) for ids, reason, _ in together] == expected


def test_generate_with_the_chat_template_is_batch_invariant(family):
    _, _, loaded = family
    texts = ["I feel sad", "My partner and I keep arguing about money and chores.", "Hello", "How can I sleep?"]
    reqs = [GenerationRequest(f"q{i}", [{"role": "user", "content": t}], seed=i) for i, t in enumerate(texts)]
    params = GenerationParams(max_new_tokens=6)
    for arm in ARMS:
        alone = [generate(loaded, [r], params, adapter=arm, batch_size=1)[0] for r in reqs]
        together = generate(loaded, reqs, params, adapter=arm, batch_size=4)
        assert [(o.text, o.output_tokens) for o in together] == [(o.text, o.output_tokens) for o in alone]
        assert all(o.prompt_tokens > WINDOW for o in alone)  # the system prompt alone is longer than the window


def test_greedy_generate_with_the_system_prefix_cache_equals_hf_generate(family):
    """generate() prefills the system turn once and the rest per row; greedy still equals HF's one-shot prefill."""
    _, _, loaded = family
    tok = loaded.tokenizer
    texts = ["I feel sad", "My partner and I keep arguing about money and chores.", "How can I sleep?"]
    reqs = [GenerationRequest(f"q{i}", [{"role": "user", "content": t}], seed=i) for i, t in enumerate(texts)]
    params = GenerationParams(max_new_tokens=NEW_TOKENS, do_sample=False)
    stops = stop_token_ids(loaded)
    for arm in ARMS:
        outs = generate(loaded, reqs, params, adapter=arm, batch_size=3)
        for req, out in zip(reqs, outs):
            assert out.provenance["prefix_tokens"] > WINDOW
            hf = _hf(loaded, encode_prompt(tok, req.messages, params.system_prompt)[1], arm, params, stops)
            assert (out.text, out.output_tokens) == (tok.decode(hf, skip_special_tokens=True).strip(), len(hf))


def test_one_training_step(family, tmp_path):
    from modelserver.training import TrainingConfig, train_adapter

    _, base_dir, _ = family
    rows = [{"id": f"q{i}", "messages": [{"role": "user", "content": f"I can't sleep at night {i}."},
                                         {"role": "assistant", "content": "Talking to a counselor can help."}]}
            for i in range(6)]
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = TrainingConfig(base=str(base_dir), max_steps=1, batch_size=2, learning_rate=1e-3, eval_every=0,
                            perplexity_max_examples=0, max_length=64, threads=1)
    result = train_adapter(config, str(data), tmp_path / "out")
    assert result.global_step == 1 and all(math.isfinite(loss) for _, loss in result.train_losses)
    assert (tmp_path / "out" / "adapter_model.safetensors").exists()
    # The adapter our training wrote loads on its base and generates.
    loaded = load_model(str(base_dir), {"trained": str(tmp_path / "out")}, device="cpu")
    torch.set_num_threads(1)
    out = generate(loaded, [GenerationRequest("a", [{"role": "user", "content": "Hi"}], 1)],
                   GenerationParams(max_new_tokens=2, do_sample=False), adapter="trained")[0]
    assert out.output_tokens > 0


@pytest.mark.parametrize(
    "config_name, settings, match",
    [
        ("Qwen3NextConfig", {"num_hidden_layers": 4}, r"qwen3_next is not supported.*layer 0 is 'linear_attention'"),
        ("Llama4TextConfig", {"num_hidden_layers": 4}, r"llama4.*chunked attention"),
    ],
)
def test_an_unsupported_cache_is_refused_naming_the_architecture(config_name, settings, match):
    config = getattr(transformers, config_name)(**settings)
    with pytest.raises(ModelLoadError, match=match):
        check_supported(config)


def test_loading_refuses_an_unsupported_architecture_before_any_run(tmp_path, tokenizer):
    model = build_family_model("llama", tokenizer)
    model.config.layer_types = ["linear_attention", "full_attention"]  # what a hybrid linear-attention model declares
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match=r"LlamaForCausalLM \(llama\) is not supported.*'linear_attention'"):
        load_model(str(tmp_path), device="cpu")
