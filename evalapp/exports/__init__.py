"""Pure formatting and streaming of exports: no Django here, rows in, text out."""

import csv
import io
from collections.abc import Iterable, Iterator, Sequence

# OWASP ASVS 1.2.10 / CSV injection: a spreadsheet runs cells that begin with these.
DANGEROUS_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def neutralise(value):
    """Prefix a text cell a spreadsheet would treat as a formula with a single quote; numbers pass."""
    if isinstance(value, str) and value.startswith(DANGEROUS_PREFIXES):
        return "'" + value
    return value


def csv_lines(header: Sequence[str], rows: Iterable[Sequence], batch: int = 1000) -> Iterator[str]:
    """Yield CSV text a batch of rows at a time: a million-row export never sits in memory, and
    writing batches keeps the per-row Python overhead low."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    pending = []
    for row in rows:
        pending.append(["" if v is None else ("'" + v if v.__class__ is str and v[:1] in _DANGEROUS_FIRST else v)
                        for v in row])
        if len(pending) >= batch:
            writer.writerows(pending)
            pending.clear()
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    writer.writerows(pending)
    yield buffer.getvalue()


_DANGEROUS_FIRST = frozenset(DANGEROUS_PREFIXES)


RATINGS_COLUMNS = [
    ("study_id", "Study id."),
    ("rating_id", "Database id of the rating (one rating has one row per scale)."),
    ("response_id", "Opaque public id of the rated response (the id raters saw)."),
    ("prompt_id", "External id of the prompt (question) the response answers."),
    ("topic", "Prompt topic (CounselChat topic where imported from CounselChat)."),
    ("arm", "Researcher's label of the model arm that wrote the response (unblinded)."),
    ("arm_blind_code", "Random code of the arm."),
    ("sample_index", "Sample index of the response for its prompt and arm."),
    ("rater", "Rater pseudonym."),
    ("rater_group", "Rater group, when raters have one (empty otherwise)."),
    ("scale", "empathy or fluency."),
    ("score", "The rater's score, 1-10."),
    ("adjudicated_score", "Adjudicator's final score for this response and scale, if any."),
    ("score_used", "The value the analysis uses for this response and scale under the study's policy."),
    ("score_policy", "mean: raters' mean; adjudicated: adjudicated score where one exists; both: reported side by side."),
    ("unsafe", "1 if the rater flagged the response as unsafe or harmful."),
    ("unsafe_category", "Category of the flag."),
    ("comment", "Rater's comment."),
    ("seconds_on_item", "Seconds the rater spent on the item."),
    ("rated_at", "When the rating was first submitted (UTC, ISO 8601)."),
    ("revised_at", "When it was last changed (UTC)."),
    ("excluded", "1 if this row is excluded from the analysis."),
    ("exclusion_reasons", "Why: rater withdrew (policy keep-and-exclude), rater excluded by the researcher, "
                          "or response excluded after safety review; ';'-separated."),
    ("simulated", "1 if the rating was produced by the demo's rater simulation, not a person."),
]


def codebook_rows(columns: Sequence[tuple[str, str]], file: str) -> Iterator[tuple[str, str, str]]:
    for name, meaning in columns:
        yield (file, name, meaning)
