"""The content notice at consent: what the rater was shown when they agreed, kept as it read then."""

from django.db import transaction

from evalapp.models import Study

from ..models import ConsentVersion, WelfareNoticeSeen
from .consent import consent_accept
from .welfare import notice_topics, welfare_settings


def notice_record(*, study: Study, user, consent_version: int) -> WelfareNoticeSeen:
    settings = welfare_settings(study)
    return WelfareNoticeSeen.objects.create(study=study, user=user, consent_version=consent_version,
                                            topics=notice_topics(settings), notice=settings.notice)


@transaction.atomic
def consent_accept_noticed(*, study: Study, user, version: ConsentVersion, shown: bool):
    """Consent from the consent page: `shown` says the page carried the notice (its form says so)."""
    consent = consent_accept(study=study, user=user, version=version)
    already = WelfareNoticeSeen.objects.filter(study=study, user=user, consent_version=version.version).exists()
    if shown and not already:
        notice_record(study=study, user=user, consent_version=version.version)
    return consent
