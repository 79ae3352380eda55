"""Rater welfare: breaks and caps (the pure rules, then the pages), the distress skip, the content notice,
crisis resources, the researcher's flags, and who may see what."""

import ast
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from django.urls import reverse

from evalapp.models import AuditEvent, Rating, Response, Study
from raters import services
from raters import welfare as rules
from raters.models import Assignment, DistressReport, Role, WelfareBreak, WelfareNoticeSeen
from raters.quality import study_rater_quality
from raters.selectors import next_item
from raters.services import RatingError, Submission

from ..factories import MembershipFactory, UserFactory
from .conftest import add_rater

T0 = datetime(2026, 5, 4, 9, 0)
DAY = datetime(2026, 5, 4)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


# ----------------------------------------------------------------------------- the pure rules


def test_a_break_is_due_after_n_items_and_pressing_continue_starts_the_count_again():
    limits = rules.Limits(break_every_items=3)
    done = [at(1), at(2)]
    assert not rules.welfare_state(limits, done, [], now=at(2.5), day_start=DAY).break_due
    done.append(at(3))
    state = rules.welfare_state(limits, done, [], now=at(3.5), day_start=DAY)
    assert state.break_due and state.items_since_break == 3
    after = rules.welfare_state(limits, done, [at(4)], now=at(4), day_start=DAY)
    assert not after.break_due and after.items_since_break == 0
    again = rules.welfare_state(limits, [*done, at(5), at(6)], [at(4)], now=at(6.5), day_start=DAY)
    assert not again.break_due and again.items_since_break == 2


def test_a_break_is_due_after_m_minutes_of_rating_and_a_long_pause_counts_as_one():
    limits = rules.Limits(break_every_minutes=30)
    done = [at(m) for m in range(0, 31, 3)]  # one item every 3 minutes, for 30 minutes
    state = rules.welfare_state(limits, done, [], now=at(30.5), day_start=DAY)
    assert state.break_due and state.minutes_since_break == pytest.approx(30.5)
    assert not rules.welfare_state(limits, done[:5], [], now=at(13), day_start=DAY).break_due
    # Away for the rest time: the break was taken without pressing anything.
    assert not rules.welfare_state(limits, done, [], now=at(30) + rules.REST, day_start=DAY).break_due
    # A pause of the rest time in the middle: only the stretch after it counts.
    split = [at(0), at(10), at(20), at(29), at(31)]
    state = rules.welfare_state(limits, split, [], now=at(31.5), day_start=DAY)
    assert not state.break_due and state.items_since_break == 2


def test_zero_turns_breaks_and_caps_off():
    done = [at(m / 10) for m in range(500)]
    state = rules.welfare_state(rules.Limits(), done, [], now=at(50), day_start=DAY)
    assert not state.break_due and state.cap is None and state.items_today == 500


def test_the_day_cap_counts_todays_items_and_lifts_at_midnight():
    limits = rules.Limits(cap_per_day=4)
    yesterday = [DAY - timedelta(hours=1), DAY - timedelta(hours=2)]
    today = [at(0), at(1), at(2)]
    state = rules.welfare_state(limits, yesterday + today, [], now=at(3), day_start=DAY)
    assert state.cap is None and state.items_today == 3
    state = rules.welfare_state(limits, [*yesterday, *today, at(3)], [], now=at(4), day_start=DAY)
    assert state.cap == "day" and not state.break_due and state.limit == 4
    tomorrow = DAY + timedelta(days=1)
    assert rules.welfare_state(limits, [*today, at(3)], [], now=tomorrow + timedelta(hours=8),
                               day_start=tomorrow).cap is None


def test_the_session_cap_lifts_after_the_session_gap():
    limits = rules.Limits(cap_per_session=3)
    done = [at(0), at(1), at(2)]
    state = rules.welfare_state(limits, done, [], now=at(3), day_start=DAY)
    assert state.cap == "session" and state.resume_at == at(2) + rules.SESSION_GAP and state.limit == 3
    assert rules.welfare_state(limits, done, [], now=at(2) + rules.SESSION_GAP + timedelta(seconds=1),
                               day_start=DAY).cap is None
    # Items before a long pause belong to an earlier session.
    later = [at(0), at(1), at(60), at(61)]
    assert rules.welfare_state(limits, later, [], now=at(62), day_start=DAY).items_in_session == 2


