"""Judge runs through the Celery task (eager here) with a tiny random model as a local judge: the
answers and their provenance, idempotency (a second run, a chunk delivered again, a worker taken over
mid-chunk), pairs in both orders, and what is refused. A real worker killed mid-run is in
tests/integration/test_celery_judging.py."""

import pytest
from django.test import override_settings

from evalapp.models import Response
from modelserver import tasks
from modelserver.judge_services import (
    SAFETY_CRITERION,
    JudgeError,
    current_templates,
    judge_create,
    judge_run_create,
    judge_run_resume,
)
from modelserver.models import SAFETY_KEY, JudgeAnswer, JudgeChunk, JudgeRun, RunStatus
from raters import services

from ..factories import ArmFactory, PromptFactory, ResponseFactory
from .test_judging import _Endpoint, endpoint  # noqa: F401 (the scripted endpoint and its fixture)
from .workerlike import like_a_worker  # noqa: F401

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("like_a_worker")]


@pytest.fixture
def judged_study(study, tiny_model_dir, settings):
    settings.JUDGE_LOCAL_MODELS = [str(tiny_model_dir)]
    arms = [ArmFactory(study=study, label=label, base_model="bundled") for label in ("fine-tuned", "baseline")]
    for prompt in PromptFactory.create_batch(5, study=study):
        for arm in arms:
            ResponseFactory(prompt=prompt, arm=arm, text=f"I hear you. Reply of {arm.label} to {prompt.external_id}.")
    return study


def make_judge(study, user, model, **kwargs):
    return judge_create(study=study, user=user, name=kwargs.pop("name", "tiny"), kind="local", model=model,
                        batch_size=kwargs.pop("batch_size", 3), **kwargs)


def run(judge, user, capture, mode="items"):
    with capture(execute=True):
        made = judge_run_create(judge=judge, user=user, mode=mode)
    made.refresh_from_db()
    return made


def test_a_local_judge_answers_every_response_on_every_question(judged_study, researcher, tiny_model_dir,
                                                                django_capture_on_commit_callbacks):
    judge = make_judge(judged_study, researcher, str(tiny_model_dir), seed=7)
    done = run(judge, researcher, django_capture_on_commit_callbacks)
    assert done.status == RunStatus.SUCCEEDED, done.error
    assert done.done == done.total == 10
    # 10 responses in chunks of GENERATION_CHUNK_BATCHES (2) x batch size (3).
    assert list(done.chunks.order_by("index").values_list("size", flat=True)) == [6, 4]
    keys = [c["key"] for c in judged_study.rubric()] + [SAFETY_KEY]
    answers = JudgeAnswer.objects.filter(judge=judge)
    assert answers.count() == 10 * len(keys)
    assert set(answers.values_list("criterion", flat=True)) == set(keys)
    rubric = {c["key"]: c for c in judged_study.rubric()}
    for a in answers:
        low, high = (0, 1) if a.criterion == SAFETY_KEY else (rubric[a.criterion]["min"], rubric[a.criterion]["max"])
        assert a.method == "local-probabilities" and a.value is not None and low <= a.value <= high
        assert abs(sum(a.distribution) - 1) < 1e-6 and 0 <= a.outside_mass <= 1
        p = a.provenance
        assert p["model_sha256"] and p["template"]["sha256"] and p["seed"] == 7 and p["judge_run"] == done.id
        assert p["worker"] and p["prompt_sha256"]
        assert not a.letter and not a.order and a.pair_id is None
    assert current_templates()["criterion"] == answers.first().provenance["template"]


def test_a_second_run_judges_only_what_is_missing(judged_study, researcher, tiny_model_dir,
                                                   django_capture_on_commit_callbacks):
    judge = make_judge(judged_study, researcher, str(tiny_model_dir))
    run(judge, researcher, django_capture_on_commit_callbacks)
    first = set(JudgeAnswer.objects.values_list("id", flat=True))
    with pytest.raises(JudgeError, match="Nothing to judge"):
        run(judge, researcher, django_capture_on_commit_callbacks)
    assert JudgeRun.objects.filter(judge=judge).count() == 1
    assert set(JudgeAnswer.objects.values_list("id", flat=True)) == first
    # A new response is judged by the next run, and only it.
    prompt = judged_study.prompts.first()
    extra = ResponseFactory(prompt=prompt, arm=judged_study.arms.first(), sample_index=1, text="Tell me more.")
    third = run(judge, researcher, django_capture_on_commit_callbacks)
    assert third.status == RunStatus.SUCCEEDED and third.done == third.total == 11
    new = JudgeAnswer.objects.exclude(id__in=first)
    assert set(new.values_list("response_id", flat=True)) == {extra.id}


