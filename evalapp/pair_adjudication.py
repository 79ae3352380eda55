"""The pairwise phase's adjudication: pairs whose raters found no majority, and the final verdicts.

The rule is evalapp.pair_rubric.needs_adjudication (no verdict held by a strict majority of the counted
judgments, once a pair has all the judgments its design asked for). Adjudicators see the two responses
in the pair's own order, labelled "first" and "second", with each rater's verdict and reason; as on the
1-10 side they see raters by pseudonym and never the arms.
"""

from collections import defaultdict
from dataclasses import dataclass, field

from django.db import IntegrityError, transaction

from raters.counting import counted_pair_judgments
from raters.models import Role, StudyMembership

from .audit import audit
from .errors import ServiceError
from .models import PairAdjudication, PairVerdict, PairwisePhase, ResponsePair, Study, Verdict
from .pair_rubric import needs_adjudication


class PairAdjudicationError(ServiceError):
    pass


@dataclass
class PairItem:
    pair: ResponsePair
    keys: list[str]  # questions still without a majority or a final verdict
    judgments: list[dict] = field(default_factory=list)  # {pseudonym, verdicts {key: verdict}, reason}


def _verdicts(study: Study, pair_ids=None) -> dict[int, list[dict]]:
    judgments = counted_pair_judgments(study)
    if pair_ids is not None:
        judgments = judgments.filter(pair_id__in=list(pair_ids))
    names = dict(StudyMembership.objects.filter(study=study, role=Role.RATER).values_list("user_id", "pseudonym"))
    rows: dict[int, dict] = {}
    for judgment in judgments.order_by("id"):
        rows[judgment.id] = {"pair_id": judgment.pair_id, "pseudonym": names.get(judgment.rater_id, "?"),
                             "reason": judgment.reason, "verdicts": {}}
    for judgment_id, key, verdict in PairVerdict.objects.filter(judgment_id__in=list(rows)).values_list(
            "judgment_id", "key", "verdict"):
        rows[judgment_id]["verdicts"][key] = verdict
    by_pair: dict[int, list[dict]] = defaultdict(list)
    for row in rows.values():
        by_pair[row.pop("pair_id")].append(row)
    return by_pair


def _pending(phase: PairwisePhase, judgments: list[dict], resolved: set[str]) -> list[str]:
    if len(judgments) < min(phase.judgments_per_pair, 2):
        return []
    return [key for key in phase.keys() if key not in resolved
            and needs_adjudication([j["verdicts"][key] for j in judgments if key in j["verdicts"]])]


def pair_queue(*, study: Study) -> list[PairItem]:
    phase = PairwisePhase.objects.filter(study=study).first()
    if phase is None or phase.status == PairwisePhase.Status.DRAFT:
        return []
    by_pair = _verdicts(study)
    resolved: dict[int, set[str]] = defaultdict(set)
    for pair_id, key in PairAdjudication.objects.filter(pair__study=study).values_list("pair_id", "key"):
        resolved[pair_id].add(key)
    pairs = ResponsePair.objects.in_bulk(list(by_pair))
    out = []
    for pair_id, judgments in sorted(by_pair.items()):
        keys = _pending(phase, judgments, resolved[pair_id])
        if keys:
            out.append(PairItem(pairs[pair_id], keys, judgments))
    return out


def pair_item(*, study: Study, pair: ResponsePair) -> PairItem:
    phase = PairwisePhase.objects.filter(study=study).first()
    if phase is None:
        raise PairAdjudicationError("This study has no pairwise phase.", status=404)
    judgments = _verdicts(study, [pair.id]).get(pair.id, [])
    resolved = set(PairAdjudication.objects.filter(pair=pair).values_list("key", flat=True))
    return PairItem(pair, _pending(phase, judgments, resolved), judgments)


@transaction.atomic
def pair_adjudication_resolve(*, study: Study, pair: ResponsePair, key: str, adjudicator, verdict: str,
                              rationale: str) -> PairAdjudication:
    is_member = StudyMembership.objects.filter(study=study, user=adjudicator, role=Role.ADJUDICATOR).exists()
    if not (is_member or study.owner_id == adjudicator.id):
        raise PairAdjudicationError("No such item.", status=404)
    if verdict not in Verdict.values:
        raise PairAdjudicationError("Choose the first response, the second, or about the same.")
    if not rationale.strip():
        raise PairAdjudicationError("Give a rationale for the final verdict.")
    item = pair_item(study=study, pair=pair)
    if key not in item.keys:
        raise PairAdjudicationError("This pair does not need adjudication on that question (or it is already "
                                    "resolved).", 409)
    try:
        with transaction.atomic():
            decision = PairAdjudication.objects.create(pair=pair, key=key, adjudicator=adjudicator, verdict=verdict,
                                                       rationale=rationale.strip(), n_judgments_seen=len(item.judgments))
    except IntegrityError:
        raise PairAdjudicationError("Another adjudicator resolved this question a moment ago.", 409) from None
    audit(study=study, actor=adjudicator, action="pair_adjudication.resolve", obj=decision,
          after={"pair": pair.public_id, "key": key, "verdict": verdict, "rationale": rationale.strip()})
    return decision
