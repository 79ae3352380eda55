"""'This one is distressing': skip an item without penalty, recorded apart from skips (raters.services.welfare)."""

from django.db import transaction
from django.utils import timezone

from evalapp.models import Study

from ..models import Assignment, DistressReport, PairAssignment
from .common import RatingError
from .pairwise import _open_phase, _pair_assignment_for
from .ratings import _assignment_for
from .welfare import DISTRESS_SKIP, notice_topics, welfare_settings


def distress_report(*, study: Study, rater, item_public_id: str, topic: str = "", pairwise: bool = False) -> None:
    """Released to others as a skip is (the item counts as done for this rater only); a DistressReport
    row, never a skip reason that counts. Allowed past a cap: it is a way out of an item, not more
    rating. Idempotent."""
    topic = topic.strip()[:200]
    if topic not in notice_topics(welfare_settings(study)):
        topic = ""
    if pairwise:
        _open_phase(study)
        assignment = _pair_assignment_for(study, rater, item_public_id)
        target = {"pair_id": assignment.pair_id} if assignment.pair_id else {"gold_pair_id": assignment.gold_pair_id}
        rows = PairAssignment.objects.filter(id=assignment.id, completed_at__isnull=True)
    else:
        if study.status != Study.Status.RATING:
            raise RatingError("This study is not open for rating.", status=409)
        assignment = _assignment_for(study, rater, item_public_id)
        target = ({"response_id": assignment.response_id} if assignment.response_id
                  else {"gold_item_id": assignment.gold_item_id})
        rows = Assignment.objects.filter(id=assignment.id, completed_at__isnull=True)
    with transaction.atomic():
        DistressReport.objects.get_or_create(study=study, rater=rater, **target, defaults={"topic": topic})
        rows.update(completed_at=timezone.now(), skip_reason=DISTRESS_SKIP)
