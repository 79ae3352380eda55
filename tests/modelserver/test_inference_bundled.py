"""The real bundled SmolLM2-135M-Instruct: both arms, kept small (2 prompts, 16 new tokens).

The first run on a machine converts the GGUF into the safetensors cache (~20-40 s); later runs load it in ~2 s.
"""

from __future__ import annotations

import pytest

from modelserver.inference import (
    GenerationParams,
    GenerationRequest,
    generate,
    load_model,
    regenerate,
    resolve_base,
    sha256_of_weights,
)


@pytest.fixture(scope="module")
def bundled_with_adapter(tmp_path_factory):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base_dir = resolve_base("bundled")
    adapter_dir = tmp_path_factory.mktemp("bundled-lora")
    peft_model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base_dir, local_files_only=True),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0),
    )
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    peft_model.save_pretrained(adapter_dir)
    del peft_model
    return load_model("bundled", {"ft": str(adapter_dir)}, device="cpu")


def test_bundled_model_generates_both_arms(bundled_with_adapter):
    lm = bundled_with_adapter
    assert lm.base_sha256 == sha256_of_weights(resolve_base("bundled"))
    reqs = [
        GenerationRequest("q1", [{"role": "user", "content": "I feel anxious before every exam. What can I do?"}], 1),
        GenerationRequest("q2", [{"role": "user", "content": "My friend stopped talking to me."}], 2),
    ]
    params = GenerationParams(max_new_tokens=16)
    base = generate(lm, reqs, params, adapter=None, batch_size=2)
    tuned = generate(lm, reqs, params, adapter="ft", batch_size=2)
    for o in base + tuned:
        assert o.text.strip() and 0 < o.output_tokens <= 16
        assert o.provenance["dtype"] == "float32" and o.provenance["base_sha256"] == lm.base_sha256
    assert [o.text for o in base] != [o.text for o in tuned]
    assert tuned[0].provenance["adapter_sha256"] == lm.adapter_sha256["ft"]
    # the bundled model answers in English and does not introduce itself as SmolLM (system prompt always sent)
    assert "SmolLM" not in " ".join(o.text for o in base)
    again = regenerate(lm, base[1].provenance, reqs[1].messages)
    assert again.text == base[1].text
