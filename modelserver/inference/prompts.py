"""From a conversation to the model's input ids, and the tokens that end the model's turn.

A conversation is validated by the one definition (:func:`modelserver.corpus.validate_messages`);
the system prompt is a generation setting and is put in front here.
"""

from __future__ import annotations

from collections.abc import Sequence

from modelserver.corpus import validate_messages

from .loading import LoadedModel

# Chat templates' end-of-turn markers (ChatML / SmolLM2, Llama 3, Gemma): generation stops at them and
# training learns them as the last label of an answer.
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>")


def render_prompt(tokenizer, messages: Sequence[dict], system_prompt: str) -> str:
    conversation = [{"role": "system", "content": system_prompt}, *validate_messages(messages)]
    return tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)


def encode_prompt(tokenizer, messages: Sequence[dict], system_prompt: str) -> tuple[str, list[int]]:
    text = render_prompt(tokenizer, messages, system_prompt)
    # The chat template already contains every special token the model needs.
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return text, list(ids)


def stop_token_ids(loaded: LoadedModel) -> list[int]:
    tok = loaded.tokenizer
    ids: set[int] = set()
    gen_cfg = getattr(loaded.model, "generation_config", None)
    eos = getattr(gen_cfg, "eos_token_id", None)
    if isinstance(eos, int):
        ids.add(eos)
    elif isinstance(eos, (list, tuple)):
        ids.update(int(e) for e in eos)
    if tok.eos_token_id is not None:
        ids.add(int(tok.eos_token_id))
    vocab = tok.get_vocab()
    for t in END_OF_TURN_TOKENS:
        if t in vocab:
            ids.add(int(vocab[t]))
    if not ids:
        raise ValueError("the tokenizer defines no end-of-turn / eos token")
    return sorted(ids)
