"""The append-only audit trail: every decision, revision, exclusion and withdrawal writes one event."""

from .models import AuditEvent, Study


def audit(*, study: Study, actor, action: str, obj, before=None, after=None) -> AuditEvent:
    return AuditEvent.objects.create(
        study=study, actor=actor, action=action, object_type=type(obj).__name__, object_id=str(obj.pk),
        before=before, after=after,
    )
