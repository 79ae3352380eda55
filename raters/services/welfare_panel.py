"""A pool participant (Prolific and the like) who reaches a welfare cap: finished, with the completion code.

A pool's session is one sitting with a time limit, so "come back tomorrow" (or in half an hour) cannot
be followed: the cap ends the participant's part, paid for what they did. What they rated stays and
counts; their unfinished items go to the other raters, as for a participant who timed out; their consent
is closed so the design gives them nothing more. The code, its record and the redirect are the pool
service's own (raters.services.panel.panel_complete), which sees the participant completed.
"""

from django.db import transaction
from django.utils import timezone

from evalapp.audit import audit
from evalapp.models import AuditEvent, Study

from ..models import Assignment, Consent, PairAssignment
from ..panel_models import PanelParticipant, ParticipantStatus
from .common import RatingError
from .design import design_rebalance
from .panel import Completion, panel_complete, panel_outcome
from .welfare import rater_state


def panel_cap_finish(*, study: Study, rater) -> Completion:
    """Idempotent: a second request (a double click) answers the same completion."""
    found = PanelParticipant.objects.filter(user=rater, study=study).first()
    if found is None:
        raise RatingError("Only a participant from a study pool finishes with a completion code.", status=409)
    with transaction.atomic():
        participant = PanelParticipant.objects.select_for_update().select_related("link", "study", "user").get(
            id=found.id)
        if participant.status == ParticipantStatus.ACTIVE:
            state = rater_state(study, rater)
            if state.cap is None:
                raise RatingError("You have not reached a limit on how much to rate: go on rating.", status=409)
            PanelParticipant.objects.filter(id=participant.id).update(status=ParticipantStatus.COMPLETED)
            participant.status = ParticipantStatus.COMPLETED
            Consent.objects.filter(study=study, user=rater, withdrawn_at__isnull=True).update(withdrawn_at=timezone.now())
            released = (Assignment.objects.filter(study=study, rater=rater, completed_at__isnull=True).delete()[0]
                        + PairAssignment.objects.filter(study=study, rater=rater, completed_at__isnull=True).delete()[0])
            audit(study=study, actor=rater, action="panel.cap_reached", obj=participant,
                  after={"cap": state.cap, "limit": state.limit, "items_today": state.items_today,
                         "released": released})
            try:
                with transaction.atomic():
                    design_rebalance(study=study)
            except RatingError as exc:
                # As for a participant who left: the raters still in cannot cover the design; on record.
                audit(study=study, actor=rater, action="design.rebalance_refused", obj=study,
                      after={"reason": exc.message})
        elif participant.status != ParticipantStatus.COMPLETED:
            raise RatingError("You have already finished this study.", status=409)
        completion = panel_complete(participant=participant)
    if completion is None:  # panel_complete knows the participant completed; kept for a later change of it
        raise RatingError("Your completion code could not be recorded; ask the researcher.", status=409)
    return completion


def panel_finish_at_cap(*, participant: PanelParticipant) -> Completion | None:
    """The code page of an active participant at a cap: finished with the completion code, as the cap box
    finishes them (they could not go on rating); None when no cap stops them, or when they have another
    outcome (screened out)."""
    if participant.status != ParticipantStatus.ACTIVE or panel_outcome(participant)[0] is not None:
        return None
    if rater_state(participant.study, participant.user).cap is None:
        return None
    return panel_cap_finish(study=participant.study, rater=participant.user)


def panel_cap_reached(participant: PanelParticipant) -> dict | None:
    """{"cap": "session" | "day", "limit": items} when the participant finished at a cap (so their page
    says so, not that they finished every item), from the record panel_cap_finish made; else None."""
    if participant.status != ParticipantStatus.COMPLETED:
        return None
    event = AuditEvent.objects.filter(study_id=participant.study_id, action="panel.cap_reached",
                                      object_type=PanelParticipant.__name__, object_id=str(participant.id)).first()
    return event.after if event is not None else None
