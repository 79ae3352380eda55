"""Hostile text is shown escaped and whole on every page and fragment it reaches, and exported neutralised.

One study carries every payload below in each place a person can type or a model can write text: the
study's title and description, the prompts (conversation, topic), the responses (model output, one of
100 kB), the raters' comments and rationales, their usernames and pseudonyms, the adjudicators'
rationales and safety notes, the arm labels and the playground's conversation and outputs. Every page
that shows that text is fetched as the person who sees it (rater, adjudicator, researcher, staff in the
admin), and each body is parsed as a browser would (lxml's HTML parser): no script element without a
`src`, no `on*` attribute, no `javascript:` URL, and the payload's escaped form is there.

Control characters and bidirectional overrides are data (a rater's comment is evidence; an export must
give it back byte for byte), so they are kept, escaped like any text, never stripped or rewritten. What
the pages add is the containment: every element that shows such text isolates its direction
(`unicode-bidi: isolate` in site.css), so an override inside a response cannot reverse the labels and
buttons around it. NUL is the one character PostgreSQL cannot store; every form and importer refuses it
with a message (tests/test_importer_fuzz.py).
"""

import csv
import io
import re
import zipfile

import lxml.html
import pytest
from django.contrib.auth import get_user_model
from django.contrib.staticfiles import finders
from django.urls import reverse
from django.utils.html import escape

from evalapp import adjudication as adj
from evalapp.models import Rating, Response, Score, Study
from modelserver.models import PlaygroundRequest
from raters import services
from raters.models import Role, StudyMembership

from .factories import ArmFactory, MembershipFactory, PromptFactory, RatingFactory, ResponseFactory, UserFactory

pytestmark = pytest.mark.django_db

# Every hostile payload, in one place.
PAYLOADS = {
    "script": "<script>alert('xss')</script>",
    "img_onerror": '<img src=x onerror="alert(1)">',
    "attribute_break": '" autofocus onfocus="alert(1)" x="',
    "markdown_link": "[click here](javascript:alert(1))",
    "javascript_url": "javascript:alert(document.cookie)",
    "svg": "<svg/onload=alert(1)>",
    "closing_tags": "</textarea></title></script><b>bold</b>",
    "template": "{{ request.user.password }} {% debug %}",
    "control": "bell\x07 escape\x1b[31m vtab\x0b formfeed\x0c delete\x7f",
    "rtl_override": "invoice\u202egnp.exe \u2066isolate\u2069",
    "formula": '=HYPERLINK("http://evil.example","x")',
}
HOSTILE = " | ".join(PAYLOADS.values())
BIG = ("I have felt this way for years. " * 3200)[:100_000] + "THE-END"
assert len(BIG) > 100_000

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
_BIDI = re.compile("[\u202a-\u202e\u2066-\u2069]")


