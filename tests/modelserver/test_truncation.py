"""Replies cut at the token limit: the share per arm, and regenerating them with a larger limit."""

import pytest
from django.urls import reverse

from evalapp.errors import ServiceError
from evalapp.models import AuditEvent, Response, Study
from modelserver import truncation
from modelserver.models import GenerationRun, RunStatus
from modelserver.services import generation_run_create
from modelserver.truncation import MAX_NEW_TOKENS_CAP, regenerate_truncated, truncation_by_arm
from raters.models import Assignment

from ..factories import ArmFactory, PromptFactory, RatingFactory, ResponseFactory
from .workerlike import like_a_worker  # noqa: F401

pytestmark = pytest.mark.django_db


def cut(limit=96, run_seed=7):
    return {"finish_reason": "length", "params": {"max_new_tokens": limit}, "run_seed": run_seed, "batch_size": 8}


def ended(limit=96, run_seed=7):
    return {"finish_reason": "stop", "params": {"max_new_tokens": limit}, "run_seed": run_seed, "batch_size": 8}


@pytest.fixture
def made_by_hand(study):
    """Four prompts; "fine-tuned" has 3 of 4 replies cut, "baseline" 1 of 4, "empty" no responses."""
    prompts = PromptFactory.create_batch(4, study=study)
    tuned = ArmFactory(study=study, label="fine-tuned", generation_params={"max_new_tokens": 96})
    base = ArmFactory(study=study, label="baseline", generation_params={"max_new_tokens": 96})
    ArmFactory(study=study, label="empty")
    for i, prompt in enumerate(prompts):
        ResponseFactory(prompt=prompt, arm=tuned, provenance=cut() if i < 3 else ended())
        ResponseFactory(prompt=prompt, arm=base, provenance=cut() if i == 0 else ended())
    return {"study": study, "tuned": tuned, "base": base, "prompts": prompts}


def test_share_per_arm_is_counted_from_the_provenance(made_by_hand, django_assert_max_num_queries):
    study = made_by_hand["study"]
    # A response without the key (made before finish_reason was recorded) counts, but not as cut.
    ResponseFactory(prompt=PromptFactory(study=study), arm=made_by_hand["base"], provenance={"seed": 1})
    with django_assert_max_num_queries(2):
        rows = {row["label"]: row for row in truncation_by_arm(study)}
    assert list(rows) == ["fine-tuned", "baseline", "empty"]
    tuned, base, empty = rows["fine-tuned"], rows["baseline"], rows["empty"]
    assert (tuned["n_responses"], tuned["n_length"], tuned["share"], tuned["percent"]) == (4, 3, 0.75, 75)
    assert (base["n_responses"], base["n_length"], base["share"], base["percent"]) == (5, 1, 0.2, 20)
    assert (empty["n_responses"], empty["n_length"], empty["share"]) == (0, 0, 0.0)
    assert tuned["arm_id"] == made_by_hand["tuned"].id
    assert tuned["max_new_tokens_seen"] == [96] and empty["max_new_tokens_seen"] == []
    assert tuned["current_max_new_tokens"] == 96 and tuned["suggested_max_new_tokens"] == 192
    assert tuned["can_regenerate"] and not empty["can_regenerate"]


def test_share_on_an_open_study_offers_no_regeneration(made_by_hand):
    study = made_by_hand["study"]
    Study.objects.filter(id=study.id).update(status=Study.Status.RATING)
    study.refresh_from_db()
    rows = truncation_by_arm(study)
    assert rows[0]["n_length"] == 3 and not any(row["can_regenerate"] for row in rows)


def test_regenerate_deletes_only_that_arms_cut_replies_and_queues_a_run(made_by_hand, researcher):
    study, tuned, base = made_by_hand["study"], made_by_hand["tuned"], made_by_hand["base"]
    kept = set(Response.objects.exclude(arm=tuned, provenance__finish_reason="length").values_list("id", flat=True))
    gone = list(Response.objects.filter(arm=tuned, provenance__finish_reason="length").values_list("public_id", flat=True))

    run = regenerate_truncated(study=study, user=researcher, arm=tuned, max_new_tokens=300)

    assert set(Response.objects.values_list("id", flat=True)) == kept
    assert Response.objects.filter(arm=base, provenance__finish_reason="length").count() == 1
    run.refresh_from_db()
    assert run.status == RunStatus.QUEUED and run.generation_params == {"max_new_tokens": 300}
    assert list(run.arms.all()) == [tuned]
    assert (run.seed, run.batch_size, run.samples_per_prompt, run.total) == (7, 8, 1, 4)
    event = AuditEvent.objects.get(study=study, action="responses.regenerate_cut")
    assert event.object_id == str(run.id) and event.actor == researcher
    assert event.before == {"arm": tuned.id, "max_new_tokens": 96, "responses": gone}
    assert event.after == {"arm": tuned.id, "max_new_tokens": 300, "generation_run": run.id}