def test_crisis_links_are_http_https_or_tel_only():
    assert rules.parse_links("Samaritans | https://www.samaritans.org\nCall | tel:116123\n\n") == [
        {"label": "Samaritans", "url": "https://www.samaritans.org"}, {"label": "Call", "url": "tel:116123"}]
    for bad in ("x | javascript:alert(1)", "x | data:text/html,hi", "x | ftp://a.org", "x | https://", "x | tel:abc",
                "no separator", " | https://a.org"):
        with pytest.raises(ValueError, match="Line 1"):
            rules.parse_links(bad)
    assert rules.links_text([{"label": "a", "url": "tel:1"}]) == "a | tel:1"


def test_flags_need_enough_reports_and_a_share_of_readers():
    # The defaults (3 and 20 %): one or two reports are no pattern yet, however few read the item...
    assert not rules.flagged(1, 1, min_reports=3, min_percent=20)
    assert not rules.flagged(2, 2, min_reports=3, min_percent=20)
    assert rules.flagged(3, 3, min_reports=3, min_percent=20)
    # ... and three among a hundred readers are not one either.
    assert not rules.flagged(3, 100, min_reports=3, min_percent=20)
    assert rules.flagged(20, 100, min_reports=3, min_percent=20)
    assert not rules.flagged(19, 100, min_reports=3, min_percent=20)
    # 0 drops one condition; both 0 turn flags off; no report is never a flag.
    assert rules.flagged(1, 10, min_reports=0, min_percent=10) and rules.flagged(2, 100, min_reports=2, min_percent=0)
    assert not rules.flagged(5, 5, min_reports=0, min_percent=0)
    assert not rules.flagged(0, 5, min_reports=1, min_percent=1)
    # Whoever reported an item read it, even if the readers' count lags.
    assert rules.flagged(3, 0, min_reports=3, min_percent=50)
    assert rules.flag_rule(3, 20) == ("An item is flagged for review when at least 3 raters and at least 20% of the "
                                      "raters who read it found it distressing.")
    assert rules.flag_rule(1, 0).endswith("at least 1 rater found it distressing.")
    assert rules.flag_rule(0, 0).startswith("Flags are off")