@pytest.fixture
def hostile(db):
    owner = UserFactory(username="owner-researcher")
    study = Study.objects.create(owner=owner, title=HOSTILE[:200], description=HOSTILE, ratings_per_response=3)
    from evalapp.rubric_presets import preset
    from evalapp.models import Criterion

    Criterion.objects.bulk_create(Criterion.from_spec(study, i, spec)
                                  for i, spec in enumerate(preset("empatheval")["criteria"]))
    arms = [ArmFactory(study=study, label="ft " + PAYLOADS["script"]), ArmFactory(study=study, label="base")]
    prompts = [
        PromptFactory(study=study, external_id="p-hostile", topic=PAYLOADS["img_onerror"][:100],
                      messages=[{"role": "user", "content": "earlier " + HOSTILE},
                                {"role": "assistant", "content": "assistant " + HOSTILE},
                                {"role": "user", "content": "question " + HOSTILE}]),
        PromptFactory(study=study, external_id="p-big", messages=[{"role": "user", "content": "question " + HOSTILE}]),
    ]
    responses = [ResponseFactory(prompt=prompts[0], arm=arm, text="answer " + HOSTILE) for arm in arms]
    responses += [ResponseFactory(prompt=prompts[1], arm=arm, text=BIG + HOSTILE) for arm in arms]
    services.consent_publish(study=study, text="Consent " + HOSTILE, withdrawal_policy="exclude")

    rater = MembershipFactory(study=study, user=UserFactory(username="rater-live"), role=Role.RATER,
                              pseudonym="R" + PAYLOADS["svg"]).user
    services.consent_accept(study=study, user=rater, version=study.consent_versions.first())
    # Usernames a form would refuse can still arrive through a study archive.
    odd = get_user_model().objects.create(username="u" + PAYLOADS["script"][:100])
    graders = [MembershipFactory(study=study, user=u, role=Role.RATER, pseudonym=f"P{i}{PAYLOADS['attribute_break']}").user
               for i, u in enumerate([odd, UserFactory(username="grader-2"), UserFactory(username="grader-3")])]
    for grader, empathy in zip(graders, [1, 5, 10], strict=True):
        services.consent_accept(study=study, user=grader, version=study.consent_versions.first())
        services.calibration_decide(study=study, rater=grader, approve=True)
        # The last response lacks one rating: the live rater's to give.
        for response in responses if grader != graders[-1] else responses[:-1]:
            rating = RatingFactory(response=response, rater=grader, empathy=empathy, fluency=5,
                                   unsafe=True, unsafe_category="harmful", comment="comment " + HOSTILE)
            Score.objects.filter(rating=rating).update(rationale="because " + HOSTILE)
    # Whole cells a spreadsheet would run: every prefix OWASP names.
    for prefix, rating in zip(FORMULA_PREFIXES, Rating.objects.order_by("id"), strict=False):
        Rating.objects.filter(pk=rating.pk).update(comment=prefix + PAYLOADS["formula"].lstrip("="))
    services.calibration_decide(study=study, rater=rater, approve=True)
    services.study_open_for_rating(study=study)
    adjudicator = MembershipFactory(study=study, user=UserFactory(username="adj-live"), role=Role.ADJUDICATOR).user
    adj.adjudication_resolve(study=study, response=responses[1], scale="empathy", adjudicator=adjudicator,
                             final_score=5, rationale="decided " + HOSTILE)
    adj.safety_review_submit(study=study, response=responses[1], adjudicator=adjudicator, classification="harmful",
                             note="note " + HOSTILE, exclude=True, exclusion_reason="excluded " + HOSTILE[:400])
    playground = PlaygroundRequest.objects.create(
        study=study, created_by=owner, messages=[{"role": "user", "content": "try " + HOSTILE}], status="succeeded",
        outputs=[{"arm_id": arm.id, "label": arm.label, "text": "out " + HOSTILE, "output_tokens": 3, "seconds": 1.0}
                 for arm in arms])
    failed = PlaygroundRequest.objects.create(study=study, created_by=owner, messages=[{"role": "user", "content": "x"}],
                                              status="failed", error="error " + HOSTILE)
    staff = get_user_model().objects.create_superuser("staff-admin", "staff@lab.example", "pw-for-tests")
    return {"study": study, "owner": owner, "rater": rater, "adjudicator": adjudicator, "staff": staff,
            "responses": responses, "playground": playground, "failed": failed, "arms": arms}


def assert_inert(html: str, where: str) -> None:
    """Parsed as a browser parses it: nothing in the page runs that the site did not put there."""
    doc = lxml.html.document_fromstring(html)
    for script in doc.iter("script"):
        assert script.get("src") and not (script.text or "").strip(), (where, lxml.html.tostring(script)[:200])
    for element in doc.iter():
        if not isinstance(element.tag, str):
            continue
        for name, value in element.attrib.items():
            assert not name.lower().startswith("on"), (where, element.tag, name, value[:80])
            if name.lower() in ("href", "src", "action", "formaction", "xlink:href"):
                assert not re.sub(r"[\s\x00-\x1f]", "", value).lower().startswith("javascript:"), (where, value[:80])
    # The payload's own markup never became an element (the admin draws svg icons of its own, without text).
    assert not doc.xpath("//img[@src='x'] | //b[text()='bold'] | //svg[@onload]"), where


