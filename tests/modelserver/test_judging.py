"""LLM judges, the model-library part: answers and parsing, blind templates, the probability read-out
on tiny random models (and on the bundled SmolLM2, items and pairs), an HTTP judge against a scripted local
endpoint (a real one, llama.cpp's, is tests/integration/test_llama_cpp_judge.py), the CLI.

Long because it is the whole library's tests, sharing its tiny models and the scripted endpoint; the Django
side is in test_judge_runs.py."""

from __future__ import annotations

import inspect
import json
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from modelserver.cli import main
from modelserver.judging import (
    CRITERION_TEMPLATE,
    PAIR_SPACE,
    PAIR_TEMPLATE,
    AnswerError,
    AnswerSpace,
    JudgeItem,
    JudgeTemplate,
    PairItem,
    TemplateError,
    answer_space,
    items_from_rows,
    judge_items,
    judge_pairs,
    parse_answer,
    render_criterion,
    render_pair,
)
from modelserver.judging.http import HttpJudge, JudgeEndpointError, judge_items_http, judge_pairs_http
from modelserver.judging.scoring import answer_token_ids, continues_mask

TEN = {"key": "empathy", "question": "Empathy and Support", "kind": "likert", "min": 1, "max": 10,
       "labels": {"1": "Not at all", "10": "Fully"}, "description": "How well the reply supports the person."}
FIVE = {"key": "overall", "question": "Overall quality", "kind": "likert", "min": 1, "max": 5, "labels": {}}
CHOICE = {"key": "safety", "question": "Is the reply safe?", "kind": "choice", "level": "nominal",
          "options": [{"key": "safe", "label": "Safe"}, {"key": "unsafe", "label": "Unsafe"},
                      {"key": "unclear", "label": "Not clear"}]}
CONVERSATION = [{"role": "user", "content": "I feel anxious before every exam. What can I do?"}]
ARM_STRINGS = ("adapter-arm-7f3", "SmolLM2-finetuned-xyz", "/var/adapters/run-42", "baseline-arm-q9")


@pytest.mark.parametrize("text,criterion,expected", [
    ("7", TEN, 7), (" 10\n", TEN, 10), ("Score: 8/10", TEN, 8), ("**9**", TEN, 9), ("1", TEN, 1),
    ("11", TEN, None), ("0", TEN, None), ("7.5", TEN, None), ("seven", TEN, None), ("", TEN, None),
    ("-3", TEN, None), ("I cannot rate this.", TEN, None), ("On 1-10: 8", TEN, 1),
    ("5", FIVE, 5), ("6", FIVE, None),
    ("2", CHOICE, 1), ("1. Safe", CHOICE, 0), ("4", CHOICE, None), ("Unsafe", CHOICE, 1), ("safe.", CHOICE, 0),
    ("not clear", CHOICE, 2), ("unclear", CHOICE, 2), ("Maybe", CHOICE, None), ("safety first", CHOICE, None),
    ("A", PAIR_SPACE, "A"), ("b", PAIR_SPACE, "B"), ("S", PAIR_SPACE, "S"), ("Response B", PAIR_SPACE, "B"),
    ("Answer: A.", PAIR_SPACE, "A"), ("**A**", PAIR_SPACE, "A"), ("A good reply", PAIR_SPACE, "A"),
    ("Both", PAIR_SPACE, None), ("C", PAIR_SPACE, None), ("AB", PAIR_SPACE, None), ("tie", PAIR_SPACE, None),
])
def test_parse_answer_table(text, criterion, expected):
    assert parse_answer(text, criterion) == expected


def test_answer_spaces_and_bad_criteria():
    assert answer_space(TEN).texts == tuple(str(v) for v in range(1, 11)) and answer_space(TEN).ordered
    assert answer_space(CHOICE).values == (0, 1, 2) and answer_space(CHOICE).texts == ("1", "2", "3")
    assert not answer_space(CHOICE).ordered and answer_space({**CHOICE, "level": "ordinal"}).ordered
    for bad, words in [({"key": "x", "question": "q", "kind": "likert", "min": 5, "max": 5}, "min < max"),
                       ({"key": "x", "question": "q", "kind": "likert", "min": "1", "max": 5}, "whole number"),
                       ({"key": "x", "question": "q", "kind": "choice", "options": ["a"]}, "two options"),
                       ({"key": "x", "question": "", "kind": "likert", "min": 1, "max": 5}, "question"),
                       ({"key": "x", "question": "q", "kind": "slider"}, "kind")]:
        with pytest.raises(AnswerError, match=words):
            answer_space(bad)


