"""The rows of each export: ratings in long form, responses with provenance, the audit trail, judges' answers.

Rows come from the database a chunk at a time (memory stays flat however large the study), and
`analysis_records` turns rating rows into what evalapp.analysis reads, so the results page is
recomputable from the exported ratings.csv.
"""

import json
from collections.abc import Iterator
from decimal import ROUND_HALF_UP, Decimal

from django.db import connection
from django.db.models import CharField, F, Func

from modelserver.judge_models import JudgeAnswer
from raters.counting import left_out_raters
from raters.models import RatingRevision, Role, StudyMembership

from ..audit import audit
from ..models import Adjudication, AuditEvent, Rating, Response, SafetyDecision, Score, ScorePolicy, Study
from ..pair_results import PAIR_JUDGMENT_HEADER, pair_judgment_rows
from ..rubric import score_label
from ..text_report import TEXT_MEASURE_HEADER, text_measure_rows

RATINGS_COLUMNS = [
    ("study_id", "Study id."),
    ("rating_id", "Database id of the rating (one rating has one row per criterion)."),
    ("response_id", "Opaque public id of the rated response (the id raters saw)."),
    ("prompt_id", "External id of the prompt (question) the response answers."),
    ("topic", "Prompt topic (CounselChat topic where imported from CounselChat)."),
    ("arm", "Researcher's label of the model arm that wrote the response (unblinded)."),
    ("arm_blind_code", "Random code of the arm."),
    ("sample_index", "Sample index of the response for its prompt and arm."),
    ("rater", "Rater pseudonym."),
    ("rater_group", "Rater group, when raters have one (empty otherwise)."),
    ("scale", "Key of the rubric criterion this row answers (the codebook lists the rubric)."),
    ("level", "How the criterion is analysed: interval, ordinal or nominal."),
    ("score", "The rater's answer as stored: the likert point, or for a choice the option's index (0 = first "
              "option); empty when the rater answered \"not sure\"."),
    ("score_label", "The answer as raters saw it: a choice's option key, a likert point's anchor, or not_sure."),
    ("not_sure", "1 if the rater answered \"not sure\": missing in agreement and comparison, counted apart."),
    ("rationale", "The rater's reason for this answer, where the rubric asks for one."),
    ("adjudicated_score", "Adjudicator's final answer for this response and criterion, if any (stored form)."),
    ("score_used", "The value the analysis uses for this response and criterion under the study's policy "
                   "(for a choice under the mean policy: empty; choices are analysed answer by answer)."),
    ("score_policy", "mean: raters' mean; adjudicated: adjudicated score where one exists; both: reported side by side."),
    ("unsafe", "1 if the rater flagged the response as unsafe or harmful."),
    ("unsafe_category", "Category of the flag."),
    ("comment", "Rater's comment."),
    ("seconds_on_item", "Seconds the rater spent on the item."),
    ("rated_at", "When the rating was first submitted (UTC, ISO 8601)."),
    ("revised_at", "When the rater last changed it (UTC); empty if never revised (RatingRevision has each change)."),
    ("excluded", "1 if this row is excluded from the analysis."),
    ("exclusion_reasons", "Why: rater withdrew (policy keep-and-exclude), rater excluded by the researcher, "
                          "or response excluded after safety review; ';'-separated."),
    ("simulated", "1 if the rating was produced by the demo's rater simulation, not a person."),
]
RATING_HEADER = [name for name, _ in RATINGS_COLUMNS]
RESPONSE_HEADER = ["response_id", "prompt_id", "arm", "arm_blind_code", "sample_index", "text", "provenance_json",
                   "created_at"]
AUDIT_HEADER = ["when", "actor", "action", "object_type", "object_id", "before_json", "after_json"]
EXPORT_CSV_ACTION, EXPORT_ZIP_ACTION = "export.csv", "export.zip"


def _mean(values: list[int]) -> float:
    """The raters' mean to 4 places, halves away from zero, from the exact quotient: what PostgreSQL's
    round(avg(smallint), 4) gives (the COPY export's). round(sum / n, 4) on the float rounds halves to
    even and disagreed with it once a response had 32 raters (5.03125: 5.0312 against 5.0313)."""
    exact = Decimal(sum(values)) / Decimal(len(values))
    return float(exact.quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP))


