"""The researcher's judges page and its API: add a judge of each kind from the site's lists only, run it
(eagerly, a tiny random model as the local judge), one run for a double click, resume a failed run, who
may see it, and the read-only API."""

import re

import pytest
from django.urls import reverse

from modelserver import judge_services
from modelserver.judge_services import current_templates
from modelserver.models import SAFETY_KEY, Judge, JudgeAnswer, JudgeRun, RunStatus
from raters import services as rater_services

from ..factories import ArmFactory, PromptFactory, ResponseFactory
from ..modelserver.conftest import build_tiny_model, build_tiny_tokenizer
from ..modelserver.workerlike import like_a_worker  # noqa: F401 (the fixture)

pytestmark = pytest.mark.django_db

N_RESPONSES = 6  # 3 prompts x 2 arms


@pytest.fixture(scope="session")
def judge_model_dir(tmp_path_factory):
    """A random 2-layer Llama saved as a local model directory (the one tests/modelserver builds)."""
    d = tmp_path_factory.mktemp("tiny-judge")
    tokenizer = build_tiny_tokenizer()
    build_tiny_model(tokenizer, eos_boost=1.5).save_pretrained(d)
    tokenizer.save_pretrained(d)
    return str(d)


@pytest.fixture
def judged_study(study, judge_model_dir, settings):
    settings.JUDGE_LOCAL_MODELS = [judge_model_dir]
    # Port 9 (discard): nothing here calls it; an HTTP judge is only added, never run.
    settings.JUDGE_ENDPOINTS = {"lab": {"url": "http://127.0.0.1:9", "model": "served-model"}}
    arms = [ArmFactory(study=study, label=label, base_model="bundled") for label in ("fine-tuned", "baseline")]
    for prompt in PromptFactory.create_batch(N_RESPONSES // 2, study=study):
        for arm in arms:
            ResponseFactory(prompt=prompt, arm=arm, text=f"I hear you ({arm.label}, {prompt.external_id}).")
    return study


@pytest.fixture
def owner(client, researcher):
    client.force_login(researcher)
    return client


def local_judge(name="tiny", **extra):
    return {"name": name, "kind": "local", "local_model": extra.pop("model", ""), "safety": "on", "samples": 1,
            "temperature": 0, "batch_size": 2, "seed": 3, **extra}


def add(client, study, data):
    return client.post(reverse("judges", args=[study.id]), data)


def start(client, study, judge, mode="items", follow=False):
    return client.post(reverse("judge_run_start", args=[study.id, judge.id]), {"mode": mode}, follow=follow)


def page_text(client, study) -> str:
    response = client.get(reverse("judges", args=[study.id]))
    assert response.status_code == 200
    return response.content.decode()


def test_the_page_offers_only_the_sites_models_and_says_judges_are_not_ratings(owner, judged_study,
                                                                               judge_model_dir):
    html = page_text(owner, judged_study)
    assert "Judge answers never count as ratings and never reach raters." in html
    local = re.search(r'<select name="local_model"[^>]*>(.*?)</select>', html, re.S).group(1)
    endpoint = re.search(r'<select name="endpoint"[^>]*>(.*?)</select>', html, re.S).group(1)
    assert re.findall(r'value="([^"]*)"', local) == ["bundled", judge_model_dir]
    assert re.findall(r'value="([^"]*)"', endpoint) == ["lab"]
    # The URL behind an endpoint's name is the operator's: the page never shows or asks for it.
    assert "127.0.0.1:9" not in html and not re.search(r'<input[^>]*name="(local_model|endpoint|model)"', html)
    assert "No judges yet" in html
    study_page = owner.get(reverse("study_detail", args=[judged_study.id])).content.decode()
    assert reverse("judges", args=[judged_study.id]) in study_page


def test_a_judge_of_each_kind_is_added_and_listed(owner, judged_study, judge_model_dir):
    assert add(owner, judged_study, local_judge(model=judge_model_dir)).status_code == 302
    remote = {"name": "remote", "kind": "http", "endpoint": "lab", "samples": 2, "temperature": 0.7,
              "batch_size": 4, "seed": 0}  # the safety box unticked
    assert add(owner, judged_study, remote).status_code == 302
    tiny, lab = Judge.objects.filter(study=judged_study).order_by("id")
    assert (tiny.kind, tiny.model, tiny.safety, tiny.batch_size, tiny.seed) == ("local", judge_model_dir, True, 2, 3)
    assert (lab.kind, lab.model, lab.safety, lab.samples, lab.temperature) == ("http", "lab", False, 2, 0.7)
    assert tiny.templates == current_templates()
    html = page_text(owner, judged_study)
    assert "criterion: empatheval-criterion v1" in html and "Judge responses" in html
    assert "Judge pairs" not in html  # no pairwise phase
    assert html.count("No runs yet.") == 2


def test_what_is_refused_shows_on_the_form_and_writes_nothing(owner, judged_study, judge_model_dir):
    url = reverse("judges", args=[judged_study.id])
    # A model outside the list, whatever the kind: refused by the form before the service sees it.
    for data, message in ((local_judge(model="/home/someone/else"), "Select a valid choice"),
                          ({**local_judge(kind="http"), "endpoint": "http://evil.example"}, "Select a valid choice"),
                          (local_judge(model=""), "Pick one")):
        refused = owner.post(url, data)
        assert refused.status_code == 400 and message in refused.content.decode() and not Judge.objects.exists()
    # The service's own refusals: its message on the form, with its status.
    sampled = owner.post(url, local_judge(model="bundled", samples=3))
    assert sampled.status_code == 400 and "one sample at temperature 0" in sampled.content.decode()
    assert add(owner, judged_study, local_judge(model="bundled")).status_code == 302
    twice = add(owner, judged_study, local_judge(model=judge_model_dir))
    assert twice.status_code == 409 and "already has a judge named" in twice.content.decode()
    assert Judge.objects.count() == 1


def test_a_run_judges_every_response_and_the_page_follows_it(owner, judged_study, judge_model_dir,
                                                             like_a_worker,  # noqa: F811
                                                             django_capture_on_commit_callbacks):
    add(owner, judged_study, local_judge(model=judge_model_dir))
    judge = Judge.objects.get()
    with django_capture_on_commit_callbacks(execute=True):
        started = start(owner, judged_study, judge)
    assert started.status_code == 302
    run = JudgeRun.objects.get()
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.done == run.total == N_RESPONSES and run.mode == "items"
    questions = len(judged_study.rubric()) + 1  # and the safety question
    assert JudgeAnswer.objects.filter(judge=judge, run=run).count() == N_RESPONSES * questions
    assert JudgeAnswer.objects.filter(judge=judge, criterion=SAFETY_KEY).count() == N_RESPONSES
    html = page_text(owner, judged_study)
    assert f"queued: {N_RESPONSES} to judge (responses)" in html
    assert "Succeeded" in html and f"{N_RESPONSES} of {N_RESPONSES}" in html
    assert f'<td class="judge-answers">{N_RESPONSES * questions}</td>' in html
    fragment = owner.get(reverse("judges_fragment", args=[judged_study.id])).content.decode()
    assert 'data-active="false"' in fragment and "Succeeded" in fragment
    # A second run finds nothing missing and says so.
    again = start(owner, judged_study, judge, follow=True).content.decode()
    assert "Nothing to judge" in again and JudgeAnswer.objects.count() == N_RESPONSES * questions


def test_a_double_click_makes_one_run(owner, judged_study, judge_model_dir, django_capture_on_commit_callbacks):
    add(owner, judged_study, local_judge(model=judge_model_dir))
    judge = Judge.objects.get()
    with django_capture_on_commit_callbacks(execute=False) as queued:
        first = start(owner, judged_study, judge)
        second = start(owner, judged_study, judge, follow=True)
    assert first.status_code == 302 and second.status_code == 200
    assert JudgeRun.objects.count() == 1 and len(queued) == 1
    assert "A run of this judge is already queued or running." in second.content.decode()
    fragment = owner.get(reverse("judges_fragment", args=[judged_study.id])).content.decode()
    assert 'data-active="true"' in fragment and "Queued" in fragment and f"0 of {N_RESPONSES}" in fragment
    assert "Resume" not in fragment  # queued a moment ago: not abandoned


def test_a_failed_run_shows_its_error_and_resumes(owner, judged_study, judge_model_dir, like_a_worker,  # noqa: F811
                                                  django_capture_on_commit_callbacks, monkeypatch):
    add(owner, judged_study, local_judge(model=judge_model_dir))
    judge = Judge.objects.get()
    real, calls = judge_services._judge_texts, []

    def second_chunk_breaks(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("the judge's card fell over")
        return real(*args, **kwargs)

    monkeypatch.setattr(judge_services, "_judge_texts", second_chunk_breaks)
    with django_capture_on_commit_callbacks(execute=True):
        start(owner, judged_study, judge)
    run = JudgeRun.objects.get()
    assert run.status == RunStatus.FAILED and run.done < run.total
    html = page_text(owner, judged_study)
    resume_url = reverse("judge_run_resume", args=[judged_study.id, run.id])
    assert "the judge&#x27;s card fell over" in html and f'action="{resume_url}"' in html
    with django_capture_on_commit_callbacks(execute=True):
        resumed = owner.post(resume_url, follow=True)
    assert "queued again" in resumed.content.decode()
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED and run.done == run.total == N_RESPONSES
    # A run that succeeded is not resumed: the service's 409 is the page's message.
    refused = owner.post(resume_url, follow=True).content.decode()
    assert "Only a failed run" in refused


def test_pairs_are_offered_once_the_study_has_pairs(owner, judged_study, judge_model_dir, like_a_worker,  # noqa: F811
                                                    django_capture_on_commit_callbacks):
    add(owner, judged_study, local_judge(model=judge_model_dir))
    judge = Judge.objects.get()
    refused = start(owner, judged_study, judge, mode="pairs", follow=True).content.decode()
    assert "no pairwise phase" in refused and not JudgeRun.objects.exists()
    rater_services.consent_publish(study=judged_study, text="Research data.", withdrawal_policy="exclude")
    rater_services.pair_phase_save(study=judged_study, criteria=[{"key": "empathy", "question": "Which is kinder?"}],
                                   judgments_per_pair=1, gold_rate=0.0, reason="optional")
    rater_services.pair_phase_open(study=judged_study)
    assert "Judge pairs" in page_text(owner, judged_study)
    with django_capture_on_commit_callbacks(execute=True):
        start(owner, judged_study, judge, mode="pairs")
    run = JudgeRun.objects.get(mode="pairs")
    assert run.status == RunStatus.SUCCEEDED and run.total == N_RESPONSES // 2
    assert JudgeAnswer.objects.filter(run=run, pair__isnull=False).count() == N_RESPONSES  # 3 pairs, 2 orders


def test_a_rater_and_an_outsider_get_404(client, judged_study, judge_model_dir, rater, outsider, researcher,
                                         django_capture_on_commit_callbacks):
    judge = judge_services.judge_create(study=judged_study, user=researcher, name="j", kind="local", model="bundled")
    with django_capture_on_commit_callbacks(execute=False):
        run = judge_services.judge_run_create(judge=judge, user=researcher)
    sid = judged_study.id
    reads = [reverse("judges", args=[sid]), reverse("judges_fragment", args=[sid]), reverse("api_judges", args=[sid])]
    writes = [(reverse("judges", args=[sid]), local_judge(model="bundled", name="theirs")),
              (reverse("judge_run_start", args=[sid, judge.id]), {"mode": "items"}),
              (reverse("judge_run_resume", args=[sid, run.id]), {})]
    for user in (rater, outsider):
        client.force_login(user)
        assert [client.get(url).status_code for url in reads] == [404] * len(reads)
        assert [client.post(url, data).status_code for url, data in writes] == [404] * len(writes)
    assert list(Judge.objects.values_list("name", flat=True)) == ["j"] and JudgeRun.objects.count() == 1


def test_the_api_lists_judges_with_their_runs(owner, judged_study, judge_model_dir, researcher,
                                              django_capture_on_commit_callbacks):
    judge = judge_services.judge_create(study=judged_study, user=researcher, name="tiny", kind="local",
                                        model=judge_model_dir, safety=False)
    judge_services.judge_create(study=judged_study, user=researcher, name="remote", kind="http", model="lab")
    with django_capture_on_commit_callbacks(execute=False):
        run = judge_services.judge_run_create(judge=judge, user=researcher)
    url = reverse("api_judges", args=[judged_study.id])
    body = owner.get(url).json()
    assert body["count"] == 2
    tiny, remote = body["results"]
    assert (tiny["name"], tiny["kind"], tiny["model"], tiny["safety"], tiny["n_answers"]) == (
        "tiny", "local", judge_model_dir, False, 0)
    assert tiny["templates"] == current_templates()
    assert [(r["id"], r["mode"], r["status"], r["done"], r["total"]) for r in tiny["runs"]] == [
        (run.id, "items", "queued", 0, N_RESPONSES)]
    assert (remote["kind"], remote["model"], remote["runs"]) == ("http", "lab", [])
    # Read-only, and strict about its query as every endpoint is.
    assert owner.post(url, {}).status_code == 405
    assert owner.get(url, {"ordering": "name"}).status_code == 400