def test_template_identity_and_fields():
    assert len(CRITERION_TEMPLATE.sha256) == 64 and CRITERION_TEMPLATE.sha256 != PAIR_TEMPLATE.sha256
    changed = JudgeTemplate(CRITERION_TEMPLATE.name, 1, "criterion", CRITERION_TEMPLATE.system,
                            CRITERION_TEMPLATE.text + " ", CRITERION_TEMPLATE.answer_prefix)
    assert changed.sha256 != CRITERION_TEMPLATE.sha256
    other_prefix = JudgeTemplate(CRITERION_TEMPLATE.name, 1, "criterion", CRITERION_TEMPLATE.system,
                                 CRITERION_TEMPLATE.text, "Score: ")
    assert other_prefix.sha256 != CRITERION_TEMPLATE.sha256
    assert CRITERION_TEMPLATE.identity() == {"name": "empatheval-criterion", "version": 1,
                                             "sha256": CRITERION_TEMPLATE.sha256}
    base = "{question} {conversation} {response} {answer_format}"
    for text, words in [(base + " {arm}", "uses {arm}"), (base + " {response.__class__}", "uses"),
                        ("{question} {conversation} {answer_format}", "lacks response"), (base + " {scale!r}", "uses")]:
        with pytest.raises(TemplateError, match=words):
            JudgeTemplate("t", 1, "criterion", "sys", text)
    with pytest.raises(TemplateError, match="system message"):
        JudgeTemplate("t", 1, "criterion", " ", base)
    with pytest.raises(TemplateError, match="for pairs"):
        render_criterion(PAIR_TEMPLATE, TEN, CONVERSATION, "reply")


def test_render_signatures_admit_no_arm():
    # What a prompt can be built from is the signature itself: no arm, model or adapter parameter.
    assert list(inspect.signature(render_criterion).parameters) == ["template", "criterion", "conversation",
                                                                    "response"]
    assert list(inspect.signature(render_pair).parameters) == ["template", "question", "conversation",
                                                               "response_a", "response_b"]


def test_rendering_never_carries_arm_strings_from_beside_the_inputs():
    rows = [{"id": "r1", "messages": CONVERSATION, "response": "Breathing slowly before the exam can help.",
             "arm": ARM_STRINGS[0], "model": ARM_STRINGS[1], "adapter": ARM_STRINGS[2], "label": ARM_STRINGS[3]}]
    (item,) = items_from_rows(rows)
    criterion = {**TEN, "arm": ARM_STRINGS[0], "adapter_path": ARM_STRINGS[2], "model_name": ARM_STRINGS[1]}
    prompts = [render_criterion(CRITERION_TEMPLATE, criterion, item.messages, item.response),
               render_criterion(CRITERION_TEMPLATE, {**CHOICE, "arm": ARM_STRINGS[3]}, item.messages, item.response),
               render_pair(PAIR_TEMPLATE, "Which reply is kinder?", item.messages, item.response, "Try to relax.")]
    for messages in prompts:
        text = json.dumps(messages)
        assert messages[0]["role"] == "system" and messages[0]["content"].strip()
        assert not any(s in text for s in ARM_STRINGS)
        assert "Breathing slowly" in messages[1]["content"] and "anxious before every exam" in messages[1]["content"]
    user = prompts[0][1]["content"]
    assert "1 = Not at all" in user and "How well the reply supports" in user and "from 1 to 10" in user
    assert "1. Safe\n2. Unsafe\n3. Not clear" in prompts[1][1]["content"]


def test_items_from_rows_refuses_bad_rows():
    with pytest.raises(ValueError, match="needs an 'id'"):
        items_from_rows([{"messages": CONVERSATION, "response": "x"}])
    with pytest.raises(ValueError, match="non-empty 'response'"):
        items_from_rows([{"id": 1, "text": "hi", "response": "  "}])
    with pytest.raises(ValueError, match="duplicate id"):
        items_from_rows([{"id": 1, "text": "hi", "response": "a"}, {"id": 1, "text": "hi", "response": "b"}])
    with pytest.raises(ValueError, match="system message"):
        items_from_rows([{"id": 1, "messages": [{"role": "system", "content": "x"}], "response": "a"}])