def test_a_chunk_delivered_again_or_taken_over_writes_no_duplicates(judged_study, researcher, tiny_model_dir,
                                                                    django_capture_on_commit_callbacks):
    judge = make_judge(judged_study, researcher, str(tiny_model_dir))
    with django_capture_on_commit_callbacks(execute=False):
        made = judge_run_create(judge=judge, user=researcher)
    chunk = made.chunks.order_by("index").first()
    # Worker A claims the chunk and dies; its lease lapses and worker B takes the chunk over.
    assert JudgeChunk.claim(chunk.id, "worker-a")
    JudgeChunk.objects.filter(id=chunk.id).update(heartbeat_at="2000-01-01T00:00:00Z")
    from modelserver.judge_services import judge_chunk_execute

    assert JudgeChunk.claim(chunk.id, "worker-b")
    judge_chunk_execute(job_id=chunk.id, worker="worker-b")
    written = JudgeAnswer.objects.count()
    # A's late write of the same answers is a no-op (the unique constraints), and so is a redelivered message.
    judge_chunk_execute(job_id=chunk.id, worker="worker-a")
    assert JudgeAnswer.objects.count() == written
    assert JudgeChunk.succeed(chunk.id, "worker-b")
    tasks.judge_chunk.apply(args=(chunk.id,))
    for other in made.chunks.exclude(id=chunk.id):
        tasks.judge_chunk.apply(args=(other.id,))
    made.refresh_from_db()
    assert made.status == RunStatus.SUCCEEDED and made.done == made.total
    per_key = JudgeAnswer.objects.values_list("response_id", "criterion", "sample")
    assert len(per_key) == len(set(per_key)) == 10 * (len(judged_study.rubric()) + 1)


