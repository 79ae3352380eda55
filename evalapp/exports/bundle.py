"""The zip bundle: every export, a codebook of the ratings columns, and a manifest to check them by."""

import json
import zipfile
from collections.abc import Iterator
from hashlib import sha256
from importlib import metadata
from typing import BinaryIO

from django.utils import timezone

from modelserver.judge_models import Judge, JudgeAnswer

from ..audit import audit
from ..models import PairwisePhase, Response, Study
from ..pair_results import PAIR_JUDGMENT_COLUMNS
from ..text_report import TEXT_MEASURE_COLUMNS
from .copy_export import copy_available, rating_csv_chunks
from .csv import csv_lines
from .preferences import FILE as PREFERENCES_FILE
from .preferences import PREFERENCE_FIELDS, preference_lines
from .tables import EXPORT_ZIP_ACTION, EXPORTS, JUDGE_ANSWER_COLUMNS, JUDGE_EXPORTS, PAIRWISE_EXPORTS, RATINGS_COLUMNS

SOFTWARE = ("empatheval", "django", "numpy", "scipy", "statsmodels", "krippendorff", "torch", "transformers", "peft")


def write_bundle(study: Study, target: BinaryIO, *, actor) -> dict:
    """Write the zip into `target` (a file: the bundle can be large) and return its manifest. The
    download is audited first, so the bundle's own audit.csv names it."""
    audit(study=study, actor=actor, action=EXPORT_ZIP_ACTION, obj=study, after={"file": "export.zip"})
    manifest = _manifest(study)
    pairwise = manifest["pairwise"] is not None
    judged = JudgeAnswer.objects.filter(judge__study=study).exists()
    if judged:
        manifest["judges"] = list(Judge.objects.filter(study=study).order_by("id").values(
            "name", "kind", "model", "templates", "safety", "samples", "temperature", "batch_size", "seed"))
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, (header, rows) in EXPORTS.items():
            if (name in PAIRWISE_EXPORTS and not pairwise) or (name in JUDGE_EXPORTS and not judged):
                continue
            digest, count = sha256(), [0]

            def counted(iterable, count=count):
                for row in iterable:
                    count[0] += 1
                    yield row

            if name == "ratings" and copy_available():
                copied: list[int] = []  # COPY's row count, once it is done (a cell may hold a line break)
                chunks = rating_csv_chunks(study, rows=copied)
            else:
                copied, chunks = [], csv_lines(header, counted(rows(study)))
            with archive.open(f"{name}.csv", "w") as handle:
                for chunk in chunks:
                    data = chunk if isinstance(chunk, bytes) else chunk.encode("utf-8")
                    digest.update(data)
                    handle.write(data)
            if copied:
                count[0] = copied[0]
            manifest["files"][f"{name}.csv"] = {"rows": count[0], "sha256": digest.hexdigest()}
        if pairwise:
            manifest["files"][PREFERENCES_FILE] = _write_preferences(study, archive)
        codebook = "".join(csv_lines(["file", "column", "meaning"], [
            *codebook_rows(RATINGS_COLUMNS, "ratings.csv"), *rubric_rows(study),
            *codebook_rows(TEXT_MEASURE_COLUMNS, "text_measures.csv"),
            *(pairwise_codebook_rows(study) if pairwise else []),
            *(codebook_rows(JUDGE_ANSWER_COLUMNS, "judge_answers.csv") if judged else [])]))
        archive.writestr("codebook.csv", codebook)
        manifest["files"]["codebook.csv"] = {"sha256": sha256(codebook.encode()).hexdigest()}
        archive.writestr("manifest.json", json.dumps(manifest, indent=2, default=str))
    return manifest


def codebook_rows(columns, file: str) -> Iterator[tuple[str, str, str]]:
    for name, meaning in columns:
        yield (file, name, meaning)