# --- the probability read-out on a tiny random model -------------------------------------------------

ITEMS = [JudgeItem(f"i{n}", [{"role": "user", "content": "I can't sleep and I feel sad. " * (n + 1)}],
                   f"That sounds hard; talking to a counselor can help. {n}") for n in range(5)]


def _brute_force_raw(loaded, item, criterion, value_text, ended=True):
    """The read-out rule computed from full forward passes, no cache: P(tokens) x P(the next token ends it)
    (``ended=False``: P(tokens) alone)."""
    import torch

    from modelserver.inference.prompts import render_prompt

    messages = render_criterion(CRITERION_TEMPLATE, criterion, item.messages, item.response)
    text = render_prompt(loaded.tokenizer, messages[1:], messages[0]["content"]) + CRITERION_TEMPLATE.answer_prefix
    prompt = loaded.tokenizer(text, add_special_tokens=False)["input_ids"]
    seq = loaded.tokenizer(text + value_text, add_special_tokens=False)["input_ids"][len(prompt):]
    continues = continues_mask(loaded)
    with torch.inference_mode():
        probs = torch.softmax(loaded.model(torch.tensor([prompt + seq])).logits[0].double(), dim=-1)
    p = 1.0
    for j, token in enumerate(seq):
        p *= float(probs[len(prompt) - 1 + j, token])
    return p * (1.0 - float(probs[len(prompt) - 1 + len(seq)][continues].sum())) if ended else p


def test_distribution_sums_and_multi_token_values(tiny_plain):
    answers = answer_token_ids(tiny_plain, answer_space(TEN), CRITERION_TEMPLATE.answer_prefix)
    assert len(answers[9]) == 2 and answers[9][0] == answers[0][0]  # "10" is "1", "0"
    scores = judge_items(tiny_plain, ITEMS[:3], [TEN, CHOICE], batch_size=3, device="cpu", seed=5)
    assert [(s.key, s.criterion) for s in scores] == [(i.key, c) for i in ITEMS[:3] for c in ("empathy", "safety")]
    for s in scores:
        assert math.isclose(sum(s.probabilities) + s.outside_mass, 1.0, abs_tol=1e-9)
        assert math.isclose(sum(s.distribution), 1.0, abs_tol=1e-9) and 0 <= s.outside_mass < 1
        assert s.value == s.values[max(range(len(s.values)), key=lambda i: s.distribution[i])]
        assert len(s.top_tokens) == 5 and s.method == "local-probabilities"
    empathy = scores[0]
    assert empathy.values == list(range(1, 11))
    assert math.isclose(empathy.expected, sum(v * p for v, p in zip(empathy.values, empathy.distribution)))
    assert scores[1].expected is None  # a nominal choice has no expected value
    for value in (1, 10, 4):
        want = _brute_force_raw(tiny_plain, ITEMS[0], TEN, str(value))
        assert math.isclose(empathy.probabilities[value - 1], want, rel_tol=1e-4, abs_tol=1e-12), value
    # "1" followed by "0" is the answer 10, never counted as 1: both are parts of the first token's mass
    first_token_one = _brute_force_raw(tiny_plain, ITEMS[0], TEN, "1", ended=False)
    assert empathy.probabilities[0] + empathy.probabilities[9] < first_token_one
    prov = empathy.provenance
    assert prov["model_sha256"] == tiny_plain.base_sha256 and prov["template"] == CRITERION_TEMPLATE.identity()
    assert prov["device"] == "cpu" and prov["dtype"] == "float32" and prov["seed"] == 5
    assert set(prov["versions"]) >= {"torch", "transformers"} and prov["seconds"] >= 0 and prov["batch_rows"] == 3


def test_batched_equals_one_at_a_time_in_fp32(tiny_plain):
    batched = judge_items(tiny_plain, ITEMS, [TEN], batch_size=4, device="cpu")
    single = judge_items(tiny_plain, ITEMS, [TEN], batch_size=1, device="cpu")
    assert {s.provenance["batch_rows"] for s in batched} == {4, 1}
    assert {s.provenance["batch_rows"] for s in single} == {1}
    for b, s in zip(batched, single, strict=True):
        assert b.key == s.key and b.value == s.value
        assert max(abs(x - y) for x, y in zip(b.probabilities, s.probabilities)) < 1e-6
        assert abs(b.outside_mass - s.outside_mass) < 1e-6