def shown(html: str, text: str) -> bool:
    """The text, escaped as the templates escape it (linebreaksbr and escape agree on these payloads)."""
    return escape(text) in html


def fetch(client, url, where, *, fetch_header=False):
    headers = {"X-Requested-With": "fetch"} if fetch_header else {}
    response = client.get(url, headers=headers)
    assert response.status_code == 200, (where, response.status_code)
    html = response.content.decode()
    assert_inert(html, where)
    return html


def test_the_payloads_are_escaped_and_whole_on_every_page(client, hostile):
    study, r = hostile["study"], hostile["responses"]
    sid = study.id

    client.force_login(hostile["rater"])
    assert client.post(reverse("consent", args=[sid]), {"version": study.consent_versions.first().id}).status_code in (200, 302)
    rate = fetch(client, reverse("rate", args=[sid]), "rate")
    # The 100 kB response reaches the rater whole.
    assert shown(rate, BIG + HOSTILE) and shown(rate, "question " + HOSTILE)
    assert PAYLOADS["script"] not in rate and "<img src=x" not in rate
    for page in ("study_list", "study_detail", "consent"):
        body = fetch(client, reverse(page, args=[] if page == "study_list" else [sid]), page)
        assert shown(body, study.title), page
    # The next item arrives as a fragment after a submit: escaped the same way.
    public_id = re.search(r'/rate/([\w-]+)/"', rate).group(1)
    submitted = client.post(reverse("rate_submit", args=[sid, public_id]),
                            {"score-empathy": 5, "score-fluency": 5, "comment": HOSTILE},
                            headers={"X-Requested-With": "fetch"})
    assert submitted.status_code == 200
    assert_inert(submitted.content.decode(), "rate fragment")
    assert Rating.objects.get(rater=hostile["rater"], response__public_id=public_id).comment == HOSTILE
    assert public_id == r[3].public_id

    client.force_login(hostile["adjudicator"])
    queues = fetch(client, reverse("adjudication_queues", args=[sid]), "adjudication queues")
    assert shown(queues, "question " + HOSTILE[:40]) or escape(PAYLOADS["img_onerror"]) in queues
    for response in r:
        item = fetch(client, reverse("adjudication_item", args=[sid, response.public_id]), "adjudication item")
        assert shown(item, response.text), "the response, whole"
        for message in response.prompt.messages:
            assert shown(item, message["content"]), message["role"]
        for part in ("comment ", "because "):
            assert shown(item, part + HOSTILE), part
        assert escape("R" + PAYLOADS["svg"]) in item or escape(f"P0{PAYLOADS['attribute_break']}") in item
    settled = fetch(client, reverse("adjudication_item", args=[sid, r[1].public_id]), "safety")
    assert shown(settled, "excluded " + HOSTILE[:400])
    fetch(client, reverse("adjudication_history", args=[sid]), "adjudication history")

    client.force_login(hostile["owner"])
    detail = fetch(client, reverse("study_detail", args=[sid]), "study page (researcher)")
    assert shown(detail, study.title) and shown(detail, HOSTILE)
    for name, args in [("generation_runs_fragment", [sid]), ("training_runs_fragment", [sid]), ("raters_page", [sid]),
                       ("playground", [sid]), ("results", [sid]), ("study_researchers", [sid])]:
        fetch(client, reverse(name, args=args), name)
    for item in (hostile["playground"], hostile["failed"]):
        page = fetch(client, reverse("playground_item", args=[sid, item.id]), "playground item")
        fragment = fetch(client, reverse("playground_item", args=[sid, item.id]), "playground fragment", fetch_header=True)
        expected = "out " + HOSTILE if item.outputs else "error " + HOSTILE
        assert shown(page, expected) and shown(fragment, expected)
    results = fetch(client, reverse("results", args=[sid]), "results")
    assert escape(hostile["arms"][0].label) in results

    client.force_login(hostile["staff"])
    for model, obj in [("study", study), ("prompt", r[0].prompt), ("response", r[0]), ("rating", Rating.objects.first()),
                       ("arm", hostile["arms"][0]), ("auditevent", study.audit_events.first()),
                       ("adjudication", r[1].adjudications.first())]:
        app = "evalapp"
        listing = fetch(client, reverse(f"admin:{app}_{model}_changelist"), f"admin {model} list")
        change = fetch(client, reverse(f"admin:{app}_{model}_change", args=[obj.pk]), f"admin {model} page")
        assert listing and change
    membership = StudyMembership.objects.filter(study=study).first()
    fetch(client, reverse("admin:raters_studymembership_changelist"), "admin memberships")
    fetch(client, reverse("admin:raters_studymembership_change", args=[membership.pk]), "admin membership")
    users = fetch(client, reverse("admin:auth_user_changelist"), "admin users")
    assert escape("u" + PAYLOADS["script"][:100]) in users


