"""The preference-pairs export: the stated rule (what is in, what is left out, the margin), the audit, the
bundle, and that the file loads as TRL's conversational preference dataset."""

import io
import json
import zipfile

import datasets
import numpy as np
import pytest
import trl.data_utils as trl_data
from django.urls import reverse

from evalapp.exports.preferences import preference_records
from evalapp.models import AuditEvent, ResponsePair, SafetyDecision
from evalapp.pair_adjudication import pair_adjudication_resolve
from raters.models import Role

from ..factories import MembershipFactory, UserFactory
from ..modelserver.conftest import build_tiny_model, build_tiny_tokenizer
from .test_pair_results import add_rater, hand, judge, make_study, open_phase  # noqa: F401

pytestmark = pytest.mark.django_db


def download(client, study, **query) -> list[dict]:
    response = client.get(reverse("export_preferences", args=[study.id]), query)
    assert response.status_code == 200, response.content[:300]
    assert response["Content-Type"].startswith("application/jsonl")
    return [json.loads(line) for line in b"".join(response.streaming_content).decode().splitlines()]


def test_the_stated_rule_and_the_margins(client, hand, researcher):  # noqa: F811
    study, raters = hand
    client.force_login(researcher)
    prompts = list(study.prompts.order_by("id"))
    lines = download(client, study, criterion="empathy")
    # Majorities (hand_pattern): "second" (baseline) on prompts 0, 1, 2, 3 and 5; prompt 4 has none.
    ids = [p.external_id for p in prompts]
    assert [line["prompt_id"] for line in lines] == [ids[i] for i in (0, 1, 2, 3, 5)]
    assert [line["margin"] for line in lines] == pytest.approx([1 / 3, 1, 1 / 3, 1, 2 / 3])
    assert {(line["chosen_arm"], line["rejected_arm"], line["n_raters"], line["source"]) for line in lines} == {
        ("baseline", "fine-tuned", 3, "majority")}
    first = lines[0]
    assert first["prompt"] == prompts[0].messages and first["prompt"][-1]["role"] == "user"
    assert first["chosen"] == [{"role": "assistant", "content": f"Reply from baseline to {ids[0]}"}]
    assert first["rejected"] == [{"role": "assistant", "content": f"Reply from fine-tuned to {ids[0]}"}]
    # Both questions in one file, each line naming its own; fluency is the mirror image.
    everything = download(client, study)
    assert len(everything) == 10 and {line["criterion"] for line in everything} == {"empathy", "fluency"}
    assert {line["chosen_arm"] for line in everything if line["criterion"] == "fluency"} == {"fine-tuned"}

    # An adjudicated verdict brings prompt 4 in (its raters split: margin 0); a safety exclusion takes prompt 0 out.
    adjudicator = UserFactory(username="adj")
    MembershipFactory(study=study, user=adjudicator, role=Role.ADJUDICATOR)
    pair_adjudication_resolve(study=study, pair=ResponsePair.objects.get(study=study, prompt=prompts[4]),
                              key="empathy", adjudicator=adjudicator, verdict="first", rationale="Warmer.")
    SafetyDecision.objects.create(response=prompts[0].responses.get(arm__label="fine-tuned"), classification="harmful",
                                  excluded=True, exclusion_reason="advice to stop medication", n_reviews=1)
    lines = download(client, study, criterion="empathy")
    assert [line["prompt_id"] for line in lines] == [ids[i] for i in (1, 2, 3, 4, 5)]
    settled = next(line for line in lines if line["prompt_id"] == ids[4])
    assert (settled["source"], settled["chosen_arm"], settled["margin"]) == ("adjudicated", "fine-tuned", 0)
    # Every download is audited with who made it, and a refused one records nothing.
    files = list(AuditEvent.objects.filter(study=study, action="export.jsonl").values_list("actor_id", "after"))
    assert len(files) == 3 and {a for a, _ in files} == {researcher.id}
    assert {after["file"] for _, after in files} == {"preferences.jsonl"}
    refused = client.get(reverse("export_preferences", args=[study.id]), {"criterion": "kindness"})
    assert refused.status_code == 400 and "empathy, fluency" in refused.content.decode()
    assert client.get(reverse("export_preferences", args=[study.id]), {"page": "2"}).status_code == 400
    assert AuditEvent.objects.filter(study=study, action="export.jsonl").count() == 3