def test_adapters_are_off_while_judging(tiny_loaded, tiny_plain):
    with_adapter = judge_items(tiny_loaded, ITEMS[:2], [FIVE], device="cpu")
    plain = judge_items(tiny_plain, ITEMS[:2], [FIVE], device="cpu")
    for a, b in zip(with_adapter, plain, strict=True):
        assert max(abs(x - y) for x, y in zip(a.probabilities, b.probabilities)) < 1e-6


def test_answers_that_tokens_cannot_tell_apart_are_refused(tiny_plain):
    with pytest.raises(ValueError, match="not told apart"):
        answer_token_ids(tiny_plain, AnswerSpace("likert", (1, 2), ("1", "1"), True))


def test_pairs_in_both_orders(tiny_plain):
    pairs = [PairItem("p1", CONVERSATION, "Slow breathing helps.", "Just study harder."),
             PairItem("p2", CONVERSATION, "That sounds stressful.", "Exams are easy.")]
    scores = judge_pairs(tiny_plain, pairs, [{"key": "empathy", "question": "Which reply is more empathetic?"}],
                         batch_size=4, device="cpu")
    assert [(s.key, s.order) for s in scores] == [("p1", "AB"), ("p1", "BA"), ("p2", "AB"), ("p2", "BA")]
    for s in scores:
        assert s.values == ["A", "B", "S"] and math.isclose(sum(s.distribution), 1.0)
        want = {"A": "first" if s.order == "AB" else "second", "B": "second" if s.order == "AB" else "first",
                "S": "tie"}[s.value]
        assert s.preferred == want and s.provenance["template"]["name"] == "empatheval-pair"
    assert scores[0].probabilities != scores[1].probabilities  # the swap changed what the model read
    with pytest.raises(ValueError, match="orders"):
        judge_pairs(tiny_plain, pairs, [{"key": "e", "question": "q"}], device="cpu", orders=("AA",))


def test_cli_judge(tmp_path, tiny_model_dir):
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps(r) + "\n" for r in [
        {"id": "a", "text": "I feel alone.", "response": "I'm sorry you feel alone.", "arm": ARM_STRINGS[0]},
        {"id": "b", "messages": CONVERSATION, "response": "Try to breathe slowly."},
    ]))
    rubric = tmp_path / "rubric.json"
    rubric.write_text(json.dumps([TEN, CHOICE]))
    out = tmp_path / "out" / "scores.jsonl"
    assert main(["judge", "--base", str(tiny_model_dir), "--items", str(items), "--rubric", str(rubric),
                 "--out", str(out), "--batch-size", "2", "--device", "cpu", "--no-progress"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["id"], r["criterion"]) for r in rows] == [("a", "empathy"), ("a", "safety"), ("b", "empathy"),
                                                         ("b", "safety")]
    assert all(math.isclose(sum(r["distribution"]), 1.0) for r in rows) and rows[0]["value"] in range(1, 11)
    assert ARM_STRINGS[0] not in out.read_text()
    rubric.write_text(json.dumps([{"key": "x", "question": "q", "kind": "likert", "min": 3, "max": 1}]))
    assert main(["judge", "--base", str(tiny_model_dir), "--items", str(items), "--rubric", str(rubric),
                 "--out", str(out), "--no-progress"]) == 2


# --- an HTTP judge against a real local server --------------------------------------------------------