def _excluded_responses(study: Study) -> dict[int, str]:
    return {
        rid: f"response excluded after safety review: {reason}"
        for rid, reason in SafetyDecision.objects.filter(response__prompt__study=study, excluded=True).values_list(
            "response_id", "exclusion_reason"
        )
    }


def _adjudicated(study: Study) -> dict[tuple[int, str], int]:
    return {
        (rid, scale): score
        for rid, scale, score in Adjudication.objects.filter(
            response__prompt__study=study, action=Adjudication.Action.RESOLVED
        ).values_list("response_id", "scale", "final_score")
    }


def rating_rows(study: Study, chunk_size: int = 5000) -> Iterator[tuple]:
    """One row per rating and criterion, in RATINGS_COLUMNS order, streamed from the database.

    Rows come grouped by response (then rating id) so each response's raters' mean is computed from
    the handful of rows in hand: memory stays flat however many rows there are.
    """
    excluded_raters, excluded_responses = left_out_raters(study), _excluded_responses(study)
    adjudicated = _adjudicated(study)
    raters = StudyMembership.objects.filter(study=study, role=Role.RATER)
    pseudonyms, groups = {}, {}
    for user_id, pseudonym, group in raters.values_list("user_id", "pseudonym", "group"):
        pseudonyms[user_id], groups[user_id] = pseudonym, group
    policy = study.score_policy
    criteria = {c.id: c.spec() for c in study.criteria.all()}
    position = {cid: i for i, cid in enumerate(criteria)}
    fields = ["rating_id", "rating__response_id", "rating__response__public_id", "rating__response__prompt__external_id",
              "rating__response__prompt__topic", "rating__response__arm__label", "rating__response__arm__blind_code",
              "rating__response__sample_index", "rating__rater_id", "criterion_id", "value", "not_sure", "rationale",
              "rating__unsafe", "rating__unsafe_category", "rating__comment", "rating__seconds_on_item",
              "rating__created_at", "rating__updated_at", "rating__simulated"]
    scores = Score.objects.all()
    if connection.vendor == "postgresql":
        # Timestamps formatted by the database: parsing them into datetimes only to print them
        # again was a third of the export's Python time.
        scores = scores.annotate(created_iso=_iso("rating__created_at"), updated_iso=_iso("rating__updated_at"))
        fields = [*fields[:17], "created_iso", "updated_iso", fields[-1]]
    responses = Response.objects.filter(prompt__study=study).order_by("id").values_list("id", flat=True)
    # Ratings a rater changed after submitting (few; kept across pages, since a page's last response is
    # emitted after the next page is read).
    revised: set[int] = set()

    def chunks():
        # Keyset pages over the study's responses, then their ratings by the (response, id) index.
        # A server-side cursor got a first-rows plan (5x slower) and keyset pages over the joined
        # ratings made PostgreSQL walk the study from its start for every page (quadratic).
        last = 0
        per_page = max(chunk_size // 8, 1)
        while True:
            ids = list(responses.filter(id__gt=last)[:per_page])
            if not ids:
                return
            # The page's rating ids first, then their scores by the score table's rating index: filtering
            # scores through the rating join let PostgreSQL scan both tables per page whenever their
            # statistics were stale (a freshly filled study: 4x slower, bench/RESULTS.md).
            rating_ids = list(Rating.objects.filter(response_id__in=ids).values_list("id", flat=True))
            page = list(scores.filter(rating_id__in=rating_ids).values_list(*fields))
            revised.update(RatingRevision.objects.filter(rating_id__in=rating_ids).values_list("rating_id", flat=True))
            page.sort(key=lambda r: (r[1], r[0], position[r[9]]))
            yield from page
            last = ids[-1]

    def emit(group):
        counted = [r for r in group if r[8] not in excluded_raters and r[10] is not None]
        means = {}
        for cid, spec in criteria.items():
            values = [r[10] for r in counted if r[9] == cid]
            # A mean of option indices means nothing: a choice's score_used is its adjudicated answer only.
            means[cid] = _mean(values) if values and spec["kind"] == "likert" else None
        for (rating_id, response_id, public_id, prompt_id, topic, arm, code, sample, rater_id, cid, value, not_sure,
             rationale, unsafe, category, comment, seconds, created, updated, simulated) in group:
            spec = criteria[cid]
            reasons = [r for r in (excluded_raters.get(rater_id), excluded_responses.get(response_id)) if r]
            final = adjudicated.get((response_id, spec["key"]))
            used = final if final is not None and policy == ScorePolicy.ADJUDICATED else means[cid]
            yield (study.id, rating_id, public_id, prompt_id, topic, arm, code, sample,
                   pseudonyms.get(rater_id, str(rater_id)), groups.get(rater_id, ""), spec["key"], spec["level"],
                   value, score_label(spec, value, not_sure), int(not_sure), rationale, final, used,
                   policy, int(unsafe), category, comment, seconds, _text(created), _text(updated) if rating_id in revised else "",
                   int(bool(reasons)), "; ".join(reasons), int(simulated))

    group: list[tuple] = []
    for row in chunks():
        if group and row[1] != group[0][1]:
            yield from emit(group)
            group = []
        group.append(row)
    if group:
        yield from emit(group)


def _iso(field: str) -> Func:
    return Func(F(field), template="to_char(%(expressions)s AT TIME ZONE 'UTC', "
                                   "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"')", output_field=CharField())


def _text(value) -> str:
    return value if isinstance(value, str) else value.isoformat()


def analysis_records(rows) -> list[dict]:
    """The rows the analysis uses: excluded rows out; under the adjudicated policy the final score
    replaces each rater's score of an adjudicated response and criterion in the model comparison.
    A "not sure" row stays, with score None, so it is counted and reported."""
    index = {name: i for i, name in enumerate(RATING_HEADER)}
    records = []
    for row in rows:
        if row[index["excluded"]]:
            continue
        records.append({
            "item": row[index["response_id"]],
            "rater": row[index["rater"]],
            "scale": row[index["scale"]],
            "level": row[index["level"]],
            "score": row[index["score"]],
            "not_sure": row[index["not_sure"]],
            "comparison_score": row[index["adjudicated_score"]] if row[index["score_policy"]] == ScorePolicy.ADJUDICATED
            and row[index["adjudicated_score"]] is not None else row[index["score"]],
            "arm": row[index["arm"]],
            "prompt": row[index["prompt_id"]],
            "topic": row[index["topic"]],
            "rater_group": row[index["rater_group"]],
            "unsafe": row[index["unsafe"]],
            "simulated": row[index["simulated"]],
        })
    return records


def response_rows(study: Study) -> Iterator[tuple]:
    queryset = Response.objects.filter(prompt__study=study).order_by("id").values_list(
        "public_id", "prompt__external_id", "arm__label", "arm__blind_code", "sample_index", "text", "provenance",
        "created_at")
    for public_id, prompt_id, arm, code, sample, text, provenance, created in queryset.iterator(chunk_size=2000):
        yield (public_id, prompt_id, arm, code, sample, text, json.dumps(provenance, sort_keys=True), created.isoformat())


def audit_rows(study: Study) -> Iterator[tuple]:
    # A member is named by their pseudonym: a rater's account name may be their e-mail address, and
    # that never leaves the server. Researchers (no pseudonym) are named by their account.
    pseudonyms = dict(StudyMembership.objects.filter(study=study).exclude(pseudonym="")
                      .values_list("user_id", "pseudonym"))
    for e in AuditEvent.objects.filter(study=study).select_related("actor").order_by("id").iterator(chunk_size=2000):
        yield (e.created_at.isoformat(), pseudonyms.get(e.actor_id) or e.actor.get_username(), e.action,
               e.object_type, e.object_id, json.dumps(e.before, default=str), json.dumps(e.after, default=str))


JUDGE_ANSWER_COLUMNS = [
    ("study_id", "Study id."),
    ("judge", "Name of the LLM judge (a model and prompt templates configured as a rater; not a person)."),
    ("judge_kind", "local (a model run on the site's workers) or http (an allow-listed OpenAI-compatible endpoint)."),
    ("judge_model", "The judge's model: a local model reference, or the endpoint's name in JUDGE_ENDPOINTS."),
    ("judge_run_id", "Database id of the judge run that wrote the answer."),
    ("criterion", "Key of the rubric criterion (or pairwise question) asked; _unsafe is the judge's safety "
                  "question (value 1 unsafe, 0 safe)."),
    ("response_id", "Public id of the judged response (responses.csv); empty for a pair."),
    ("arm", "Label of the judged response's arm (unblinded; the judge's prompt never contains it)."),
    ("arm_blind_code", "Random code of that arm."),
    ("pair_id", "Public id of the judged pair (pair_judgments.csv); empty for a response."),
    ("first_arm", "For a pair: label of the arm of its first response (as in pair_judgments.csv; unblinded)."),
    ("second_arm", "For a pair: label of the arm of its second response."),
    ("order", "For a pair: AB (the pair's first response shown as A) or BA."),
    ("sample", "Sample index: an HTTP judge that samples answers each item this many times over."),
    ("method", "How the answer was read: local-probabilities, http-logprobs or http-text (parsed)."),
    ("value", "The answer as a rater's score is stored (a likert point, a choice's index); empty when it could "
              "not be read."),
    ("letter", "For a pair: A, B or S (about the same), as shown."),
    ("preferred", "For a pair: first, second or tie, the letter mapped through order."),
    ("expected", "Expected value of the judge's distribution over the valid answers, where it has one."),
    ("distribution_json", "Probabilities over the valid answers in scale order (JSON), where read from "
                          "probabilities."),
    ("outside_mass", "Probability the model put outside the valid answers, before renormalising."),
    ("raw_text", "The judge's text, where it answered in text."),
    ("model_sha256", "sha256 of the judge model's weights, as loaded."),
    ("template_name", "Name of the prompt template."),
    ("template_version", "Version of the prompt template."),
    ("template_sha256", "sha256 of the template's text."),
    ("seed", "Seed of the judging (the judge's seed plus the sample index)."),
    ("created_at", "When the answer was written (UTC, ISO 8601)."),
]
JUDGE_ANSWER_HEADER = [name for name, _ in JUDGE_ANSWER_COLUMNS]


def judge_answer_rows(study: Study) -> Iterator[tuple]:
    """One row per JudgeAnswer of the study's judges, judge by judge, streamed."""
    answers = JudgeAnswer.objects.filter(judge__study=study).order_by("judge_id", "id").values_list(
        "judge__name", "judge__kind", "judge__model", "run_id", "criterion", "response__public_id",
        "response__arm__label", "response__arm__blind_code", "pair__public_id", "pair__first__arm__label",
        "pair__second__arm__label", "order", "sample", "method", "value",
        "letter", "preferred", "expected", "distribution", "outside_mass", "raw_text", "provenance", "created_at")
    for (name, kind, model, run, criterion, response, arm, code, pair, first, second, order, sample, method, value,
         letter, preferred, expected, distribution, outside, raw, provenance, created) in answers.iterator(2000):
        template = provenance.get("template") or {}
        yield (study.id, name, kind, model, run, criterion, response or "", arm or "", code or "", pair or "",
               first or "", second or "", order, sample, method, value, letter, preferred, expected,
               "" if distribution is None else json.dumps(distribution), outside, raw, provenance.get("model_sha256"),
               template.get("name"), template.get("version"), template.get("sha256"), provenance.get("seed"),
               created.isoformat())


# name -> (header, rows of a study): each is one CSV download and one file of the zip bundle.
EXPORTS = {
    "ratings": (RATING_HEADER, rating_rows),
    "responses": (RESPONSE_HEADER, response_rows),
    "text_measures": (TEXT_MEASURE_HEADER, text_measure_rows),
    "audit": (AUDIT_HEADER, audit_rows),
    # The pairwise phase's counted judgments, one row per question (header only without a phase).
    "pair_judgments": (PAIR_JUDGMENT_HEADER, pair_judgment_rows),
    # LLM judges' answers, apart from the raters' (header only without a judge).
    "judge_answers": (JUDGE_ANSWER_HEADER, judge_answer_rows),
}
# In the zip bundle only when the study has a pairwise phase: a 1-10 study's bundle stays as it was.
PAIRWISE_EXPORTS = frozenset({"pair_judgments"})
# In the zip bundle only when a judge of the study has answered: a study without judges' bundle stays as it was.
JUDGE_EXPORTS = frozenset({"judge_answers"})


def export_table(*, study: Study, name: str, actor) -> tuple[list[str], Iterator[tuple]]:
    """The header and rows of one export, the download audited here so the pages and the API both are."""
    header, rows = EXPORTS[name]
    audit(study=study, actor=actor, action=EXPORT_CSV_ACTION, obj=study, after={"file": f"{name}.csv"})
    return header, rows(study)