@pytest.mark.parametrize("limit, words", [(96, "larger than the current limit of 96"),
                                          (50, "larger than the current limit of 96"),
                                          (MAX_NEW_TOKENS_CAP + 1, f"at most {MAX_NEW_TOKENS_CAP}")])
def test_a_limit_not_larger_or_above_the_cap_is_refused(made_by_hand, researcher, limit, words):
    with pytest.raises(ServiceError, match=words) as caught:
        regenerate_truncated(study=made_by_hand["study"], user=researcher, arm=made_by_hand["tuned"],
                             max_new_tokens=limit)
    assert caught.value.status == 400
    assert Response.objects.count() == 8 and not GenerationRun.objects.exists()


def test_the_current_limit_is_the_largest_one_that_cut_a_reply(made_by_hand, researcher):
    tuned = made_by_hand["tuned"]
    Response.objects.filter(arm=tuned, provenance__finish_reason="length").first().delete()
    ResponseFactory(prompt=made_by_hand["prompts"][0], arm=tuned, provenance=cut(limit=400))
    with pytest.raises(ServiceError, match="current limit of 400"):
        regenerate_truncated(study=made_by_hand["study"], user=researcher, arm=tuned, max_new_tokens=300)


@pytest.mark.parametrize("status", [Study.Status.RATING, Study.Status.ADJUDICATING, Study.Status.CLOSED])
def test_refused_once_the_study_is_open(made_by_hand, researcher, status):
    study = made_by_hand["study"]
    Study.objects.filter(id=study.id).update(status=status)
    with pytest.raises(ServiceError, match="before it opens for rating") as caught:
        regenerate_truncated(study=study, user=researcher, arm=made_by_hand["tuned"], max_new_tokens=300)
    assert caught.value.status == 409
    assert Response.objects.count() == 8 and not GenerationRun.objects.exists()


def test_allowed_while_generating(made_by_hand, researcher):
    study = made_by_hand["study"]
    Study.objects.filter(id=study.id).update(status=Study.Status.GENERATING)
    regenerate_truncated(study=study, user=researcher, arm=made_by_hand["tuned"], max_new_tokens=300)
    assert Response.objects.count() == 5


@pytest.mark.parametrize("what", ["rating", "assignment"])
def test_refused_when_a_cut_reply_is_rated_or_assigned(made_by_hand, researcher, rater, what):
    study, tuned = made_by_hand["study"], made_by_hand["tuned"]
    response = Response.objects.filter(arm=tuned, provenance__finish_reason="length").last()
    if what == "rating":
        RatingFactory(response=response, rater=rater)
    else:
        Assignment.objects.create(study=study, rater=rater, position=0, response=response, design_seed=1)
    with pytest.raises(ServiceError, match="already rated or assigned") as caught:
        regenerate_truncated(study=study, user=researcher, arm=tuned, max_new_tokens=300)
    assert caught.value.status == 409
    assert Response.objects.count() == 8 and not GenerationRun.objects.exists()


def test_refused_while_a_run_is_active_or_when_nothing_is_cut(made_by_hand, researcher):
    study = made_by_hand["study"]
    empty = study.arms.get(label="empty")
    with pytest.raises(ServiceError, match="no replies cut") as caught:
        regenerate_truncated(study=study, user=researcher, arm=empty, max_new_tokens=300)
    assert caught.value.status == 409
    GenerationRun.objects.create(study=study, created_by=researcher, total=1)
    with pytest.raises(ServiceError, match="already queued or running") as caught:
        regenerate_truncated(study=study, user=researcher, arm=made_by_hand["tuned"], max_new_tokens=300)
    assert caught.value.status == 409 and Response.objects.count() == 8


