"""A rater of an open study crawls everything they can reach, as a browser would, and finds nothing that
tells the arms apart.

The crawl follows every href, src, action, hx-* and data-* URL in the pages, the URLs written in the
site's scripts, redirects, the rater API and the schema; it posts the forms it finds (so it reaches the
later states: every item rated, a rating revised) and triggers the error pages a rater can reach. Every
body, header and cookie is searched for the arms' labels, blind codes, base model references, adapter
names, paths and hashes (distinctive random strings), and for the responses' sequential database ids.
"""

import json
import re
import secrets
from html.parser import HTMLParser
from urllib.parse import urljoin, urlparse

import pytest
from django.contrib.staticfiles import finders

from evalapp.models import PairJudgment, ResponsePair, Study
from modelserver.models import Adapter
from raters import services
from raters.models import Assignment, CalibrationItem, GoldAnswer, PairAssignment, PairGoldAnswer, Role

from ..factories import ArmFactory, MembershipFactory, PromptFactory, ResponseFactory, StudyFactory, UserFactory

pytestmark = pytest.mark.django_db

URL_ATTRS = re.compile(r"^(href|src|action|formaction|hx-[a-z]+|data-[a-z-]+)$")
# Never followed: they end the session or the rater's part in the study (then nothing more is reachable).
NOT_FOLLOWED = ("/accounts/logout", "/withdraw/")
RATE_ACTION = re.compile(r"/studies/\d+/(rate|compare)/[\w-]+/$")  # a rating form: the test's own loops fill these


def secret(kind: str) -> str:
    return f"{kind}{secrets.token_hex(6)}"