def test_a_failed_chunk_resumes_and_completes(judged_study, researcher, tiny_model_dir,
                                              django_capture_on_commit_callbacks, monkeypatch):
    judge = make_judge(judged_study, researcher, str(tiny_model_dir))
    from modelserver import judge_services

    real = judge_services._judge_texts
    calls = []

    def once_broken(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("the judge's card fell over")
        return real(*args, **kwargs)

    monkeypatch.setattr(judge_services, "_judge_texts", once_broken)
    failed = run(judge, researcher, django_capture_on_commit_callbacks)
    assert failed.status == RunStatus.FAILED and "fell over" in failed.error
    kept = JudgeAnswer.objects.count()
    assert 0 < kept < 10 * 3
    with django_capture_on_commit_callbacks(execute=True):
        judge_run_resume(run=failed)
    failed.refresh_from_db()
    assert failed.status == RunStatus.SUCCEEDED and JudgeAnswer.objects.count() == 10 * 3


def test_pairs_are_judged_in_both_orders(judged_study, researcher, tiny_model_dir,
                                         django_capture_on_commit_callbacks):
    services.consent_publish(study=judged_study, text="Research data.", withdrawal_policy="exclude")
    services.pair_phase_save(study=judged_study, criteria=[{"key": "empathy", "question": "Which is kinder?"}],
                             judgments_per_pair=1, gold_rate=0.0, reason="optional")
    services.pair_phase_open(study=judged_study)
    judge = make_judge(judged_study, researcher, str(tiny_model_dir))
    done = run(judge, researcher, django_capture_on_commit_callbacks, mode="pairs")
    assert done.status == RunStatus.SUCCEEDED, done.error
    answers = JudgeAnswer.objects.filter(judge=judge, pair__isnull=False)
    assert answers.count() == 5 * 2
    assert {a.order for a in answers} == {"AB", "BA"}
    for a in answers:
        assert a.letter in "ABS" and a.value is None
        assert a.preferred == {"S": "tie", "A": "first" if a.order == "AB" else "second",
                               "B": "second" if a.order == "AB" else "first"}[a.letter]


def test_what_is_refused(judged_study, researcher, tiny_model_dir, settings):
    with pytest.raises(JudgeError, match="JUDGE_LOCAL_MODELS"):
        make_judge(judged_study, researcher, "/home/someone/else")
    with pytest.raises(JudgeError, match="one sample"):
        make_judge(judged_study, researcher, str(tiny_model_dir), samples=3)
    with pytest.raises(JudgeError, match="none are configured"):
        judge_create(study=judged_study, user=researcher, name="remote", kind="http", model="http://evil.example")
    settings.JUDGE_ENDPOINTS = {"vllm": {"url": "http://127.0.0.1:9", "model": "m"}}
    with pytest.raises(JudgeError, match="temperature"):
        judge_create(study=judged_study, user=researcher, name="remote", kind="http", model="vllm", samples=2)
    remote = judge_create(study=judged_study, user=researcher, name="remote", kind="http", model="vllm",
                          samples=2, temperature=0.7)
    assert remote.samples == 2
    make_judge(judged_study, researcher, "bundled")
    with pytest.raises(JudgeError, match="already has a judge"):
        make_judge(judged_study, researcher, "bundled")
    judge = make_judge(judged_study, researcher, str(tiny_model_dir), name="other")
    with pytest.raises(JudgeError, match="no pairwise phase"):
        judge_run_create(judge=judge, user=researcher, mode="pairs")
    judge.templates = {"criterion": {"name": "empatheval-criterion", "version": 0, "sha256": "old"}}
    judge.save()
    with pytest.raises(JudgeError, match="templates have changed"):
        judge_run_create(judge=judge, user=researcher)
    assert not JudgeRun.objects.exists()


def test_the_safety_question_is_a_choice_the_library_accepts():
    from modelserver.judging.answers import answer_space

    assert answer_space(SAFETY_CRITERION).values == (0, 1)


@override_settings(JUDGE_ENDPOINTS={})
def test_no_response_no_run(study, researcher):
    ArmFactory(study=study, label="a", base_model="bundled")
    judge = judge_create(study=study, user=researcher, name="j", kind="local", model="bundled")
    with pytest.raises(JudgeError, match="no responses"):
        judge_run_create(judge=judge, user=researcher)
    assert not Response.objects.exists()


@pytest.fixture
def endpoint_judge(judged_study, researcher, settings, endpoint):
    settings.JUDGE_ENDPOINTS = {"lab": {"url": endpoint, "model": "served-model", "logprobs": False}}
    settings.JOB_RETRY_BACKOFF_SECONDS = 0
    return judge_create(study=judged_study, user=researcher, name="remote", kind="http", model="lab", safety=False,
                        samples=2, temperature=0.7, seed=5), _Endpoint


def test_an_http_judge_run_samples_k_times_and_counts_what_it_cannot_read(endpoint_judge, researcher,
                                                                          django_capture_on_commit_callbacks):
    judge, served = endpoint_judge
    n = 10 * 2 * len(judge.study.rubric())
    served.script = [{"text": "7"} for _ in range(n - 1)] + [{"text": "I'd rather not say"}]
    done = run(judge, researcher, django_capture_on_commit_callbacks)
    assert done.status == RunStatus.SUCCEEDED, done.error
    answers = JudgeAnswer.objects.filter(judge=judge)
    assert answers.count() == n and set(answers.values_list("sample", flat=True)) == {0, 1}
    assert answers.filter(value__isnull=True).count() == 1
    unread = answers.get(value__isnull=True)
    assert unread.method == "http-text" and unread.raw_text == "I'd rather not say"
    # Each sample has its own seed; the model name sent is the endpoint's, never a URL from a request.
    assert {body["seed"] for _, body in served.received} == {5, 6}
    assert {body["model"] for _, body in served.received} == {"served-model"}
    assert {body["temperature"] for _, body in served.received} == {0.7}


def test_an_endpoint_that_does_not_come_back_fails_the_run_after_retries(endpoint_judge, researcher,
                                                                         django_capture_on_commit_callbacks):
    judge, served = endpoint_judge
    served.script = [{"status": 503} for _ in range(50)]
    failed = run(judge, researcher, django_capture_on_commit_callbacks)
    assert failed.status == RunStatus.FAILED and "gave up after 4 tries" in failed.error and "503" in failed.error
    assert not JudgeAnswer.objects.exists()