def test_an_arm_of_another_study_is_refused(made_by_hand, researcher):
    other = ArmFactory(label="elsewhere")
    with pytest.raises(ServiceError, match="does not belong"):
        regenerate_truncated(study=made_by_hand["study"], user=researcher, arm=other, max_new_tokens=300)


def test_a_failure_after_the_delete_leaves_everything_as_it_was(made_by_hand, researcher, monkeypatch):
    def broken(**kwargs):
        raise RuntimeError("audit table unavailable")

    monkeypatch.setattr(truncation, "audit", broken)
    before = set(Response.objects.values_list("id", flat=True))
    with pytest.raises(RuntimeError):
        regenerate_truncated(study=made_by_hand["study"], user=researcher, arm=made_by_hand["tuned"],
                             max_new_tokens=300)
    assert set(Response.objects.values_list("id", flat=True)) == before
    assert not GenerationRun.objects.exists()


# ----------------------------------------------------------------------------- with the tiny model


@pytest.fixture
def tiny_cut_study(study, tiny_model_dir, tiny_adapter_dir):
    """Arms of the tiny random model with a limit so small that most replies are cut."""
    PromptFactory.create_batch(6, study=study)
    params = {"max_new_tokens": 3, "temperature": 0.8, "top_p": 0.95, "repetition_penalty": 1.1, "do_sample": True}
    ArmFactory(study=study, label="fine-tuned", base_model=str(tiny_model_dir), adapter=str(tiny_adapter_dir),
               generation_params=params)
    ArmFactory(study=study, label="baseline", base_model=str(tiny_model_dir), adapter="", generation_params=params)
    return study


@pytest.mark.usefixtures("like_a_worker")
def test_regenerated_replies_are_written_with_the_larger_limit(tiny_cut_study, researcher,
                                                               django_capture_on_commit_callbacks):
    study = tiny_cut_study
    with django_capture_on_commit_callbacks(execute=True):
        first = generation_run_create(study=study, user=researcher, seed=11, batch_size=4)
    first.refresh_from_db()
    assert first.status == RunStatus.SUCCEEDED, first.error
    baseline = study.arms.get(label="baseline")
    rows = {row["label"]: row for row in truncation_by_arm(study)}
    n_cut = rows["baseline"]["n_length"]
    assert n_cut > 0, "the tiny model should run past 3 tokens on some prompts"
    assert rows["baseline"]["max_new_tokens_seen"] == [3]
    untouched = dict(Response.objects.exclude(arm=baseline, provenance__finish_reason="length")
                     .values_list("id", "text"))
    old = {(r.prompt_id, r.sample_index): r for r in
           Response.objects.filter(arm=baseline, provenance__finish_reason="length")}

    with django_capture_on_commit_callbacks(execute=True):
        run = regenerate_truncated(study=study, user=researcher, arm=baseline, max_new_tokens=40)
    run.refresh_from_db()

    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.done == run.total == 6 and run.seed == 11 and run.generation_params == {"max_new_tokens": 40}
    assert dict(Response.objects.filter(id__in=untouched).values_list("id", "text")) == untouched
    new = Response.objects.filter(arm=baseline, provenance__generation_run=run.id)
    assert new.count() == n_cut
    for response in new:
        provenance = response.provenance
        assert provenance["params"]["max_new_tokens"] == 40
        assert provenance["run_generation_params"] == {"max_new_tokens": 40}
        assert provenance["seed"] == old[(response.prompt_id, response.sample_index)].provenance["seed"]
        assert provenance["output_tokens"] > 3 or provenance["finish_reason"] == "stop"
    assert Response.objects.filter(arm=baseline).count() == 6
    after = {row["label"]: row for row in truncation_by_arm(study)}
    assert after["baseline"]["n_length"] < n_cut or after["baseline"]["max_new_tokens_seen"] == [3, 40]
    assert after["fine-tuned"] == rows["fine-tuned"]


