"""What leaves the server about raters: pseudonyms only, a withdrawal's policy in every file, every
download audited with who made it.

The study archive (`manage.py study_export`) is deliberately not covered: it moves a study between
servers run by the same researchers and carries the accounts (e-mail included, never a password) so the
copy works; it is an operator's command, audited by evalapp.archive.writer, not a download.
"""

import csv
import io
import json
import zipfile

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from evalapp.exports.tables import EXPORTS
from evalapp.models import AuditEvent
from modelserver.models import GenerationRun
from raters import services as rs
from raters.models import Role
from raters.selectors import next_item
from raters.services import Submission

from ..factories import ArmFactory, MembershipFactory, PromptFactory, ResponseFactory, UserFactory
from .test_study_archive import full_study  # noqa: F401  (the fixture: a study that has been through everything)
from .test_pair_results import hand  # noqa: F401  (a study with a pairwise phase judged by three raters)

pytestmark = pytest.mark.django_db
User = get_user_model()


def body(response) -> bytes:
    assert response.status_code == 200, (response.status_code, response.content[:300])
    return b"".join(response.streaming_content) if response.streaming else response.content


def everything_exported(client, study) -> dict[str, str]:
    """Every export a researcher can download, by page and by API, and every API list and detail."""
    out = {}
    for name in EXPORTS:
        out[f"{name}.csv"] = body(client.get(reverse("export_csv", args=[study.id, name]))).decode()
        out[f"api {name}.csv"] = body(client.get(reverse("api_export", args=[study.id, name]))).decode()
    with zipfile.ZipFile(io.BytesIO(body(client.get(reverse("export_zip", args=[study.id]))))) as bundle:
        for member in bundle.namelist():
            out[f"zip {member}"] = bundle.read(member).decode()
    for name in ("api_studies", "api_presets"):
        out[name] = body(client.get(reverse(name))).decode()
    for name in ("api_study", "api_study_rubric", "api_prompts", "api_arms", "api_generation_runs",
                 "api_adjudications", "api_results"):
        out[name] = body(client.get(reverse(name, args=[study.id]))).decode()
    for run in GenerationRun.objects.filter(study=study):
        out[f"run {run.id}"] = body(client.get(reverse("api_generation_run", args=[study.id, run.id]))).decode()
    out["results.json"] = body(client.get(reverse("results_json", args=[study.id]))).decode()
    out["preferences.jsonl"] = body(client.get(reverse("export_preferences", args=[study.id]))).decode()
    out["pairwise.json"] = body(client.get(reverse("pairwise_results_json", args=[study.id]))).decode()
    out["api_pairwise_results"] = body(client.get(reverse("api_pairwise_results", args=[study.id]))).decode()
    return out


def test_no_export_or_api_answer_names_a_rater_by_e_mail(client, full_study, researcher):  # noqa: F811
    # Accounts named by their e-mail address, as people who accept an invitation often choose.
    members = User.objects.filter(memberships__study=full_study).exclude(id=researcher.id).distinct()
    for user in members:
        user.email = user.email or f"{user.username}@mail.example"
        user.username = user.email
        user.save()
    secrets_ = {u.email.lower() for u in members} | {"new@uni.example"}  # the open invitation's too
    assert len(secrets_) >= 6
    client.force_login(researcher)
    exported = everything_exported(client, full_study)
    for where, text in exported.items():
        for address in secrets_:
            assert address not in text.lower(), f"{address} leaks in {where}"
    # The raters are there, by pseudonym.
    pseudonyms = set(full_study.memberships.filter(role=Role.RATER).values_list("pseudonym", flat=True))
    ratings = list(csv.DictReader(io.StringIO(exported["ratings.csv"])))
    assert {r["rater"] for r in ratings} <= pseudonyms and len({r["rater"] for r in ratings}) == 3
    audit = list(csv.DictReader(io.StringIO(exported["audit.csv"])))
    assert {"rating.revise", "rater.withdraw"} <= {a["action"] for a in audit}
    assert {a["actor"] for a in audit if a["action"] == "rating.revise"} <= pseudonyms