def rubric_rows(study: Study) -> Iterator[tuple[str, str, str]]:
    """The rubric exactly as raters saw it: one codebook row per criterion (ratings.csv's `scale`)."""
    source = study.rubric_source()
    if source:
        yield ("rubric", "(source)", f"{'Adapted from' if source['edited'] else 'The'} {source['name']} preset"
                                      f"{' (edited)' if source['edited'] else ''}: {source['citation']}")
    for position, c in enumerate(study.rubric(), start=1):
        if c["kind"] == "likert":
            answers = f"whole numbers {c['min']}-{c['max']}"
            if c["labels"]:
                answers += " (" + "; ".join(f"{point} = {label}" for point, label in c["labels"].items()) + ")"
        else:
            answers = "one of " + "; ".join(f"{i} = {o['key']} ({o['label']})" for i, o in enumerate(c["options"]))
            answers += " (score is the index, score_label the key)"
        parts = [f"Criterion {position}: \"{c['question']}\"", f"{c['kind']}, {answers}",
                 f"analysed as {c['level']}"]
        if c["not_sure"]:
            parts.append(f"raters could answer \"{c['not_sure']}\" (not_sure = 1, score empty; missing in analysis)")
        parts.append({"none": "no rationale asked", "optional": "optional rationale",
                      "required": "rationale required"}[c["rationale"]])
        if c.get("description"):
            parts.append(f"guidance: {c['description']}")
        yield ("rubric", c["key"], "; ".join(parts) + ".")


def _write_preferences(study: Study, archive: zipfile.ZipFile) -> dict:
    digest, count = sha256(), 0
    with archive.open(PREFERENCES_FILE, "w") as handle:
        for line in preference_lines(study):
            data = line.encode("utf-8")
            digest.update(data)
            handle.write(data)
            count += 1
    return {"rows": count, "sha256": digest.hexdigest()}


def pairwise_codebook_rows(study: Study) -> Iterator[tuple[str, str, str]]:
    """pair_judgments.csv's columns, the pairwise questions as raters saw them (its `key`), and
    preferences.jsonl's fields."""
    yield from codebook_rows(PAIR_JUDGMENT_COLUMNS, "pair_judgments.csv")
    phase = PairwisePhase.objects.filter(study=study).first()
    for position, c in enumerate(phase.criteria if phase else [], start=1):
        yield ("pairwise questions", c["key"], f"Question {position}: \"{c['question']}\"; answers first, second or "
                                               "tie (raters saw A, B or about the same, sides balanced).")
    yield from codebook_rows(PREFERENCE_FIELDS, PREFERENCES_FILE)


def _manifest(study: Study) -> dict:
    return {"study": {"id": study.id, "title": study.title, "status": study.status, "rubric": study.rubric(),
                      "rubric_source": study.rubric_source(),
                      "ratings_per_response": study.ratings_per_response, "score_policy": study.score_policy,
                      "disagreement_rule": study.disagreement_rule,
                      "disagreement_threshold": study.disagreement_threshold, "design_seed": study.design_seed},
            "pairwise": PairwisePhase.objects.filter(study=study).values(
                "status", "criteria", "judgments_per_pair", "gold_rate", "design_seed").first(),
            "arms": list(study.arms.values("label", "blind_code", "base_model", "adapter", "system_prompt",
                                           "generation_params")),
            "models": _model_fingerprints(study),
            "exported_at": timezone.now().isoformat(),
            "software": {p: _version(p) for p in SOFTWARE},
            "files": {}}


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _model_fingerprints(study: Study) -> dict:
    """Per arm, the distinct weights its responses were generated with: base, adapter and chat-template
    hashes, and the 4-bit loading (``quantization``, None for full precision) without the bitsandbytes
    version, which is recorded in each response but does not change the weights."""
    keys = ("base_sha256", "adapter_sha256", "chat_template_sha256")
    seen: dict[str, dict] = {}
    for label, provenance in Response.objects.filter(prompt__study=study).values_list("arm__label", "provenance"):
        quantization = provenance.get("quantization")
        if isinstance(quantization, dict):
            quantization = {k: v for k, v in quantization.items() if k != "bitsandbytes"}
        row = {**{k: provenance.get(k) for k in keys}, "quantization": quantization}
        seen.setdefault(label, {})[json.dumps(row, sort_keys=True)] = row
    return {label: [rows[k] for k in sorted(rows)] for label, rows in seen.items()}