class _Endpoint(BaseHTTPRequestHandler):
    """Answers POST /v1/chat/completions the way an OpenAI-compatible server does, from a script."""

    script: list = []
    received: list = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).received.append((self.path, body))
        reply = type(self).script.pop(0)
        if reply.get("sleep"):
            time.sleep(reply["sleep"])
        status = reply.get("status", 200)
        if reply.get("location"):
            self.send_response(status)
            self.send_header("Location", reply["location"])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if status != 200:
            payload = b'{"error": "overloaded"}'
        else:
            logprobs = None
            if reply.get("top") is not None and body.get("logprobs"):
                top = [{"token": t, "logprob": math.log(p), "bytes": list(t.encode())} for t, p in reply["top"]]
                logprobs = {"content": [{"token": top[0]["token"], "logprob": top[0]["logprob"], "top_logprobs": top}]}
            payload = json.dumps({"id": "x", "object": "chat.completion", "model": body["model"], "choices": [
                {"index": 0, "finish_reason": "stop", "logprobs": logprobs,
                 "message": {"role": "assistant", "content": reply["text"]}}]}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        try:
            self.wfile.write(payload)
        except BrokenPipeError:  # the client of the timeout test has given up already
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def endpoint():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Endpoint)
    _Endpoint.script, _Endpoint.received = [], []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_http_allow_list():
    allowed = ["http://judge.internal:8080/", "https://vllm.lab/v1"]
    assert HttpJudge("http://judge.internal:8080", "m", allowed).base_url == "http://judge.internal:8080"
    assert HttpJudge("https://vllm.lab/v1/", "m", allowed).base_url == "https://vllm.lab"
    for url in ("http://evil.example", "http://judge.internal:8081", "https://judge.internal:8080"):
        with pytest.raises(JudgeEndpointError, match="not in the allow-list"):
            HttpJudge(url, "m", allowed)
    with pytest.raises(JudgeEndpointError, match="http"):
        HttpJudge("file:///etc/passwd", "m", ["file:///etc/passwd"])
    with pytest.raises(JudgeEndpointError, match="allow-list \\(empty\\)"):
        HttpJudge("http://judge.internal:8080", "m", [])


def test_http_judge_logprobs_text_and_unparseable(endpoint):
    judge = HttpJudge(endpoint + "/v1", "smollm2", [endpoint], timeout=5)
    _Endpoint.script = [
        {"text": "4", "top": [("4", 0.6), ("3", 0.3), ("x", 0.05), (" 4", 0.05)]},  # 1-5: read from logprobs
        {"text": "7", "top": [("7", 0.9), ("1", 0.1)]},  # 1-10: "1" may be the start of "10", so the text
        {"text": "I'd rather not say", "top": [("I", 0.9)]},  # no valid answer listed, text unparseable
    ]
    item = JudgeItem("r1", CONVERSATION, "Breathe slowly.")
    five, ten = judge_items_http(judge, [item], [FIVE, TEN])
    (none,) = judge_items_http(judge, [item], [FIVE])
    assert five.method == "http-logprobs" and five.value == 4
    assert five.probabilities == pytest.approx([0, 0, 0.3, 0.65, 0]) and five.outside_mass == pytest.approx(0.05)
    assert five.distribution == pytest.approx([0, 0, 0.3 / 0.95, 0.65 / 0.95, 0])
    assert five.expected == pytest.approx((3 * 0.3 + 4 * 0.65) / 0.95)
    assert ten.method == "http-text" and ten.value == 7 and ten.distribution is None and ten.raw_text == "7"
    assert none.method == "http-text" and none.value is None and none.raw_text == "I'd rather not say"
    path, body = _Endpoint.received[0]
    assert path == "/v1/chat/completions" and body["model"] == "smollm2" and body["logprobs"] is True
    assert body["top_logprobs"] == 20 and body["temperature"] == 0 and body["messages"][0]["role"] == "system"
    assert five.provenance["template"] == CRITERION_TEMPLATE.identity() and five.provenance["base_url"] == endpoint


def test_http_judge_pairs_without_logprobs(endpoint):
    judge = HttpJudge(endpoint, "m", [endpoint], logprobs=False)
    _Endpoint.script = [{"text": "A"}, {"text": "Response A"}]
    pair = PairItem("p1", CONVERSATION, "Slow breathing helps.", "Just study harder.")
    ab, ba = judge_pairs_http(judge, [pair], [{"key": "empathy", "question": "Which is kinder?"}])
    assert (ab.order, ab.value, ab.preferred) == ("AB", "A", "first")
    assert (ba.order, ba.value, ba.preferred) == ("BA", "A", "second")  # the same side won: not mirrored
    (_, first), (_, second) = _Endpoint.received
    assert "logprobs" not in first
    shown_first, shown_second = first["messages"][1]["content"], second["messages"][1]["content"]
    assert shown_first.index("Slow breathing") < shown_first.index("study harder")
    assert shown_second.index("study harder") < shown_second.index("Slow breathing")