@pytest.fixture
def withdrawn(study, researcher):
    """bob rated everything and revised one rating, then withdrew; erin rated everything and stays."""
    arms = [ArmFactory(study=study, label="fine-tuned"), ArmFactory(study=study, label="baseline")]
    for prompt in PromptFactory.create_batch(3, study=study):
        for arm in arms:
            ResponseFactory(prompt=prompt, arm=arm)
    study.ratings_per_response = 2
    study.save()
    raters = [MembershipFactory(study=study, user=UserFactory(username=f"{n}@uni.example"), role=Role.RATER).user
              for n in ("bob", "erin")]

    def make(policy):
        version = rs.consent_publish(study=study, text="Your ratings are research data.", withdrawal_policy=policy)
        for rater in raters:
            rs.consent_accept(study=study, user=rater, version=version)
        rs.study_open_for_rating(study=study)
        study.refresh_from_db()
        for rater in raters:
            while (slot := next_item(study=study, rater=rater).assignment) is not None:
                rs.rating_submit(study=study, rater=rater, item_public_id=slot.response.public_id,
                                 submission=Submission({"empathy": 3 if rater is raters[0] else 6, "fluency": 7},
                                                       comment="bob's words" if rater is raters[0] else ""))
        first = raters[0].ratings.first().response.public_id
        rs.rating_submit(study=study, rater=raters[0], item_public_id=first,
                         submission=Submission({"empathy": 4, "fluency": 4}, comment="bob's second thoughts"))
        assert rs.consent_withdraw(study=study, user=raters[0]) == policy
        return {m.user.username: m.pseudonym for m in study.memberships.filter(role=Role.RATER)}

    return make


@pytest.mark.parametrize("policy", ["exclude", "delete"])
def test_a_withdrawn_raters_data_follows_the_policy_in_every_file(client, researcher, study, withdrawn, policy):
    pseudonym = withdrawn(policy)
    bob, erin = pseudonym["bob@uni.example"], pseudonym["erin@uni.example"]
    client.force_login(researcher)
    exported = everything_exported(client, study)
    for where in [w for w in exported if w.endswith("ratings.csv")]:
        rows = list(csv.DictReader(io.StringIO(exported[where])))
        assert {r["rater"] for r in rows if r["excluded"] == "0"} == {erin}, where
        bobs = [r for r in rows if r["rater"] == bob]
        if policy == "exclude":  # kept, every row marked
            assert len(bobs) == 12 and all(r["excluded"] == "1" and r["exclusion_reasons"] == "rater withdrew"
                                           for r in bobs), where
        else:
            assert bobs == [], where
    for where, text in exported.items():
        # What bob wrote: kept (excluded) under "exclude", gone from every file, the audit trail included, under "delete".
        kept = policy == "exclude" and where.endswith(("ratings.csv", "audit.csv"))
        assert ("bob's second thoughts" in text) == kept and ("bob's words" in text) == kept, where
    results = json.loads(exported["api_results"])
    assert json.dumps(results).count(bob) == 0
    audit = list(csv.DictReader(io.StringIO(exported["audit.csv"])))
    withdrawal = next(a for a in audit if a["action"] == "rater.withdraw")
    assert withdrawal["actor"] == bob and json.loads(withdrawal["after_json"])["policy"] == policy
    revisions = [a for a in audit if a["action"] == "rating.revise"]
    assert len(revisions) == 1 and revisions[0]["actor"] == bob  # who and when stay: the trail is whole


def test_every_download_is_audited_with_who_made_it(client, researcher, study, withdrawn):
    withdrawn("exclude")
    co = UserFactory(username="carol")
    MembershipFactory(study=study, user=co, role=Role.RESEARCHER, pseudonym="")
    before = AuditEvent.objects.filter(action__startswith="export.").count()
    client.force_login(co)
    exported = everything_exported(client, study)
    events = list(AuditEvent.objects.filter(action__startswith="export.").order_by("id")[before:])
    files = [e.after["file"] for e in events]
    assert sorted(files) == sorted([f"{n}.csv" for n in EXPORTS] * 2 + ["export.zip", "preferences.jsonl"])
    assert {e.actor_id for e in events} == {co.id} and {e.study_id for e in events} == {study.id}
    # The trail a download carries names the downloads before it, and who made them.
    audit = list(csv.DictReader(io.StringIO(exported["zip audit.csv"])))
    assert [a["actor"] for a in audit if a["action"] == "export.zip"] == ["carol"]


def test_the_pairwise_files_name_raters_by_pseudonym_only(client, hand, researcher):  # noqa: F811
    study, raters = hand
    for user in raters:
        user.email = user.username = f"{user.username}@mail.example"
        user.save()
    client.force_login(researcher)
    exported = everything_exported(client, study)
    for where, text in exported.items():
        for user in raters:
            assert user.email not in text.lower(), f"{user.email} leaks in {where}"
    pseudonyms = set(study.memberships.filter(role=Role.RATER).values_list("pseudonym", flat=True))
    for where in ("pair_judgments.csv", "api pair_judgments.csv", "zip pair_judgments.csv"):
        rows = list(csv.DictReader(io.StringIO(exported[where])))
        assert len(rows) == 36 and {r["rater"] for r in rows} == pseudonyms, where
    assert len(exported["preferences.jsonl"].splitlines()) == 10
