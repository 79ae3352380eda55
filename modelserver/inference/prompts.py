"""From a conversation to the model's input ids, and the tokens that end the model's turn.

A conversation is validated by the one definition (:func:`modelserver.corpus.validate_messages`);
the system prompt is a generation setting and is put in front here.

:func:`system_prefix_length` says how much of a prompt is the system turn, whose KV cache one
``generate`` call computes once and reuses (``kvcache.prefill_rows``).  It depends only on the
prompt's own token ids and its system prompt, never on the other prompts of a batch, so a batch of
one splits the prompt where a batch of 32 does (batch invariance).
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


# A shorter common prefix saves nothing worth a second forward.
MIN_PREFIX_TOKENS = 2


def system_turn_ids(tokenizer, system_prompt: str) -> list[int]:
    """The token ids of the chat template rendered with the system message alone (no generation prompt),
    or ``[]`` when the template refuses a conversation of a system message only."""
    from jinja2 import TemplateError

    try:
        text = tokenizer.apply_chat_template(
            [{"role": "system", "content": system_prompt}], tokenize=False, add_generation_prompt=False
        )
    except (TemplateError, ValueError):
        # e.g. a template that raises unless the conversation ends with a user turn: no shared prefix
        return []
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def system_prefix_length(prompt_ids: Sequence[int], system_ids: Sequence[int]) -> int:
    """How many leading tokens of ``prompt_ids`` are the system turn: the longest common prefix with
    ``system_ids`` (0 when under ``MIN_PREFIX_TOKENS``), leaving at least one token to prefill after it.

    The prefix is the prompt's own first tokens, so prefix + suffix are exactly the prompt's ids: where
    the system-only rendering tokenizes its last characters otherwise than the whole prompt does, the
    common prefix simply stops before them."""
    n = 0
    limit = min(len(prompt_ids) - 1, len(system_ids))
    while n < limit and prompt_ids[n] == system_ids[n]:
        n += 1
    return n if n >= MIN_PREFIX_TOKENS else 0


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
