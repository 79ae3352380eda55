"""Preference pairs for the next adapter: what the raters preferred, as TRL's DPO trainer reads it.

One JSON object a line in TRL's conversational preference format: "prompt" is the conversation the
raters saw, ending with the user turn; "chosen" and "rejected" are one assistant turn each. A system
message opens the prompt only when both arms answered under the same system prompt: DPO scores both
completions after one prompt, and the conversation alone is what the raters judged.

One file for every pairwise question, each line naming its `criterion`: a pair preferred on two
questions is two lines, so filter on `criterion` (or download with `?criterion=key`) before training.

The stated rule: a pair is in on a question when its final verdict (the adjudicated one, else the strict
majority of its counted judgments, evalapp.pair_results.final_verdicts) picks a side, and that verdict
rests on an adjudication or on at least MIN_JUDGMENTS counted judgments. Left out: ties, pairs without
a majority, single-judgment pairs, and pairs with a response excluded after a safety review.
margin = (votes for chosen - votes for rejected) / n_raters, over the counted judgments (an
adjudicated pair keeps its raters' votes, so its margin may be 0 or below).
"""

import json
from collections.abc import Iterator

from ..audit import audit
from ..models import PairwisePhase, ResponsePair, Study
from ..pair_results import final_verdicts, judgment_records
from ..pair_rubric import FIRST, SECOND

MIN_JUDGMENTS = 2
EXPORT_JSONL_ACTION = "export.jsonl"
FILE = "preferences.jsonl"
PREFERENCE_FIELDS = [
    ("prompt", "The conversation as [{role, content}], ending with the user turn; a system turn first only when "
               "both arms had the same system prompt."),
    ("chosen", "[{role: assistant, content}]: the response the raters preferred."),
    ("rejected", "[{role: assistant, content}]: the other response."),
    ("margin", "(votes for chosen - votes for rejected) / n_raters, over counted judgments."),
    ("n_raters", "Counted judgments of the pair on this question."),
    ("criterion", "Key of the pairwise question the preference is on."),
    ("source", "adjudicated or majority: where the final verdict came from."),
    ("prompt_id", "External id of the prompt."),
    ("pair_id", "Public id of the pair (pair_judgments.csv)."),
    ("chosen_arm", "Label of the arm that wrote the chosen response."),
    ("rejected_arm", "Label of the arm that wrote the rejected response."),
    ("chosen_response_id", "Public id of the chosen response (responses.csv)."),
    ("rejected_response_id", "Public id of the rejected response."),
    ("simulated", "True if any judgment of the pair came from the demo's rater simulation."),
]


class UnknownCriterion(ValueError):
    pass


def preference_records(study: Study, criterion: str | None = None) -> Iterator[dict]:
    """The export's lines as dicts, in pair then question order."""
    phase = PairwisePhase.objects.filter(study=study).first()
    keys = phase.keys() if phase is not None else []
    if criterion is not None and criterion not in keys:
        raise UnknownCriterion(f"No pairwise question {criterion!r}: use one of {', '.join(keys) or '(none)'}.")
    records = judgment_records(study)
    excluded = {r["pair"] for r in records if r["excluded"]}
    simulated = {r["pair"] for r in records if r["simulated"]}
    final = final_verdicts(study, [r for r in records if not r["excluded"]])
    wanted = [criterion] if criterion else keys
    pairs = (ResponsePair.objects.filter(study=study, public_id__in={p for p, _ in final})
             .select_related("prompt", "first__arm", "second__arm").order_by("id"))
    for pair in pairs.iterator(chunk_size=500):
        if pair.public_id in excluded:
            continue
        for key in wanted:
            settled = final.get((pair.public_id, key))
            if settled is None or settled["verdict"] not in (FIRST, SECOND):
                continue
            if settled["source"] != "adjudicated" and settled["n"] < MIN_JUDGMENTS:
                continue
            chosen, rejected = (pair.first, pair.second) if settled["verdict"] == FIRST else (pair.second, pair.first)
            n = settled["n"]
            margin = (settled["votes"][settled["verdict"]] - settled["votes"][SECOND if settled["verdict"] == FIRST
                                                                               else FIRST]) / n if n else 0.0
            system = chosen.arm.system_prompt
            prompt = ([{"role": "system", "content": system}] if system and system == rejected.arm.system_prompt
                      else []) + [{"role": m["role"], "content": m["content"]} for m in pair.prompt.messages]
            yield {"prompt": prompt, "chosen": [{"role": "assistant", "content": chosen.text}],
                   "rejected": [{"role": "assistant", "content": rejected.text}], "margin": margin, "n_raters": n,
                   "criterion": key, "source": settled["source"], "prompt_id": pair.prompt.external_id,
                   "pair_id": pair.public_id, "chosen_arm": chosen.arm.label, "rejected_arm": rejected.arm.label,
                   "chosen_response_id": chosen.public_id, "rejected_response_id": rejected.public_id,
                   "simulated": pair.public_id in simulated}


def preference_lines(study: Study, criterion: str | None = None) -> Iterator[str]:
    for record in preference_records(study, criterion):
        yield json.dumps(record, ensure_ascii=False) + "\n"


def export_preferences(*, study: Study, actor, criterion: str | None = None) -> Iterator[str]:
    """The lines of the download, audited here (after the criterion is checked, so a refused request
    records nothing) so the page and any later API both are."""
    lines = list(preference_lines(study, criterion))
    audit(study=study, actor=actor, action=EXPORT_JSONL_ACTION, obj=study,
          after={"file": FILE, **({"criterion": criterion} if criterion else {})})
    return iter(lines)
