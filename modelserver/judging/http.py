"""An LLM judge behind an OpenAI-compatible endpoint (vLLM, llama.cpp's server, ...), allow-listed.

The base URL must be one of ``allowed`` (the site passes ``settings.JUDGE_ENDPOINTS``; a URL typed in
a request is never reached). One POST ``{base}/v1/chat/completions`` per item and question, with
``logprobs``/``top_logprobs`` when asked; the answer is read from the logprobs where they can give a
distribution (:func:`.scoring.from_top_logprobs`), else the text is parsed with the valid-values
rules (:func:`.answers.parse_answer`), and an unparseable text is a result with ``value=None``.
urllib from the standard library: no HTTP client is a dependency of the project.
"""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .answers import PAIR_SPACE, AnswerSpace, answer_space, check_criterion, parse_answer
from .judge import ORDERS, JudgeItem, PairItem, preferred
from .scoring import JudgeScore, from_top_logprobs
from .templates import CRITERION_TEMPLATE, PAIR_TEMPLATE, JudgeTemplate, render_criterion, render_pair


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """The allow-list names the endpoint, not wherever it sends us: a redirect is an error, never followed."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


class JudgeEndpointError(RuntimeError):
    """The endpoint is not allowed, did not answer, or answered something that is not a chat completion.

    ``transient`` is True for what a retry may cure (timeouts, refused connections, 429 and 5xx)."""

    def __init__(self, message: str, transient: bool = False):
        super().__init__(message)
        self.transient = transient


def normalise_base(url: str) -> str:
    """The base URL as compared with the allow-list: no trailing slash, no trailing /v1."""
    if not isinstance(url, str) or not url.strip():
        raise JudgeEndpointError("A judge endpoint needs a base URL.")
    url = url.strip().rstrip("/")
    if url.endswith("/v1"):
        url = url[: -len("/v1")]
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise JudgeEndpointError(f"Judge endpoint {url!r} must be an http(s) base URL without query or fragment.")
    return url


@dataclass(frozen=True)
class HttpJudge:
    base_url: str
    model: str
    allowed: Sequence[str]
    timeout: float = 60.0
    logprobs: bool = True
    top_logprobs: int = 20
    max_tokens: int = 8
    temperature: float = 0.0
    api_key: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        base = normalise_base(self.base_url)
        allowed = {normalise_base(u) for u in self.allowed}
        if base not in allowed:
            raise JudgeEndpointError(
                f"Judge endpoint {base!r} is not in the allow-list ({', '.join(sorted(allowed)) or 'empty'}); "
                "an operator adds endpoints to the settings, a request cannot.")
        if not isinstance(self.model, str) or not self.model.strip():
            raise JudgeEndpointError("A judge endpoint needs the model name the server serves.")
        if not self.timeout > 0 or not 0 <= self.top_logprobs <= 20 or self.max_tokens < 1:
            raise JudgeEndpointError("timeout must be > 0, top_logprobs 0-20 and max_tokens >= 1.")
        object.__setattr__(self, "base_url", base)

    def complete(self, messages: list[dict], seed: int) -> dict:
        """One chat completion (the server's JSON), or JudgeEndpointError."""
        body = {"model": self.model, "messages": messages, "max_tokens": self.max_tokens,
                "temperature": self.temperature, "seed": seed}
        if self.logprobs:
            body.update(logprobs=True, top_logprobs=self.top_logprobs)
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(f"{self.base_url}/v1/chat/completions", json.dumps(body).encode("utf-8"),
                                         headers, method="POST")
        try:
            with _OPENER.open(request, timeout=self.timeout) as response:  # noqa: S310 (allow-listed)
                payload = response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read(300).decode("utf-8", "replace")
            raise JudgeEndpointError(f"{self.base_url} answered HTTP {exc.code}: {detail}",
                                     transient=exc.code == 429 or exc.code >= 500) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            reason = getattr(exc, "reason", exc)
            raise JudgeEndpointError(f"{self.base_url} did not answer: {reason}", transient=True) from None
        try:
            data = json.loads(payload)
            choice = data["choices"][0]
            if not isinstance(choice["message"]["content"], str):
                raise TypeError("content is not text")
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise JudgeEndpointError(f"{self.base_url} did not answer with a chat completion: {exc}") from None
        return data

    def provenance(self, template: JudgeTemplate, seed: int) -> dict:
        return {"judge": "http", "base_url": self.base_url, "model": self.model, "template": template.identity(),
                "seed": seed, "temperature": self.temperature, "logprobs": self.logprobs,
                "top_logprobs": self.top_logprobs, "max_tokens": self.max_tokens}


def read_completion(data: dict, space: AnswerSpace) -> dict:
    """JudgeScore fields from one chat completion: logprobs where they give a distribution, else the text."""
    choice = data["choices"][0]
    text = choice["message"]["content"]
    content = (choice.get("logprobs") or {}).get("content") or []
    first = content[0] if content and isinstance(content[0], dict) else {}
    top = first.get("top_logprobs") or []
    read = from_top_logprobs(space, top) if top else None
    fields = {"raw_text": text, "top_tokens": [[t.get("token"), round(math.exp(float(t["logprob"])), 6)]
                                               for t in top[:5]]}
    if read is not None:
        return {**fields, **read, "method": "http-logprobs"}
    return {**fields, "values": list(space.values), "value": parse_answer(text, space), "method": "http-text"}


def _one(judge: HttpJudge, messages: list[dict], space: AnswerSpace, common: dict, seed: int) -> dict:
    started = time.perf_counter()
    data = judge.complete(messages, seed)
    try:
        result = read_completion(data, space)
    except (KeyError, TypeError, ValueError) as exc:
        raise JudgeEndpointError(f"{judge.base_url} sent malformed logprobs: {exc!r}") from None
    result["provenance"] = {**common, "response_model": data.get("model"),
                            "seconds": round(time.perf_counter() - started, 4)}
    return result


def judge_items_http(judge: HttpJudge, items: Sequence[JudgeItem], criteria: Sequence[dict],
                     template: JudgeTemplate = CRITERION_TEMPLATE, seed: int = 0) -> list[JudgeScore]:
    """Like :func:`.judge.judge_items`, one request per item and criterion, in the same order."""
    criteria = [check_criterion(c) for c in criteria]
    common = judge.provenance(template, seed)
    out = []
    for item in items:
        for criterion in criteria:
            space = answer_space(criterion)
            messages = render_criterion(template, criterion, item.messages, item.response)
            result = _one(judge, messages, space, common, seed)
            out.append(JudgeScore(key=item.key, criterion=criterion["key"], **result))
    return out


def judge_pairs_http(judge: HttpJudge, pairs: Sequence[PairItem], questions: Sequence[dict],
                     template: JudgeTemplate = PAIR_TEMPLATE, seed: int = 0,
                     orders: Sequence[str] = ORDERS) -> list[JudgeScore]:
    """Like :func:`.judge.judge_pairs` (both orders by default), one request per pair, question and order."""
    if not orders or any(o not in ORDERS for o in orders):
        raise ValueError(f"orders must be a non-empty subset of {ORDERS}")
    common = judge.provenance(template, seed)
    out = []
    for pair in pairs:
        for question in questions:
            for order in orders:
                a, b = (pair.first, pair.second) if order == "AB" else (pair.second, pair.first)
                result = _one(judge, render_pair(template, question["question"], pair.messages, a, b), PAIR_SPACE,
                              common, seed)
                out.append(JudgeScore(key=pair.key, criterion=question["key"], order=order,
                                      preferred=preferred(result["value"], order), **result))
    return out
