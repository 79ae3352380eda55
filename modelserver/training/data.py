"""Training data for LoRA fine-tuning, all together: load a source (:mod:`.sources`), clean it
(:mod:`.cleaning`), split it by question (:mod:`.split`) and record what was used (:class:`DataManifest`).

Pure Python: no torch, no Django.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .cleaning import clean_examples
from .sources import COUNSELCHAT, DataError, Example, load_source
from .split import SPLITS, split_by_question


@dataclass
class DataManifest:
    """What the adapter was trained on: enough to check a study's prompts for overlap."""

    sources: list[dict]
    cleaning: list[dict]
    split_method: str
    seed: int
    val_fraction: float
    question_ids: dict[str, list[str]]  # split -> sorted question ids
    prompt_ids: dict[str, list[str]]  # split -> sorted external prompt ids (slugs, chat ids, t1-u1, ...)
    examples: dict[str, int]  # split -> number of examples
    excluded_requested: int  # ids the caller asked to exclude (whether or not present in the data)
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> DataManifest:
        return cls(**data)

    def training_ids(self) -> set[str]:
        """Every id (question or prompt) whose answers the adapter saw in training."""
        return set(self.question_ids.get("train", ())) | set(self.prompt_ids.get("train", ()))

    def overlap(self, external_ids: Iterable[str]) -> list[str]:
        """The given study prompt ids that were trained on (should be empty)."""
        seen = self.training_ids()
        return sorted({str(i) for i in external_ids} & seen)


@dataclass
class PreparedData:
    train: list[Example]
    val: list[Example]
    test: list[Example]
    excluded: list[Example]
    manifest: DataManifest


def prepare_data(
    source: str | Path = COUNSELCHAT,
    *,
    val_fraction: float = 0.1,
    exclude_question_ids: Iterable[str] = (),
    test_question_ids: Iterable[str] = (),
    use_source_splits: bool = True,
    seed: int = 0,
) -> PreparedData:
    """Load, clean and split one source; the manifest records files, counts and ids per split."""
    raw = load_source(source)
    excluded = {str(i) for i in exclude_question_ids}
    cleaned, steps = clean_examples(raw.examples)
    if not cleaned:
        raise DataError(f"{source}: no usable examples ({'; '.join(raw.problems[:5]) or 'all rows were empty'})")
    split = split_by_question(
        cleaned,
        val_fraction,
        test_question_ids=test_question_ids,
        exclude_question_ids=excluded,
        question_splits=raw.question_splits if use_source_splits else None,
        seed=seed,
    )
    if not split.train:
        raise DataError(f"{source}: no training examples left after splitting and exclusions")
    manifest = DataManifest(
        sources=[asdict(s) for s in raw.sources],
        cleaning=[asdict(s) for s in steps],
        split_method=split.method,
        seed=seed,
        val_fraction=val_fraction,
        question_ids=split.question_ids(),
        prompt_ids=split.prompt_ids(),
        examples={name: len(getattr(split, name)) for name in SPLITS},
        excluded_requested=len(excluded),
        problems=list(raw.problems),
    )
    return PreparedData(split.train, split.val, split.test, split.excluded, manifest)