def test_single_judgments_and_ties_are_left_out(study):
    make_study(study)
    raters = [add_rater(study, f"r{i}") for i in range(2)]
    open_phase(study, k=1)
    judge(study, raters, lambda n, a: {"empathy": "second", "fluency": "tie"})
    assert list(preference_records(study)) == []  # one judgment a pair is not enough; ties never are


def test_a_shared_system_prompt_opens_the_prompt(hand):  # noqa: F811
    study, raters = hand
    study.arms.update(system_prompt="You are a supportive listener.")
    line = next(preference_records(study, "empathy"))
    assert line["prompt"][0] == {"role": "system", "content": "You are a supportive listener."}
    study.arms.filter(label="baseline").update(system_prompt="Something else.")
    assert next(preference_records(study, "empathy"))["prompt"][0]["role"] == "user"


def test_the_export_loads_as_trls_conversational_preference_dataset(client, hand, researcher, tmp_path):  # noqa: F811
    study, raters = hand
    client.force_login(researcher)
    path = tmp_path / "preferences.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in download(client, study, criterion="empathy")))
    dataset = datasets.load_dataset("json", data_files=str(path), split="train")
    assert dataset.num_rows == 5
    assert {"prompt", "chosen", "rejected", "margin", "n_raters"} <= set(dataset.column_names)
    example = dataset[0]
    assert trl_data.is_conversational(example)
    tokenizer = build_tiny_tokenizer()
    applied = trl_data.maybe_apply_chat_template(example, tokenizer)
    # TRL turns the conversation into the prompt text ending in the assistant's turn, and each response
    # into the completion that follows it.
    assert applied["prompt"].endswith("<|im_start|>assistant\n")
    assert example["prompt"][-1]["content"] in applied["prompt"]
    assert applied["chosen"].startswith(example["chosen"][0]["content"])
    assert applied["rejected"].startswith(example["rejected"][0]["content"])
    mapped = dataset.map(trl_data.maybe_apply_chat_template, fn_kwargs={"processing_class": tokenizer})
    assert all(isinstance(x, str) for x in mapped["chosen"])


def test_trls_dpo_trainer_takes_a_step_on_the_export(client, hand, researcher, tmp_path):  # noqa: F811
    """The file as it is downloaded, extra columns and all, trains a tiny model for one DPO step."""
    import copy

    from trl import DPOConfig, DPOTrainer

    study, raters = hand
    client.force_login(researcher)
    path = tmp_path / "preferences.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in download(client, study)))
    dataset = datasets.load_dataset("json", data_files=str(path), split="train")
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_model(tokenizer)
    config = DPOConfig(output_dir=str(tmp_path / "dpo"), max_steps=1, per_device_train_batch_size=2, report_to=[],
                       use_cpu=True, save_strategy="no", max_length=128)
    trainer = DPOTrainer(model=model, ref_model=copy.deepcopy(model), args=config, train_dataset=dataset,
                         processing_class=tokenizer)
    assert {"prompt_ids", "chosen_ids", "rejected_ids"} <= set(trainer.train_dataset.column_names)
    loss = trainer.train().training_loss
    assert loss == pytest.approx(np.log(2), abs=1e-3)  # policy and reference start equal: DPO's loss is log 2


def test_the_bundle_carries_the_preferences_and_their_codebook(client, hand, researcher):  # noqa: F811
    study, raters = hand
    client.force_login(researcher)
    response = client.get(reverse("export_zip", args=[study.id]))
    with zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content))) as bundle:
        lines = bundle.read("preferences.jsonl").decode().splitlines()
        manifest = json.loads(bundle.read("manifest.json"))
        codebook = bundle.read("codebook.csv").decode()
        judgments = bundle.read("pair_judgments.csv").decode().splitlines()
    assert len(lines) == 10 and manifest["files"]["preferences.jsonl"]["rows"] == 10
    assert len(judgments) == 37 and manifest["files"]["pair_judgments.csv"]["rows"] == 36
    assert "preferences.jsonl,margin" in codebook and "pair_judgments.csv,preferred_side" in codebook
    assert "pairwise questions,empathy" in codebook
    assert manifest["pairwise"]["judgments_per_pair"] == 3