class Page(HTMLParser):
    """The URLs and forms of one HTML page, as a browser sees them."""

    def __init__(self):
        super().__init__()
        self.urls, self.forms = [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for name, value in attrs.items():
            if value and URL_ATTRS.match(name) and (value.startswith(("/", "http://testserver")) or name != "src"
                                                    and "/" in value and " " not in value.strip()):
                self.urls.append(value)
        if tag == "form":
            self.forms.append({"action": attrs.get("action") or "", "method": (attrs.get("method") or "get").lower(),
                               "fields": {}, "choices": {}})
        elif tag in ("input", "select", "textarea", "button") and self.forms and attrs.get("name"):
            form, name = self.forms[-1], attrs["name"]
            kind = attrs.get("type", "text")
            if kind == "radio":
                form["choices"].setdefault(name, []).append(attrs.get("value", "on"))
            elif kind == "checkbox":
                form.setdefault("checks", {})[name] = attrs.get("value", "on")
            elif kind in ("hidden", "text", "number") or tag == "textarea":
                form["fields"].setdefault(name, attrs.get("value", ""))


def filled(form: dict, choice: int, tick: bool = False) -> dict:
    """The form as a rater fills it: the `choice`-th answer of every question (not "not sure"), and
    every box ticked with `tick` (consent's "I agree"; a rating's "unsafe" box stays clear)."""
    data = dict(form["fields"], **(form.get("checks", {}) if tick else {}))
    data.pop("skip_reason", None)
    for name, values in form["choices"].items():
        answers = [v for v in values if v != "not_sure"] or values
        data[name] = answers[choice % len(answers)]
    return data


@pytest.fixture
def open_study(db):
    owner = UserFactory(username=secret("owner"))
    # A fixed design seed: the order check below sees the same queue on every run.
    study = StudyFactory(owner=owner, title="Replies to worried students", ratings_per_response=1,
                         design_seed=20240611)
    adapters, arms = [], []
    for n in range(3):
        path = f"/srv/adapters/{secret('path')}"
        adapter = Adapter.objects.create(name=secret("adaptername"), created_by=owner, path=path,
                                         base_ref=secret("baseref"), base_sha256=secrets.token_hex(32),
                                         adapter_sha256=secrets.token_hex(32))
        adapters.append(adapter)
        arms.append(ArmFactory(study=study, label=secret("label"), base_model=adapter.base_ref,
                               adapter=path if n else ""))
    prompts = PromptFactory.create_batch(4, study=study)
    # Arm by arm: the responses' database ids are sequential within each arm, the worst case for a leak.
    for arm, adapter in zip(arms, adapters, strict=True):
        for prompt in prompts:
            ResponseFactory(prompt=prompt, arm=arm, text=f"Reply to {prompt.external_id}: that sounds hard.",
                            provenance={"base_sha256": adapter.base_sha256, "adapter_sha256": adapter.adapter_sha256,
                                        "adapter": adapter.name, "base_model": adapter.base_ref, "seed": 7})
    services.consent_publish(study=study, text="Please rate honestly.", withdrawal_policy="exclude")
    # Calibration first (the crawl answers it through its form), then gold items hidden among the real ones.
    for use_as_gold in (False, True):
        CalibrationItem.objects.create(
            study=study, messages=[{"role": "user", "content": "I failed my exam."}], response_text="That is hard.",
            references={"empathy": 1, "fluency": 1}, rationale="r", created_by=owner, use_as_gold=use_as_gold)
    Study.objects.filter(id=study.id).update(gold_rate=0.2)
    rater = MembershipFactory(study=study, user=UserFactory(username="crawling-rater"), role=Role.RATER).user
    services.study_open_for_rating(study=study)
    study.refresh_from_db()
    terms = set()
    for arm, adapter in zip(arms, adapters, strict=True):
        terms |= {arm.label, arm.blind_code, arm.base_model, adapter.name, adapter.path, adapter.path.rsplit("/", 1)[1],
                  adapter.base_sha256, adapter.adapter_sha256, adapter.base_sha256[:10], adapter.adapter_sha256[:10]}
    return study, arms, rater, {t.lower() for t in terms if t}


class Crawl:
    def __init__(self, client, study):
        self.client, self.study = client, study
        self.seen: set[tuple] = set()
        self.bodies: list[tuple[str, str]] = []  # (request and status, headers, cookies and body), every fetch
        self.urls: set[str] = set()
        self.forms: dict[str, dict] = {}  # action -> form, the last seen
        self.queue: list[str] = []
        self.pending: list[tuple[str, dict]] = []  # POST forms found, to submit once each
        self.posted: set[str] = set()

    def visit(self, method: str, url: str, data=None, fresh: bool = False, hops: int = 0, **extra):
        key = (method, url, json.dumps(data, sort_keys=True))
        if key in self.seen and not fresh:
            return None
        self.seen.add(key)
        response = getattr(self.client, method)(url, data, **extra) if data is not None else \
            getattr(self.client, method)(url, **extra)
        where = f"{method.upper()} {url} -> {response.status_code}"
        headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
        cookies = "\n".join(m.output() for m in response.cookies.values())
        body = b"".join(response.streaming_content) if response.streaming else response.content
        self.bodies.append((where, f"{headers}\n{cookies}\n\n{body.decode('utf-8', 'replace')}"))
        if response.status_code in (301, 302, 303, 307, 308):
            if method == "post" or fresh:
                # After a post the pages it leads to are in a new state: the browser fetches them again.
                target = urlparse(urljoin(url, response["Location"]))
                assert hops < 5, f"a redirect loop at {url}"
                if target.netloc in ("", "testserver"):
                    self.visit("get", target.path + (f"?{target.query}" if target.query else ""), fresh=True,
                               hops=hops + 1)
            else:
                self.follow(url, response["Location"])
        content_type = response.get("Content-Type", "")
        text = body.decode("utf-8", "replace")
        if "html" in content_type:
            page = Page()
            page.feed(text)
            for found in page.urls:
                self.follow(url, found)
            for form in page.forms:
                action = urljoin(url, form["action"] or url)
                self.forms[action] = form
                if form["method"] == "get":
                    self.follow(url, action)
                elif not RATE_ACTION.search(action) and not any(s in action for s in NOT_FOLLOWED):
                    self.pending.append((action, form))
        elif "javascript" in content_type or url.endswith(".js"):
            for found in re.findall(r"""["'`](/[\w/.-]*)["'`]""", text):
                self.follow(url, found)
        return response

    def last(self, prefix: str) -> str:
        return next(text for where, text in reversed(self.bodies) if where.startswith(prefix))

    def follow(self, base: str, found: str):
        target = urljoin(base, found).split("#")[0]
        parsed = urlparse(target)
        if parsed.netloc not in ("", "testserver") or any(s in target for s in NOT_FOLLOWED):
            return
        path = parsed.path + (f"?{parsed.query}" if parsed.query else "")
        self.urls.add(path)
        if ("get", path, "null") not in self.seen and path not in self.queue:
            self.queue.append(path)

    def run(self, limit: int = 3000):
        self._run(limit)
        # A crawl cut short by its limit would pass without having looked at what it left.
        assert not self.queue and not self.pending, (f"crawl stopped at {limit} visits with "
                                                     f"{len(self.queue)} URLs and {len(self.pending)} forms left")

    def _run(self, limit: int):
        while (self.queue or self.pending) and len(self.seen) < limit:
            if not self.queue:
                action, form = self.pending.pop(0)
                data = filled(form, 0, tick=True)
                # Not the CSRF token: every page carries a new one, and the same form would be posted forever.
                key = json.dumps([action, sorted((k, v) for k, v in form["fields"].items()
                                                 if k != "csrfmiddlewaretoken")])
                if key not in self.posted:
                    self.posted.add(key)
                    self.visit("post", urlparse(action).path, data)
                continue
            url = self.queue.pop(0)
            response = self.visit("get", url)
            if response is not None and response.status_code == 404 and url.startswith("/static/"):
                # WhiteNoise in tests serves what finders find; anything else a page names must exist.
                path = finders.find(url.removeprefix("/static/"))
                assert path, f"a page names {url}, which does not exist"


def item_on(body: str, page: str = "rate") -> str | None:
    match = re.search(rf'action="/studies/\d+/{page}/([\w-]+)/"', body)
    return match.group(1) if match else None


def compare_everything(crawl, study, rater) -> list[str]:
    """The researcher opens a pairwise phase (a gold pair among the pairs); the rater finds the compare
    page from the study page and judges their whole queue through its forms, crawling each state."""
    services.gold_pair_add(study=study, user=study.owner, messages=[{"role": "user", "content": "I feel alone."}],
                           better_text="That sounds lonely; I'm glad you said it.", worse_text="Go out more.",
                           rationale="The second brushes it off.")
    services.pair_phase_save(study=study, criteria=[{"key": "empathy", "question": "Which is more supportive?"},
                                                    {"key": "fluency", "question": "Which reads better?"}],
                             judgments_per_pair=1, gold_rate=0.5, reason="optional")
    services.pair_phase_open(study=study)
    crawl.visit("get", f"/studies/{study.id}/", fresh=True)
    compare = f"/studies/{study.id}/compare/"
    assert f'href="{compare}"' in crawl.last(f"GET /studies/{study.id}/ ")
    served, pages = [], []
    for step in range(PairAssignment.objects.filter(rater=rater).count()):
        crawl.visit("get", compare, fresh=True)
        crawl.run()
        page = crawl.last(f"GET {compare} ")
        public_id = item_on(page, "compare")
        assert public_id, f"no compare form at step {step}"
        served.append(public_id)
        pages.append(page)
        action = f"{compare}{public_id}/"
        form = next(f for k, f in crawl.forms.items() if urlparse(k).path == action)
        data = {**filled(form, step), "reason": "A kinder opening."}
        # Every other pair through the no-reload path, as rate.js posts it; the fragment is crawled too.
        response = crawl.visit("post", action, data, headers={"X-Requested-With": "fetch"} if step % 2 else {})
        if step % 2:
            pages.append(response.content.decode())
        crawl.run()
    crawl.visit("get", compare, fresh=True)
    assert "All done" in crawl.last(f"GET {compare} ")
    assert PairJudgment.objects.filter(rater=rater).exists() and PairGoldAnswer.objects.filter(
        assignment__rater=rater).exists()
    # The page names the responses A and B only: nothing says which one is the pair's "first" (the lower
    # arm's), nor which arm is which; the pairs' ids in it are public ids, never database ids.
    pair_ids = {str(pk) for pk in ResponsePair.objects.filter(study=study).values_list("id", flat=True)}
    for page in pages:
        assert not re.search(r"\b(first|second)\b", page, re.IGNORECASE), re.findall(r".{40}\b(?:first|second)\b.{40}",
                                                                                    page, re.IGNORECASE)
        for match in re.findall(r"/compare/([^/\"'?\s]+)/", page):
            assert not match.isdigit() and match not in pair_ids, match
    return served


def test_a_rater_crawling_everything_learns_nothing_of_the_arms(client, open_study):
    study, arms, rater, terms = open_study
    client.force_login(rater)
    crawl = Crawl(client, study)
    crawl.queue += ["/", "/studies/", f"/studies/{study.id}/", f"/studies/{study.id}/rate/",
                    f"/studies/{study.id}/consent/", f"/studies/{study.id}/calibration/", "/accounts/login/",
                    "/accounts/password_change/", "/favicon.ico",
                    "/api/studies/", f"/api/studies/{study.id}/", f"/api/studies/{study.id}/rating/next/",
                    "/api/schema/", "/api/docs/", "/api/presets/"]
    crawl.run()
    # The crawl consented and passed calibration through the pages' forms, as a rater does.
    assert rater.consents.filter(study=study).exists() and rater.calibration_attempts.filter(passed=True).exists()

    # Rate the whole queue through the pages' own forms, crawling each state; note the order items came in.
    served, arm_of = [], {r.public_id: r.arm_id for a in arms for r in a.responses.all()}
    first_form = None
    rate = f"/studies/{study.id}/rate/"
    for step in range(Assignment.objects.filter(rater=rater).count()):
        crawl.visit("get", rate, fresh=True)
        crawl.visit("get", f"/api/studies/{study.id}/rating/next/", fresh=True)
        crawl.run()
        public_id = item_on(crawl.last(f"GET {rate} "))
        assert public_id, f"no rating form at step {step}"
        served.append(public_id)
        action = f"{rate}{public_id}/"
        form = next(f for k, f in crawl.forms.items() if urlparse(k).path == action)
        first_form = first_form or (action, form)
        # Every other item through the no-reload path, as rate.js posts it; the fragment is crawled too.
        headers = {"X-Requested-With": "fetch"} if step % 2 else {}
        crawl.visit("post", action, filled(form, step), headers=headers)
        crawl.run()
    crawl.visit("get", rate, fresh=True)
    done = crawl.last(f"GET {rate} ")
    assert "All done" in done
    # A revision of the first rating (another answer), then the API's view of a finished queue.
    crawl.visit("post", first_form[0], filled(first_form[1], 1))
    crawl.visit("get", f"/api/studies/{study.id}/rating/next/?after=done")
    assert rater.ratings.count() == 12 and GoldAnswer.objects.filter(assignment__rater=rater).exists()
    assert rater.ratings.filter(revisions__isnull=False).exists()
    compared = compare_everything(crawl, study, rater)
    # A bad judgment, by form and by fetch, and one of a pair the rater was never given.
    for headers in ({}, {"X-Requested-With": "fetch"}):
        crawl.visit("post", f"/studies/{study.id}/compare/{compared[0]}/", {"pick-empathy": "c"}, headers=headers)
    crawl.visit("post", f"/studies/{study.id}/compare/{secrets.token_hex(8)}/", {"pick-empathy": "a"})

    # Error pages a rater can trigger: a 404, a 403 (a researcher's page), a 400 (a bad rating), a bad API call.
    secret_arm = arms[1]
    for method, url, data in [
        ("get", "/no-such-page/", None), ("get", f"/studies/{study.id}/rate/{secrets.token_hex(8)}/", None),
        ("post", f"/studies/{study.id}/rate/{secrets.token_hex(8)}/", {"score-empathy": "5"}),
        ("post", first_form[0], {"score-empathy": "99"}), ("post_fetch", first_form[0], {"score-empathy": "99"}),
        ("get", f"/studies/{study.id}/results/", None), ("get", f"/studies/{study.id}/export.zip", None),
        ("get", f"/studies/{study.id}/export/responses.csv", None), ("get", f"/studies/{study.id}/raters/", None),
        ("get", f"/studies/{study.id}/generation/runs/", None), ("get", f"/studies/{study.id}/playground/", None),
        ("get", f"/studies/{study.id}/results.json", None), ("get", f"/studies/{study.id}/adjudication/", None),
        ("get", f"/api/studies/{study.id}/arms/", None), ("get", f"/api/studies/{study.id}/prompts/", None),
        ("get", f"/api/studies/{study.id}/results/", None), ("get", f"/api/studies/{study.id}/exports/responses.csv", None),
        ("get", f"/api/studies/{study.id}/generation-runs/", None), ("get", f"/api/studies/{study.id}/adjudications/", None),
        ("post", f"/api/studies/{study.id}/rating/{secrets.token_hex(8)}/", {"answers": {"empathy": 5}}),
        ("post", f"/api/studies/{study.id}/rating/{first_form[0].split('/')[-2]}/", {"answers": {"empathy": "x"}}),
        ("get", f"/studies/{study.id}/arms/", None), ("get", f"/adapters/", None),
        ("get", f"/adapters/{Adapter.objects.first().id}/", None), ("get", "/api/studies/999999/", None),
        ("get", f"/studies/{study.id}/generation/arms/{secret_arm.id}/regenerate-truncated/", None),
    ]:
        extra = {"content_type": "application/json"} if url.startswith("/api/") and method == "post" else {}
        if extra:
            data = json.dumps(data)
        if method == "post_fetch":
            method, extra = "post", {"headers": {"X-Requested-With": "fetch"}}
        response = crawl.visit(method, url, data, **extra)
        assert response is None or response.status_code in (200, 204, 302, 400, 403, 404, 405, 409), \
            (url, response.status_code)
    crawl.run()

    reached = {w.split(" ")[1] for w, _ in crawl.bodies}
    assert {f"/studies/{study.id}/rate/", f"/studies/{study.id}/compare/", "/api/schema/", "/static/raters/rate.js", "/static/evalapp/site.js",
            f"/api/studies/{study.id}/rating/next/"} <= reached, sorted(reached)
    assert len(crawl.bodies) > 40, sorted(crawl.bodies)

    response_ids = {str(pk) for a in arms for pk in a.responses.values_list("id", flat=True)}
    for where, text in crawl.bodies:
        lowered = text.lower()
        for term in terms:
            assert term not in lowered, f"{term!r} leaks in {where}"
        for match in re.findall(r"/rate/([^/\"'?\s]+)/", text):
            assert not match.isdigit() and match not in response_ids, (where, match)
        if "application/json" in text.split("\n\n", 1)[0]:
            assert not response_ids & set(json_ids(json.loads(text.split("\n\n", 1)[1] or "null"))), where
    for url in crawl.urls:
        for segment in urlparse(url).path.split("/"):
            # A rater's URLs name the study by its id and nothing else by a number.
            assert not segment.isdigit() or segment == str(study.id) or url.startswith(("/adapters/", "/api/studies/999999")), url
    assert all(term not in str(client.cookies).lower() for term in terms)

    # The order of the queue tells nothing either: arms interleave, not one arm's items then the next's.
    sequence = [arm_of[p] for p in served if p in arm_of]
    assert len(sequence) == 12 and sequence != sorted(sequence)
    changes = sum(a != b for a, b in zip(sequence, sequence[1:]))
    assert changes > len(arms), sequence


def json_ids(value):
    """Every value held under a key that names an id (but a study's own), anywhere in a JSON document."""
    if isinstance(value, dict):
        for key, item in value.items():
            # A study (it has a title) is named by its id, as in every URL of it.
            if (key == "id" and "title" not in value) or key.endswith("_id"):
                yield str(item)
            yield from json_ids(item)
    elif isinstance(value, list):
        for item in value:
            yield from json_ids(item)