def test_the_rules_module_imports_no_django():
    tree = ast.parse(Path(rules.__file__).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= {"collections", "dataclasses", "datetime", "urllib"}, imported


# ----------------------------------------------------------------------------- the rows and pages


@pytest.fixture
def open_study(rating_study):
    raters = [add_rater(rating_study, name) for name in ("rita", "sam", "tess")]
    services.study_open_for_rating(study=rating_study)
    rating_study.refresh_from_db()
    return rating_study, raters


def current(study, rater):
    slot = next_item(study=study, rater=rater).assignment
    return slot.gold_item.public_id if slot.gold_item_id else slot.response.public_id


def rate_one(study, rater, empathy=5):
    services.rating_submit(study=study, rater=rater, item_public_id=current(study, rater),
                           submission=Submission({"empathy": empathy, "fluency": 6}, seconds_on_item=20))


def test_distress_skips_without_penalty_and_apart_from_skips(client, open_study):
    study, (rita, sam, _) = open_study
    for _ in range(3):
        rate_one(study, rita)
        rate_one(study, sam)
    quality_before = {q.user_id: q for q in study_rater_quality(study=study)}
    item = next_item(study=study, rater=rita).assignment.response
    client.force_login(rita)
    response = client.post(reverse("rate_distress", args=[study.id, item.public_id]),
                           {"distress_topic": "Bereavement and loss"})
    assert response.status_code == 302 and response["Location"] == reverse("rate", args=[study.id])
    report = DistressReport.objects.get()
    assert (report.rater, report.response, report.topic) == (rita, item, "Bereavement and loss")
    slot = Assignment.objects.get(rater=rita, response=item)
    assert slot.completed_at is not None and slot.skip_reason == services.DISTRESS_SKIP
    assert not Rating.objects.filter(rater=rita, response=item).exists()
    assert next_item(study=study, rater=rita).assignment.response != item  # released: not shown again
    # Pressed twice (a double click): one report.
    client.post(reverse("rate_distress", args=[study.id, item.public_id]))
    assert DistressReport.objects.count() == 1
    # Never against the rater: their quality row is what it was, no flag; rita and sam alike.
    quality = {q.user_id: q for q in study_rater_quality(study=study)}
    assert quality[rita.id] == quality_before[rita.id] and quality[rita.id].flags == []
    assert quality[rita.id].n_ratings == quality[sam.id].n_ratings == 3


def test_a_distress_skip_by_fetch_answers_the_next_item_and_an_unknown_topic_is_dropped(client, open_study):
    study, (rita, *_) = open_study
    first = current(study, rita)
    client.force_login(rita)
    response = client.post(reverse("rate_distress", args=[study.id, first]), {"distress_topic": "<b>made up</b>"},
                           HTTP_X_REQUESTED_WITH="fetch")
    assert response.status_code == 200 and 'id="rate-item"' in response.content.decode()
    assert current(study, rita) in response.content.decode() and current(study, rita) != first
    assert DistressReport.objects.get().topic == ""
    assert client.post(reverse("rate_distress", args=[study.id, "nope"]), HTTP_X_REQUESTED_WITH="fetch"
                       ).status_code == 404


def test_the_rate_page_has_the_distress_button_and_the_crisis_link_and_no_arm(client, open_study):
    study, (rita, *_) = open_study
    Response.objects.filter(prompt__study=study).update(text="A reply.")  # the fixture's texts name their arm
    client.force_login(rita)
    page = client.get(reverse("rate", args=[study.id])).content.decode()
    assert 'id="distress"' in page and f'formaction="{reverse("rate_distress", args=[study.id, current(study, rita)])}"' in page
    assert f'href="{reverse("support", args=[study.id])}"' in page
    for secret in ("fine-tuned", "baseline", "secret-ft"):
        assert secret not in page


def test_a_break_prompt_replaces_the_item_until_continue(client, open_study):
    study, (rita, *_) = open_study
    services.welfare_save(study=study, actor=study.owner, break_every_items=2, break_every_minutes=0)
    client.force_login(rita)
    for _ in range(2):
        rate_one(study, rita)
    page = client.get(reverse("rate", args=[study.id])).content.decode()
    assert 'id="welfare-break"' in page and 'id="rating-form"' not in page
    # Its own way to the crisis resources, as the cap box has: the rater may want help, not only a rest.
    box = page[page.index('id="welfare-break"'):]
    box = box[:box.index("</div>")]
    assert f'href="{reverse("support", args=[study.id])}"' in box
    response = client.post(reverse("welfare_break", args=[study.id]), {"page": "rate"})
    assert response.status_code == 302 and WelfareBreak.objects.filter(rater=rita).count() == 1
    page = client.get(reverse("rate", args=[study.id])).content.decode()
    assert 'id="welfare-break"' not in page and 'id="rating-form"' in page


def test_a_cap_refuses_more_and_writes_nothing(client, open_study):
    study, (rita, *_) = open_study
    services.welfare_save(study=study, actor=study.owner, cap_per_day=2, break_every_items=0)
    rate_one(study, rita)
    rate_one(study, rita)
    item = current(study, rita)
    ratings, slots = Rating.objects.count(), list(Assignment.objects.values_list("id", "completed_at", "skip_reason"))
    with pytest.raises(RatingError, match="today's limit of 2 items") as refused:
        rate_one(study, rita)
    assert refused.value.status == 409
    with pytest.raises(RatingError, match="today's limit"):
        services.assignment_skip(study=study, rater=rita, item_public_id=item, reason="unclear")
    client.force_login(rita)
    response = client.post(reverse("rate_submit", args=[study.id, item]), {"score-empathy": "5", "score-fluency": "5"},
                           HTTP_X_REQUESTED_WITH="fetch")
    assert response.status_code == 409 and "come back tomorrow" in response.content.decode()
    assert Rating.objects.count() == ratings
    assert list(Assignment.objects.values_list("id", "completed_at", "skip_reason")) == slots
    page = client.get(reverse("rate", args=[study.id])).content.decode()
    assert 'id="welfare-cap"' in page and "come back tomorrow" in page and 'id="rating-form"' not in page
    # A revision of an item already rated is not more reading: allowed.
    rated = Rating.objects.filter(rater=rita).first().response.public_id
    assert services.rating_submit(study=study, rater=rita, item_public_id=rated,
                                  submission=Submission({"empathy": 9, "fluency": 6})) == "revised"


def test_the_notice_comes_before_consent_and_is_recorded_as_shown(client, rating_study):
    study = rating_study
    services.welfare_save(study=study, actor=study.owner, topics=["self_harm"], other_topics="Eating disorders",
                          notice="Some of this is hard to read.")
    rater = MembershipFactory(study=study, user=UserFactory(username="nina"), role=Role.RATER).user
    client.force_login(rater)
    page = client.get(reverse("consent", args=[study.id])).content.decode()
    assert page.index('id="content-notice"') < page.index('id="consent-text"')
    assert "Self-harm and suicide" in page and "Eating disorders" in page and "Bereavement" not in page
    assert "Some of this is hard to read." in page and 'name="welfare_notice" value="shown"' in page
    assert not WelfareNoticeSeen.objects.exists()  # reading the page writes nothing
    version = study.consent_versions.get()
    client.post(reverse("consent", args=[study.id]), {"version": version.version, "agree": "yes",
                                                      "welfare_notice": "shown"})
    seen = WelfareNoticeSeen.objects.get()
    assert (seen.user, seen.consent_version, seen.notice) == (rater, version.version, "Some of this is hard to read.")
    assert seen.topics == ["Self-harm and suicide", "Eating disorders"]
    # A consent that did not come from the page with the notice records no notice.
    other = MembershipFactory(study=study, user=UserFactory(username="omar"), role=Role.RATER).user
    client.force_login(other)
    client.post(reverse("consent", args=[study.id]), {"version": version.version, "agree": "yes"})
    assert WelfareNoticeSeen.objects.count() == 1 and other.consents.exists()


def test_defaults_warn_of_every_preset_and_name_no_country(rating_study):
    settings = services.welfare_settings(rating_study)
    assert settings.pk is None  # not written until a researcher saves
    assert services.notice_topics(settings) == list(rules.PRESET_TOPICS.values())
    assert "local emergency services" in settings.crisis_text and settings.crisis_links == []
    assert (settings.cap_per_day, settings.cap_per_session) == (0, 0)


def test_settings_change_while_open_is_audited_and_bad_links_are_refused(client, open_study):
    study, _ = open_study
    assert study.status == Study.Status.RATING
    client.force_login(study.owner)
    form = {"topics": ["abuse"], "other_topics": "", "notice": "Heavy material.", "break_every_items": "10",
            "break_every_minutes": "20", "cap_per_day": "50", "cap_per_session": "0", "crisis_text": "Get help.",
            "crisis_links": "Helpline | tel:+44 116 123\nWeb | https://help.example.org", "flag_min_reports": "2",
            "flag_min_percent": "40"}
    response = client.post(reverse("welfare_page", args=[study.id]), {**form, "crisis_links": "x | javascript:alert(1)"})
    assert response.status_code == 400 and "only http://, https:// and tel:" in response.content.decode()
    assert not AuditEvent.objects.filter(action="welfare.update").exists()
    assert client.post(reverse("welfare_page", args=[study.id]), form).status_code == 302
    settings = services.welfare_settings(Study.objects.get(id=study.id))
    assert settings.crisis_links[0] == {"label": "Helpline", "url": "tel:+44 116 123"} and settings.cap_per_day == 50
    event = AuditEvent.objects.get(action="welfare.update")
    assert event.before is None and event.after["cap_per_day"] == 50 and event.actor == study.owner
    with pytest.raises(RatingError, match="only http"):
        services.welfare_save(study=study, actor=study.owner, crisis_links=[{"label": "x", "url": "javascript:x"}])
    # The support page shows them to any member.
    rater = study.memberships.filter(role=Role.RATER).first().user
    client.force_login(rater)
    page = client.get(reverse("support", args=[study.id])).content.decode()
    assert "Get help." in page and 'href="tel:+44 116 123"' in page and 'href="https://help.example.org"' in page


def test_items_found_distressing_are_flagged_for_review_per_item_and_topic(client, open_study):
    study, (rita, sam, tess) = open_study
    services.welfare_save(study=study, actor=study.owner, flag_min_reports=2, flag_min_percent=0)
    target = next_item(study=study, rater=rita).assignment.response
    # sam reads it too (the design gives each response to two of the three raters; make sure it is sam).
    if not Assignment.objects.filter(rater=sam, response=target).exists():
        Assignment.objects.create(study=study, rater=sam, response=target, position=999, design_seed=0)
    services.distress_report(study=study, rater=rita, item_public_id=target.public_id, topic="Abuse and violence")
    summary = services.distress_summary(study)
    assert summary["total"] == 1 and summary["flagged"] == 0
    services.distress_report(study=study, rater=sam, item_public_id=target.public_id)
    other = Assignment.objects.filter(rater=tess, response__isnull=False).exclude(response=target).first().response
    services.distress_report(study=study, rater=tess, item_public_id=other.public_id, topic="Abuse and violence")
    summary = services.distress_summary(study)
    rows = {row["response"]: row for row in summary["items"]}
    assert rows[target]["reports"] == 2 and rows[target]["flagged"] and not rows[other]["flagged"]
    assert dict(summary["by_topic"]) == {"Abuse and violence": 2, "(no topic given)": 1}
    client.force_login(study.owner)
    page = client.get(reverse("welfare_page", args=[study.id])).content.decode()
    assert "flagged for review" in page and reverse("adjudication_item", args=[study.id, target.public_id]) in page
    assert target.arm.label in page  # researchers may see arms


def test_pairwise_distress_skips_the_pair(client, open_study):
    study, (rita, *_) = open_study
    services.pair_phase_save(study=study, criteria=[{"key": "empathy", "question": "More empathetic?"}],
                             judgments_per_pair=2, gold_rate=0.0, reason="none")
    services.pair_phase_open(study=study)
    slot = study.pair_assignments.filter(rater=rita, completed_at__isnull=True).order_by("position").first()
    client.force_login(rita)
    page = client.get(reverse("compare", args=[study.id])).content.decode()
    assert reverse("compare_distress", args=[study.id, slot.pair.public_id]) in page and 'id="support-link"' in page
    response = client.post(reverse("compare_distress", args=[study.id, slot.pair.public_id]))
    assert response.status_code == 302
    slot.refresh_from_db()
    assert slot.completed_at is not None and slot.skip_reason == services.DISTRESS_SKIP
    assert DistressReport.objects.get().pair == slot.pair


def test_who_may_see_the_welfare_pages(client, open_study, outsider):
    study, (rita, *_) = open_study
    adjudicator = MembershipFactory(study=study, user=UserFactory(username="adj"), role=Role.ADJUDICATOR).user
    cases = [(study.owner, "welfare_page", 200), (rita, "welfare_page", 404), (adjudicator, "welfare_page", 404),
             (outsider, "welfare_page", 404), (study.owner, "support", 200), (rita, "support", 200),
             (adjudicator, "support", 200), (outsider, "support", 404)]
    for user, name, status in cases:
        client.force_login(user)
        assert client.get(reverse(name, args=[study.id])).status_code == status, (user, name)
    client.force_login(outsider)
    assert client.post(reverse("welfare_break", args=[study.id])).status_code == 404
    assert client.post(reverse("rate_distress", args=[study.id, current(study, rita)])).status_code == 404
    assert not DistressReport.objects.exists() and not WelfareBreak.objects.exists()


def test_simulated_ratings_were_read_by_nobody_and_count_towards_no_break(open_study):
    study, (rita, *_) = open_study
    services.welfare_save(study=study, actor=study.owner, break_every_items=2, break_every_minutes=0)
    rate_one(study, rita)
    rate_one(study, rita)
    assert services.rater_state(study, rita).break_due
    Rating.objects.filter(rater=rita).update(simulated=True)  # as the demo's are
    state = services.rater_state(study, rita)
    assert not state.break_due and state.items_today == 0
