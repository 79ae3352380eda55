"""Training from the site: the Celery task (eager), the registry, and the overlap rule."""

import json

import pytest
from django.urls import reverse

from modelserver.models import Adapter, RunStatus, TrainingRun
from modelserver.services import GenerationError, generation_run_create
from modelserver.training_services import training_run_create

from ..factories import ArmFactory, PromptFactory
from .workerlike import like_a_worker  # noqa: F401

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("like_a_worker")]


def fake_trained_adapter(tmp_path, tiny_adapter_dir, train_ids):
    """A real adapter directory plus the manifest a training run writes next to it."""
    import shutil

    target = tmp_path / "adapter"
    shutil.copytree(tiny_adapter_dir, target)
    (target / "training_result.json").write_text(json.dumps({"manifest": {
        "question_ids": {"train": train_ids, "val": [], "test": []}, "prompt_ids": {"train": []}}}))
    return target


def test_an_adapter_trained_on_study_prompts_is_refused(client, study, researcher, tmp_path, tiny_adapter_dir):
    PromptFactory(study=study, external_id="q-anxious")
    adapter = fake_trained_adapter(tmp_path, tiny_adapter_dir, ["q-anxious", "q-other"])
    client.force_login(researcher)
    client.post(reverse("arm_add", args=[study.id]), {
        "label": "ft", "base_model": "bundled", "adapter": str(adapter), "system_prompt": "", "max_new_tokens": 8,
        "temperature": 0.7, "top_p": 0.9, "repetition_penalty": 1.1})
    assert not study.arms.exists()
    messages = [m.message for m in client.get(reverse("study_detail", args=[study.id])).context["messages"]]
    assert any("q-anxious" in m and "never saw" in m for m in messages)

    # Attached before the overlapping prompt was imported: generation refuses then.
    arm = ArmFactory(study=study, label="ft", adapter=str(adapter))
    with pytest.raises(GenerationError, match="q-anxious"):
        generation_run_create(study=study, user=researcher, arms=[arm])


def test_disjoint_adapter_is_accepted(client, study, researcher, tmp_path, tiny_adapter_dir):
    PromptFactory(study=study, external_id="q-new")
    adapter = fake_trained_adapter(tmp_path, tiny_adapter_dir, ["q-old"])
    client.force_login(researcher)
    client.post(reverse("arm_add", args=[study.id]), {
        "label": "ft", "base_model": "bundled", "adapter": str(adapter), "system_prompt": "", "max_new_tokens": 8,
        "temperature": 0.7, "top_p": 0.9, "repetition_penalty": 1.1})
    assert study.arms.get().adapter == str(adapter)


def test_training_run_trains_registers_and_excludes_the_study(study, researcher, tiny_model_dir, tmp_path, settings,
                                                             django_capture_on_commit_callbacks):
    settings.EMPATHEVAL_ADAPTER_DIR = str(tmp_path / "adapters")
    data = tmp_path / "chats.jsonl"
    rows = [{"id": f"c{i}", "messages": [{"role": "user", "content": f"I feel sad about thing {i}."},
                                         {"role": "assistant", "content": f"That sounds hard. Tell me about {i}."}]}
            for i in range(24)]
    data.write_text("\n".join(json.dumps(r) for r in rows))
    PromptFactory(study=study, external_id="c3")
    config = {"base": str(tiny_model_dir), "data": str(data), "max_steps": 3, "batch_size": 2, "max_length": 64,
              "eval_every": 0, "perplexity_max_examples": 4, "device": "cpu"}
    with django_capture_on_commit_callbacks(execute=True):
        run = training_run_create(user=researcher, name="tiny", config=config, study=study)
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.config["exclude_question_ids"] == ["c3"]
    adapter = Adapter.objects.get(training_run=run)
    assert "c3" not in adapter.training_question_ids() and adapter.training_question_ids()
    assert adapter.perplexity["base"] and adapter.perplexity["adapter"] and len(adapter.adapter_sha256) == 64
    assert run.progress["step"] == 3


def test_failed_training_is_recorded_and_can_resume(study, researcher, tmp_path, settings,
                                                   django_capture_on_commit_callbacks):
    settings.EMPATHEVAL_ADAPTER_DIR = str(tmp_path / "adapters")
    with django_capture_on_commit_callbacks(execute=True):
        run = training_run_create(user=researcher, name="broken", config={"base": str(tmp_path / "missing"),
                                                                           "max_steps": 1}, study=study)
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and "missing" in run.error
    from modelserver.training_services import training_run_resume

    training_run_resume(run=run)
    assert TrainingRun.objects.get(id=run.id).status == RunStatus.QUEUED


def tiny_training_config(tmp_path, tiny_model_dir):
    data = tmp_path / "chats.jsonl"
    rows = [{"id": f"c{i}", "messages": [{"role": "user", "content": f"I feel sad about thing {i}."},
                                         {"role": "assistant", "content": f"That sounds hard. Tell me about {i}."}]}
            for i in range(24)]
    data.write_text("\n".join(json.dumps(r) for r in rows))
    return {"base": str(tiny_model_dir), "data": str(data), "max_steps": 2, "batch_size": 2, "max_length": 64,
            "eval_every": 0, "perplexity_max_examples": 4, "device": "cpu"}


def out_of_memory_first(monkeypatch, failures: int | None):
    """Training raises torch's CUDA out-of-memory error ``failures`` times (None: always), then runs."""
    import torch

    from modelserver import training

    real = training.train_adapter
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if failures is None or calls["n"] <= failures:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "train_adapter", flaky)
    return calls


def test_training_transient_error_is_retried_and_the_run_completes(study, researcher, tiny_model_dir, tmp_path,
                                                                   settings, monkeypatch):
    # Bug 6: autoretry_for was dead: every exception became FAILED at once.
    from modelserver import tasks

    settings.EMPATHEVAL_ADAPTER_DIR = str(tmp_path / "adapters")
    calls = out_of_memory_first(monkeypatch, failures=1)
    run = TrainingRun.objects.create(created_by=researcher, name="t", config=tiny_training_config(tmp_path, tiny_model_dir),
                                     out_dir=str(tmp_path / "adapters" / "run"))
    tasks.train_adapter.apply(args=(run.id,), throw=False)
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert calls["n"] == run.attempts == 2 and Adapter.objects.filter(training_run=run).exists()


def test_training_fails_with_the_last_error_when_retries_run_out(study, researcher, tmp_path, monkeypatch):
    from modelserver import tasks

    calls = out_of_memory_first(monkeypatch, failures=None)
    run = TrainingRun.objects.create(created_by=researcher, name="t", config={"base": "x", "max_steps": 1},
                                     out_dir=str(tmp_path / "run"))
    tasks.train_adapter.apply(args=(run.id,), throw=False)
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and calls["n"] == run.attempts == tasks.train_adapter.max_retries + 1
    assert "CUDA out of memory while training" in run.error and "gave up after 4 tries" in run.error


@pytest.mark.parametrize("persona", ["rater", "adjudicator", "outsider"])
def test_training_pages_are_for_researchers(client, personas, study, persona):
    client.force_login(personas[persona])
    assert client.post(reverse("training_start", args=[study.id]), {"name": "x"}).status_code == 404
    assert client.get(reverse("training_runs_fragment", args=[study.id])).status_code == 404