def test_direction_overrides_stay_inside_their_element():
    """The decision above, checked: every element that shows typed or generated text isolates its direction."""
    with open(finders.find("evalapp/site.css"), encoding="utf-8") as handle:
        css = re.sub(r"/\*.*?\*/", "", handle.read(), flags=re.S)
    rule = re.search(r"([^{}]+)\{[^}]*unicode-bidi:\s*isolate[^}]*\}", css)
    assert rule, "site.css isolates the direction of shown text"
    selectors = {s.strip() for s in rule.group(1).split(",")}
    for selector in ("span", "a", "small", "td", "li", "p", "h1", ".turn", ".response-box", ".pre-wrap", ".rationale"):
        assert selector in selectors, selector


def test_exports_keep_the_text_whole_and_neutralise_formulas(client, hostile):
    study = hostile["study"]
    client.force_login(hostile["owner"])
    for name in ("ratings", "responses", "audit"):
        response = client.get(reverse("export_csv", args=[study.id, name]))
        assert response.status_code == 200, name
        text = b"".join(response.streaming_content).decode()
        rows = list(csv.reader(io.StringIO(text)))
        cells = [cell for row in rows[1:] for cell in row]
        assert cells, name
        for cell in cells:
            assert not cell.startswith(FORMULA_PREFIXES), (name, cell[:60])
        if name == "responses":
            assert any(cell.endswith(BIG + HOSTILE) for cell in cells), "the 100 kB response, whole"
        if name == "ratings":
            assert any(HOSTILE in cell for cell in cells) and any(_BIDI.search(cell) for cell in cells)
            for prefix in FORMULA_PREFIXES:  # neutralised, not dropped: the quote goes in front, the text stays
                assert "'" + prefix + PAYLOADS["formula"].lstrip("=") in cells, repr(prefix)
    bundle = client.get(reverse("export_zip", args=[study.id]))
    assert bundle.status_code == 200
    with zipfile.ZipFile(io.BytesIO(b"".join(bundle.streaming_content) if bundle.streaming else bundle.content)) as z:
        for member in z.namelist():
            if member.endswith(".csv"):
                for row in list(csv.reader(io.StringIO(z.read(member).decode())))[1:]:
                    for cell in row:
                        assert not cell.startswith(FORMULA_PREFIXES), (member, cell[:60])


def test_the_api_returns_the_text_as_stored(hostile):
    from rest_framework.test import APIClient

    api = APIClient()
    api.force_authenticate(hostile["owner"])
    study = hostile["study"]
    body = api.get(reverse("api_prompts", kwargs={"study_id": study.id})).json()
    assert any(m["content"] == "question " + HOSTILE for p in body["results"] for m in p["messages"])
    assert api.get(reverse("api_study", kwargs={"study_id": study.id})).json()["description"] == HOSTILE
    assert Response.objects.filter(text=BIG + HOSTILE).count() == 2
