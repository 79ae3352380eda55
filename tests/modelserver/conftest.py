"""Fixtures for the inference tests: tiny random Llama models built in-process (no hub, no Django)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# SmolLM2-135M-Instruct's chat template (copied from the bundled GGUF).
SMOLLM2_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # ids 0, 1, 2 as in SmolLM2

CORPUS = [
    "I have been feeling anxious and I can't sleep at night.",
    "My partner and I keep arguing about money and chores.",
    "How can I stop feeling worthless? I feel sad every day.",
    "It sounds like you are going through a difficult time. Talking to a counselor can help.",
    "You are a supportive assistant. Respond to the user's message.",
    "system user assistant Hello, how are you today? Thanks for sharing.",
]


def build_tiny_tokenizer(vocab_size: int = 320):
    """Byte-level BPE with SmolLM2's special tokens and chat template, trained in milliseconds."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
    )
    fast.chat_template = SMOLLM2_CHAT_TEMPLATE
    return fast


def build_tiny_model(tokenizer, seed: int = 0, eos_boost: float = 0.0):
    """Random 2-layer Llama; ``eos_boost`` scales the eos row of lm_head so some rows stop early."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        initializer_range=0.2,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    if eos_boost:
        with torch.no_grad():
            model.lm_head.weight[tokenizer.eos_token_id] *= eos_boost
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def save_lora_adapter(base_dir, out_dir, seed: int = 1, scale: float = 0.5,
                      target_modules=("q_proj", "v_proj", "down_proj")):
    """A random LoRA adapter with nonzero B weights (so it really changes the outputs); families whose
    projections are named otherwise (Phi-3's qkv_proj) pass target_modules="all-linear"."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_dir, local_files_only=True)
    targets = target_modules if isinstance(target_modules, str) else list(target_modules)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=targets, lora_dropout=0.0)
    peft_model = get_peft_model(base, cfg)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * scale)
    peft_model.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer):
    d = tmp_path_factory.mktemp("tiny-llama")
    model = build_tiny_model(tiny_tokenizer, eos_boost=1.5)
    model.save_pretrained(d)
    tiny_tokenizer.save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def tiny_adapter_dir(tmp_path_factory, tiny_model_dir):
    return save_lora_adapter(tiny_model_dir, tmp_path_factory.mktemp("tiny-lora"))


@pytest.fixture(scope="session")
def tiny_loaded(tiny_model_dir, tiny_adapter_dir):
    """The tiny base with one LoRA adapter named 'lora' (peft-wrapped)."""
    from modelserver.inference import load_model

    return load_model(str(tiny_model_dir), {"lora": str(tiny_adapter_dir)}, device="cpu")


@pytest.fixture(scope="session")
def tiny_plain(tiny_model_dir):
    """The tiny base without adapters (a plain transformers model)."""
    from modelserver.inference import load_model

    return load_model(str(tiny_model_dir), device="cpu")


@pytest.fixture(scope="session")
def tiny_long(tmp_path_factory, tiny_tokenizer):
    """A tiny base + LoRA whose eos token is NOT boosted: rows usually run to max_new_tokens,
    so comparisons against HF generate cover many tokens."""
    from modelserver.inference import load_model

    d = tmp_path_factory.mktemp("tiny-llama-long")
    build_tiny_model(tiny_tokenizer, seed=3).save_pretrained(d)
    tiny_tokenizer.save_pretrained(d)
    adapter = save_lora_adapter(d, tmp_path_factory.mktemp("tiny-lora-long"), seed=4)
    return load_model(str(d), {"lora": str(adapter)}, device="cpu")