@pytest.mark.usefixtures("like_a_worker")
def test_a_failed_regeneration_resumes_with_its_larger_limit(tiny_cut_study, researcher, monkeypatch,
                                                             django_capture_on_commit_callbacks):
    from modelserver import services
    from modelserver.inference import generation

    study = tiny_cut_study
    with django_capture_on_commit_callbacks(execute=True):
        generation_run_create(study=study, user=researcher, batch_size=4)
    baseline = study.arms.get(label="baseline")
    n_cut = Response.objects.filter(arm=baseline, provenance__finish_reason="length").count()
    assert n_cut

    real_generate = generation.generate

    def down(*args, **kwargs):
        raise RuntimeError("device fell over")

    monkeypatch.setattr(generation, "generate", down)
    with django_capture_on_commit_callbacks(execute=True):
        run = regenerate_truncated(study=study, user=researcher, arm=baseline, max_new_tokens=30)
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and run.is_resumable
    assert Response.objects.filter(arm=baseline).count() == 6 - n_cut

    monkeypatch.setattr(generation, "generate", real_generate)
    with django_capture_on_commit_callbacks(execute=True):
        services.generation_run_resume(run=run)
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, run.error
    new = Response.objects.filter(arm=baseline, provenance__generation_run=run.id)
    assert new.count() == n_cut
    assert {r.provenance["params"]["max_new_tokens"] for r in new} == {30}


# ----------------------------------------------------------------------------- the page


def test_researcher_sees_the_share_and_regenerates_from_the_page(client, made_by_hand, researcher):
    study, tuned = made_by_hand["study"], made_by_hand["tuned"]
    client.force_login(researcher)
    content = client.get(reverse("study_detail", args=[study.id])).content.decode()
    url = reverse("generation_regenerate_truncated", args=[study.id, tuned.id])
    assert "3 of 4 (75%)" in content and "1 of 4 (25%)" in content
    assert 'id="truncation-warning"' in content and f'action="{url}"' in content

    response = client.post(url, {"max_new_tokens": 256}, follow=True)
    assert response.redirect_chain[-1] == (reverse("study_detail", args=[study.id]), 302)
    run = GenerationRun.objects.get(study=study)
    assert run.generation_params == {"max_new_tokens": 256}
    assert "max_new_tokens = 256" in response.content.decode()
    assert "max_new_tokens 256</span>" in response.content.decode()  # the run list says what the run set
    assert Response.objects.filter(arm=tuned).count() == 1


def test_a_refusal_comes_back_as_a_message(client, made_by_hand, researcher):
    study, tuned = made_by_hand["study"], made_by_hand["tuned"]
    client.force_login(researcher)
    url = reverse("generation_regenerate_truncated", args=[study.id, tuned.id])
    response = client.post(url, {"max_new_tokens": 64}, follow=True)
    assert "larger than the current limit of 96" in response.content.decode()
    response = client.post(url, {"max_new_tokens": "lots"}, follow=True)
    assert "max_new_tokens" in response.content.decode()
    assert Response.objects.count() == 8 and not GenerationRun.objects.exists()


def test_no_warning_when_nothing_is_cut(client, study, researcher):
    arm = ArmFactory(study=study, label="baseline")
    ResponseFactory(prompt=PromptFactory(study=study), arm=arm, provenance=ended())
    client.force_login(researcher)
    content = client.get(reverse("study_detail", args=[study.id])).content.decode()
    assert "0 of 1 (0%)" in content and 'id="truncation-warning"' not in content
    assert "generation_regenerate_truncated" not in content and "regenerate-truncated" not in content


@pytest.mark.parametrize("persona", ["rater", "adjudicator", "outsider"])
def test_only_researchers_may_regenerate(client, personas, made_by_hand, persona):
    study, tuned = made_by_hand["study"], made_by_hand["tuned"]
    client.force_login(personas[persona])
    assert "75%" not in client.get(reverse("study_detail", args=[study.id])).content.decode()
    url = reverse("generation_regenerate_truncated", args=[study.id, tuned.id])
    assert client.post(url, {"max_new_tokens": 256}).status_code == 404
    assert Response.objects.count() == 8 and not GenerationRun.objects.exists()


def test_an_arm_of_another_study_is_404(client, made_by_hand, researcher):
    other = ArmFactory(label="elsewhere")
    client.force_login(researcher)
    url = reverse("generation_regenerate_truncated", args=[made_by_hand["study"].id, other.id])
    assert client.post(url, {"max_new_tokens": 256}).status_code == 404