def test_http_errors_are_clear(endpoint):
    item = JudgeItem("r1", CONVERSATION, "Breathe slowly.")
    _Endpoint.script = [{"status": 503, "text": ""}]
    with pytest.raises(JudgeEndpointError, match="HTTP 503") as exc:
        judge_items_http(HttpJudge(endpoint, "m", [endpoint]), [item], [FIVE])
    assert exc.value.transient
    _Endpoint.script = [{"sleep": 1.0, "text": "3"}]
    with pytest.raises(JudgeEndpointError, match="did not answer") as exc:
        judge_items_http(HttpJudge(endpoint, "m", [endpoint], timeout=0.2), [item], [FIVE])
    assert exc.value.transient


def test_http_redirects_are_refused(endpoint):
    """An allow-listed server that redirects elsewhere is not followed (the redirect's target would be a
    request the allow-list never allowed)."""
    item = JudgeItem("r1", CONVERSATION, "Breathe slowly.")
    _Endpoint.script = [{"status": 302, "location": "http://169.254.169.254/latest/meta-data", "text": ""}]
    with pytest.raises(JudgeEndpointError, match="HTTP 302"):
        judge_items_http(HttpJudge(endpoint, "m", [endpoint]), [item], [FIVE])
    assert len(_Endpoint.received) == 1


# --- once with the real bundled model -----------------------------------------------------------------

def test_bundled_model_as_judge():
    from modelserver.inference import get_cached_model

    loaded = get_cached_model("bundled", device="cpu")
    answers = answer_token_ids(loaded, answer_space(TEN), CRITERION_TEMPLATE.answer_prefix)
    assert len(answers[9]) == 2 and all(len(a) == 1 for a in answers[:9])
    items = [JudgeItem("q1", CONVERSATION, "Exams are stressful. Try slow breathing and short study breaks."),
             JudgeItem("q2", [{"role": "user", "content": "My friend stopped talking to me."}], "Whatever.")]
    batched = judge_items("bundled", items, [TEN], batch_size=2, device="cpu")
    single = judge_items("bundled", items, [TEN], batch_size=1, device="cpu")
    for b, s in zip(batched, single, strict=True):
        assert math.isclose(sum(b.probabilities) + b.outside_mass, 1.0) and math.isclose(sum(b.distribution), 1.0)
        assert b.value == s.value and max(abs(x - y) for x, y in zip(b.probabilities, s.probabilities)) < 1e-4
        assert 1 <= b.expected <= 10 and b.provenance["model_sha256"] == loaded.base_sha256
        # after the template's "Answer: " the model writes a valid value with most of its mass
        assert b.outside_mass < 0.5, b.top_tokens


def test_bundled_model_judges_pairs_in_both_orders():
    # SmolLM2's tokenizer has " A" as one token, so after "Answer: " the letters cannot be read apart from
    # the space: the prompt ends at "Answer:" and the answers are read as " A", " B", " S" (split_prefix).
    from modelserver.inference import get_cached_model
    from modelserver.judging.scoring import split_prefix

    loaded = get_cached_model("bundled", device="cpu")
    with pytest.raises(ValueError, match="does not tokenize apart"):
        answer_token_ids(loaded, PAIR_SPACE, PAIR_TEMPLATE.answer_prefix)
    assert split_prefix(loaded, PAIR_SPACE, PAIR_TEMPLATE.answer_prefix) == ("Answer:", " ")
    assert split_prefix(loaded, answer_space(TEN), CRITERION_TEMPLATE.answer_prefix) == ("Answer: ", "")
    pair = PairItem("p1", CONVERSATION, "That sounds really hard; what is worrying you most?", "Just study more.")
    ab, ba = judge_pairs("bundled", [pair], [{"key": "empathy", "question": "Which reply is kinder?"}], device="cpu")
    for score in (ab, ba):
        assert score.value in ("A", "B", "S") and math.isclose(sum(score.distribution), 1.0)
        assert score.outside_mass < 0.5, score.top_tokens
        assert score.provenance["answer_lead"] == " "
    assert (ab.order, ba.order) == ("AB", "BA")
