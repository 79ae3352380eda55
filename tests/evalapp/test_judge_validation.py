"""The judge validation report from rows: judges as noisy as an expert and much noisier against simulated
raters (experts = truth + N(0, s), rounded), the rows turned into the same arrays the statistics would get
by hand, samples and unread answers, the unsafe flag and pairwise swap consistency counted by hand, the
expert group's choice, the cache following new data, and the page, its JSON, plot and API.

Long because one simulated study, built once for the module, serves every check of the report."""

import json

import lxml.html
import numpy as np
import pytest
from django.core.cache import cache
from django.db import transaction
from django.urls import reverse
from django.utils import timezone
from statsmodels.stats.proportion import proportion_confint

from evalapp.judge_validation import judge_report
from evalapp.models import (PairJudgment, PairVerdict, PairwisePhase, Rating, ResponsePair, SafetyDecision, Score,
                            Study)
from evalapp.stats.judges import judge_validation
from modelserver.models import SAFETY_KEY, Judge, JudgeAnswer, JudgeRun
from raters.models import Role, StudyMembership

from ..factories import ArmFactory, MembershipFactory, PromptFactory, ResponseFactory, StudyFactory, UserFactory

pytestmark = pytest.mark.django_db

RUBRIC = [{"key": "empathy", "question": "How empathetic?", "kind": "likert", "min": 1, "max": 10},
          {"key": "stance", "question": "Stance?", "kind": "choice", "options": ["agree", "disagree"]}]
# The simulation's seed, and the study's (the bootstrap's). While developing, data seeds 0-11 all gave these
# verdicts: the peer's CI upper end 0.035 or more above the ceiling, the noisy judge's 0.1 or more below.
SEED = 3
N_PROMPTS = 30  # x 2 arms = 60 responses
GROUPS = {"psychologists": (4, 1.0), "students": (3, 2.0)}  # name: (raters, noise SD)


def make_study(owner, n_prompts, rubric=RUBRIC) -> tuple[Study, list]:
    study = StudyFactory(owner=owner, rubric=rubric, design_seed=SEED)
    arms = [ArmFactory(study=study, label=label) for label in ("fine-tuned", "baseline")]
    prompts = PromptFactory.create_batch(n_prompts, study=study)
    responses = [ResponseFactory(prompt=prompt, arm=arm) for prompt in prompts for arm in arms]
    return study, responses


def add_rater(study, group="", name=None):
    return MembershipFactory(study=study, user=UserFactory(username=name) if name else UserFactory(),
                             role=Role.RATER, group=group).user


def rate(study, rater, values: dict):
    """values: response -> empathy score (None: not sure); the choice criterion gets 0."""
    criteria = {c.key: c for c in study.criteria.all()}
    ratings = Rating.objects.bulk_create(Rating(response=r, rater=rater) for r in values)
    Score.objects.bulk_create(
        Score(rating=rating, criterion=c, value=(value if key == "empathy" else 0),
              not_sure=key == "empathy" and value is None, min_value=c.min_value, max_value=c.max_value)
        for rating, value in zip(ratings, values.values(), strict=True) for key, c in criteria.items())


def make_judge(study, name="judge", **kwargs):
    judge = Judge.objects.create(study=study, name=name, kind=kwargs.pop("kind", "local"), model="bundled",
                                 created_by=study.owner, **kwargs)
    run = JudgeRun.objects.create(study=study, judge=judge, created_by=study.owner, status="succeeded")
    return judge, run


def answer(judge, run, response, value, criterion="empathy", sample=0):
    return JudgeAnswer(judge=judge, run=run, response=response, criterion=criterion, sample=sample,
                       method="test", value=value)


def scores(truth, sd, rng):
    return np.clip(np.floor(truth + rng.normal(0, sd, truth.size) + 0.5), 1, 10)


@pytest.fixture(scope="module")
def simulated(django_db_setup, django_db_blocker):
    """60 responses, 4 psychologists (SD 1), 3 students (SD 2), 2 raters with no group (SD 1.5) on half the
    responses; a judge as noisy as a psychologist (3 answers unread) and one much noisier (SD 3.5). Built
    once for the module (the reports are cached across its tests) and rolled back after it."""
    with django_db_blocker.unblock(), transaction.atomic():
        cache.clear()
        yield _simulate(UserFactory(username="alice-researcher"))
        transaction.set_rollback(True)


def _simulate(researcher) -> dict:
    rng = np.random.default_rng(SEED)
    study, responses = make_study(researcher, N_PROMPTS)
    truth = rng.uniform(2, 9, len(responses))
    columns = {}
    for group, (n, sd) in GROUPS.items():
        columns[group] = []
        for _ in range(n):
            given = scores(truth, sd, rng)
            rate(study, add_rater(study, group), {r: int(v) for r, v in zip(responses, given, strict=True)})
            columns[group].append(given)
    columns["raters"] = []
    for _ in range(2):
        given = scores(truth, 1.5, rng)
        rate(study, add_rater(study), {r: int(v) for r, v in zip(responses[::2], given[::2], strict=True)})
        columns["raters"].append(np.where(np.arange(len(responses)) % 2 == 0, given, np.nan))
    judges = {}
    for name, sd in (("peer", 1.0), ("noisy", 3.5)):
        judge, run = make_judge(study, name)
        values = scores(truth, sd, rng)
        if name == "peer":
            values[[5, 17, 40]] = np.nan
        JudgeAnswer.objects.bulk_create(
            answer(judge, run, r, None if np.isnan(v) else float(v)) for r, v in zip(responses, values, strict=True))
        judges[name] = (judge, values)
    return {"study": study, "responses": responses, "columns": columns, "judges": judges}


def test_a_judge_as_noisy_as_an_expert_is_within_the_ceiling_and_a_noisier_one_below(simulated):
    peer = judge_report(simulated["judges"]["peer"][0])
    noisy = judge_report(simulated["judges"]["noisy"][0])
    assert peer["expert"] == noisy["expert"] == "psychologists" and peer["expert_chosen_by"] == "default"
    assert peer["groups"] == {"psychologists": 4, "raters": 2, "students": 3}
    empathy, stance = peer["criteria"]
    assert stance["key"] == "stance" and "nominal" in stance["skipped"]
    assert empathy["verdict"] is True and empathy["verdict_words"] == "within the expert ceiling"
    assert empathy["verdicts"]["alpha"]["within"] is True
    bad = noisy["criteria"][0]
    assert bad["verdict"] is False and bad["verdict_words"] == "below the expert ceiling"
    assert bad["verdicts"]["alpha"]["within"] is False
    # The noisy judge is well below the ceiling, not at its edge: the whole CI of the difference is under 0.
    assert bad["stats"]["difference"]["kappa"]["ci95"][1] < 0
    assert empathy["n_items"] == 60 and empathy["n_unread"] == 3 and empathy["unread_items"] == 3
    assert empathy["stats"]["n_judged"] == 57 and empathy["raters"] == {"psychologists": 4, "raters": 2, "students": 3}


def test_the_report_is_the_statistics_of_the_arrays_built_by_hand(simulated):
    """The rows become exactly the arrays one would pass by hand (items in response order, raters per
    group, NaN where a rater did not rate), with the scale's points and the study's seed."""
    judge, values = simulated["judges"]["noisy"]
    report = judge_report(judge)
    cols = simulated["columns"]
    expected = judge_validation(values, {g: np.column_stack(cols[g]) for g in ("psychologists", "raters", "students")},
                                "psychologists", level="interval", labels=list(range(1, 11)), n_boot=1000,
                                seed=simulated["study"].design_seed % (2**31))
    got = report["criteria"][0]["stats"]
    for group in ("psychologists", "raters", "students"):
        for metric in ("kappa", "alpha", "consensus_kappa"):
            assert got["judge"][group][metric]["value"] == pytest.approx(expected["judge"][group][metric]["value"])
            assert got["judge"][group][metric]["ci95"] == pytest.approx(list(expected["judge"][group][metric]["ci95"]))
        assert got["ceiling"][group]["kappa"]["value"] == pytest.approx(expected["ceiling"][group]["kappa"]["value"])
    assert got["across"].keys() == expected["across"].keys()
    assert got["inflation"]["value"] == pytest.approx(expected["inflation"]["value"])
    assert got["bland_altman"]["limits"] == pytest.approx(list(expected["bland_altman"]["limits"]))


def test_samples_are_averaged_and_rounded_unread_ones_counted_never_guessed(researcher):
    study, responses = make_study(researcher, 3)
    experts = [4, 5, 6, 3, 7, 5]
    for _ in range(2):
        rate(study, add_rater(study, "psychologists"), dict(zip(responses, experts, strict=True)))
    judge, run = make_judge(study, kind="http", samples=2, temperature=0.7, safety=False)
    samples = [(4, 5), (None, 6), (None, None), (3, 3), (7, 8), (5, 6)]  # -> 5, 6, unread, 3, 8, 6 (half up)
    JudgeAnswer.objects.bulk_create(answer(judge, run, r, v, sample=k) for r, pair in zip(responses, samples,
                                                                                           strict=True)
                                    for k, v in enumerate(pair))
    block = judge_report(judge)["criteria"][0]
    assert block["n_answers"] == 12 and block["n_unread"] == 3 and block["unread_items"] == 1
    stats = block["stats"]
    assert stats["n_judged"] == 5
    # judge - expert mean: 1, 1, (unread), 0, 1, 1
    assert stats["inflation"]["value"] == pytest.approx(0.8) and stats["inflation"]["n"] == 5
    assert sorted(stats["bland_altman"]["differences"]) == [0, 1, 1, 1, 1]


def test_responses_without_human_scores_or_judge_answers_are_left_out(researcher):
    study, responses = make_study(researcher, 4)
    for _ in range(2):
        rate(study, add_rater(study, "experts"), {r: 5 + i % 3 for i, r in enumerate(responses[:6])})
    rate(study, add_rater(study, "experts"), {responses[0]: None})  # not sure: no score
    judge, run = make_judge(study)
    JudgeAnswer.objects.bulk_create(answer(judge, run, r, 6.0) for r in responses[1:])  # not the first
    block = judge_report(judge)["criteria"][0]
    assert block["n_items"] == 5 and block["n_judged_responses"] == 7
    assert block["raters"] == {"experts": 2}


def test_safety_recall_and_precision_counted_by_hand(researcher):
    study, responses = make_study(researcher, 5)
    judge, run = make_judge(study, safety=True)
    classes = ["harmful", "harmful", "minor", "minor", "no_issue", "no_issue", "no_issue", "no_issue", "harmful"]
    flags = [1, 0, 1, 1, 0, 1, 0, None]  # the ninth decided response has no judge answer; the tenth no decision
    for r, c in zip(responses, classes, strict=False):
        SafetyDecision.objects.create(response=r, classification=c, n_reviews=1)
    JudgeAnswer.objects.bulk_create([*(answer(judge, run, r, None if f is None else float(f), criterion=SAFETY_KEY)
                                       for r, f in zip(responses, flags, strict=False)),
                                     answer(judge, run, responses[9], 1.0, criterion=SAFETY_KEY)])
    safety = judge_report(judge)["safety"]
    assert safety["asked"] and "harmful or minor concern = unsafe" in safety["rule"]
    assert safety["n_decisions"] == 9 and safety["n_items"] == 8 and safety["n_unread"] == 1
    r = safety["recall"]
    # Unsafe (harmful, minor): flagged 1, 0, 1, 1 -> tp 3, fn 1; safe: 0, 1, 0, unread -> fp 1, tn 2.
    assert (r["tp"], r["fn"], r["fp"], r["tn"], r["n"]) == (3, 1, 1, 2, 7)
    assert r["recall"]["value"] == 0.75 and r["precision"]["value"] == 0.75
    assert r["recall"]["ci95"] == pytest.approx(list(proportion_confint(3, 4, method="wilson")))
    unasked, _ = make_judge(study, name="no safety question", safety=False)
    assert judge_report(unasked)["safety"] == {"asked": False, "rule": safety["rule"]}


def test_pairwise_agreement_and_swap_consistency_by_hand(researcher):
    study, responses = make_study(researcher, 7)
    PairwisePhase.objects.create(study=study, criteria=[{"key": "empathy", "question": "More empathetic?"}])
    pairs = [ResponsePair.objects.create(study=study, prompt=responses[2 * i].prompt, first=responses[2 * i],
                                         second=responses[2 * i + 1]) for i in range(7)]
    judge, run = make_judge(study, safety=False)
    # (AB letter, BA letter) per pair; "" unread, None not asked.
    letters = [("A", "B"), ("A", "A"), ("S", "S"), ("B", "A"), ("B", "B"), ("A", None), ("", "A")]
    mapping = {("A", "AB"): "first", ("B", "AB"): "second", ("A", "BA"): "second", ("B", "BA"): "first"}
    rows = []
    for pair, shown in zip(pairs, letters, strict=True):
        for order, letter in zip(("AB", "BA"), shown, strict=True):
            if letter is not None:
                preferred = "tie" if letter == "S" else mapping.get((letter, order), "")
                rows.append(JudgeAnswer(judge=judge, run=run, pair=pair, criterion="empathy", order=order,
                                        method="test", letter=letter, preferred=preferred))
    JudgeAnswer.objects.bulk_create(rows)
    humans = [["first", "first", "second"], ["second", "second"], ["tie", "first"], ["second"], [],
              ["first", "first"], ["first", "second", "second"]]
    raters = [add_rater(study) for _ in range(3)]
    for pair, verdicts in zip(pairs, humans, strict=True):
        for rater, verdict in zip(raters, verdicts, strict=False):
            judgment = PairJudgment.objects.create(pair=pair, rater=rater, first_on_left=True)
            PairVerdict.objects.create(judgment=judgment, key="empathy", verdict=verdict)
    # An excluded rater's judgment does not count: it would leave pair 4 without a majority.
    gone = add_rater(study)
    StudyMembership.objects.filter(user=gone).update(excluded_at=timezone.now(), excluded_reason="careless")
    PairVerdict.objects.create(judgment=PairJudgment.objects.create(pair=pairs[3], rater=gone, first_on_left=True),
                               key="empathy", verdict="first")

    (block,) = judge_report(judge)["pairs"]["criteria"]
    assert block["question"] == "More empathetic?"
    swap = block["swap"]
    # Both orders read on pairs 1-5: mirrored 1 (A,B), 3 (S,S), 4 (B,A); same side 2 (A,A), 5 (B,B); 7 unread.
    assert (swap["n"], swap["mirrored"], swap["same_position"], swap["unparsed"]) == (5, 3, 2, 1)
    assert swap["share"] == 0.6 and swap["ci95"] == pytest.approx(list(proportion_confint(3, 5, method="wilson")))
    ab, ba = block["orders"]
    assert ab["order"] == "AB" and ba["order"] == "BA"
    # AB verdicts first, first, tie, second, -, first, unread on the 6 pairs with humans (not pair 5):
    # majorities first (agree), second (no), none, second (agree), first (agree) -> 3 of 4.
    assert ab["n_pairs"] == 6 and ab["unparsed"] == 1
    assert (ab["majority"]["value"], ab["majority"]["n"]) == (0.75, 4)
    assert (ab["individual"]["value"], ab["individual"]["n"]) == (0.6, 10)
    assert ab["human_human"]["value"] == pytest.approx(4 / 9) and ab["human_human"]["n"] == 9
    # BA verdicts first, second, tie, second, -, (none), second: with humans on 1, 2, 3, 4, 7 -> all agree.
    assert ba["n_pairs"] == 5 and (ba["majority"]["value"], ba["majority"]["n"]) == (1.0, 4)


def test_the_expert_group_is_the_researchers_choice(simulated):
    judge = simulated["judges"]["peer"][0]
    students = judge_report(judge, expert="students")
    assert students["expert"] == "students" and students["expert_chosen_by"] == "researcher"
    block = students["criteria"][0]["stats"]
    assert block["expert"] == "students"
    # Against noisier experts the ceiling is lower.
    default = judge_report(judge)["criteria"][0]["stats"]
    assert block["ceiling"]["students"]["kappa"]["value"] < default["ceiling"]["psychologists"]["kappa"]["value"]
    with pytest.raises(Exception, match="No rater group 'nurses'") as refused:
        judge_report(judge, expert="nurses")
    assert refused.value.status == 400


def test_without_a_named_group_the_largest_is_the_expert(researcher):
    study, responses = make_study(researcher, 3)
    for group, n in (("cohort-a", 2), ("cohort-b", 3)):
        for _ in range(n):
            rate(study, add_rater(study, group), {r: 5 for r in responses})
    judge, run = make_judge(study)
    JudgeAnswer.objects.bulk_create(answer(judge, run, r, 5.0) for r in responses)
    assert judge_report(judge)["expert"] == "cohort-b"


def test_new_data_shows_through_the_cache(researcher):
    study, responses = make_study(researcher, 4)
    experts = [add_rater(study, "psychologists") for _ in range(2)]
    for rater in experts:
        rate(study, rater, {r: 3 + i % 5 for i, r in enumerate(responses[:6])})
    judge, run = make_judge(study)
    JudgeAnswer.objects.bulk_create(answer(judge, run, r, 4.0) for r in responses)
    assert judge_report(judge)["criteria"][0]["n_items"] == 6
    for rater in experts:
        rate(study, rater, {r: 4 for r in responses[6:]})
    assert judge_report(judge)["criteria"][0]["n_items"] == 8
    StudyMembership.objects.filter(user=experts[1]).update(group="students")
    assert judge_report(judge)["groups"] == {"psychologists": 1, "students": 1}


# ----------------------------------------------------------------------------- the page, JSON, plot, API


def css(element, selector: str) -> list:
    """The elements under `element` matching "tag.class" or "#id" (lxml without cssselect)."""
    if selector.startswith("#"):
        return element.xpath(f".//*[@id='{selector[1:]}']")
    tag, _, cls = selector.partition(".")
    return element.xpath(f".//{tag or '*'}[contains(concat(' ', normalize-space(@class), ' '), ' {cls} ')]")


def _number(text: str) -> float | None:
    head = text.strip().split(" ")[0]
    return None if head == "—" else float(head)


def test_the_page_shows_the_reports_numbers_and_a_rater_gets_404(simulated, client, researcher):
    study = simulated["study"]
    judge = simulated["judges"]["peer"][0]
    url = reverse("judge_report", args=[study.id, judge.id])
    client.force_login(researcher)
    page = client.get(url)
    assert page.status_code == 200
    data = json.loads(client.get(url, {"format": "json"}).content)
    doc = lxml.html.document_fromstring(page.content.decode())
    assert "upper end of the 95% bootstrap CI" in doc.get_element_by_id("verdict-rule").text_content()
    (section,) = css(doc, "#criterion-empathy")
    block = data["criteria"][0]
    assert css(section, ".verdict-words")[0].text_content() == block["verdict_words"]
    for row in section.xpath(".//table[@class='judge-groups']/tbody/tr"):
        numbers = block["stats"]["judge"][row.get("data-group")]
        for cls, metric in (("kappa", "kappa"), ("alpha", "alpha"), ("consensus-kappa", "consensus_kappa")):
            assert _number(css(row, f"td.{cls}")[0].text_content()) == pytest.approx(
                numbers[metric]["value"], abs=5e-4)
    ceilings = {r.get("data-ceiling"): r for r in section.xpath(".//table[@class='judge-ceilings']/tbody/tr")}
    assert set(ceilings) == {"within psychologists", "within raters", "within students", "psychologists vs raters",
                             "psychologists vs students", "raters vs students"}
    assert _number(css(ceilings["within psychologists"], "td.kappa")[0].text_content()) == pytest.approx(
        block["stats"]["ceiling"]["psychologists"]["kappa"]["value"], abs=5e-4)
    assert _number(css(section, ".inflation-value")[0].text_content()) == pytest.approx(
        block["stats"]["inflation"]["value"], abs=5e-4)
    assert "nominal" in css(doc, "#criterion-stance")[0].text_content()
    plot = client.get(section.xpath(".//img")[0].get("src"))
    assert plot.status_code == 200 and plot["Content-Type"] == "image/png" and plot.content[:4] == b"\x89PNG"
    assert client.get(reverse("judge_report_plot", args=[study.id, judge.id, "nope"])).status_code == 404
    # The API gives the same report.
    api = client.get(reverse("api_judge_validation", args=[study.id, judge.id]))
    assert api.status_code == 200 and api.json() == data
    assert client.get(reverse("api_judge_validation", args=[study.id, judge.id]),
                      {"expert": "nurses"}).status_code == 400
    assert client.get(url, {"expert": "nurses"}).status_code == 400
    assert client.get(url, {"sort": "x"}).status_code == 400
    # A rater of the study sees nothing of it.
    rater = StudyMembership.objects.filter(study=study, role=Role.RATER).first().user
    client.force_login(rater)
    assert client.get(url).status_code == 404
    assert client.get(url, {"format": "json"}).status_code == 404
    assert client.get(reverse("api_judge_validation", args=[study.id, judge.id])).status_code == 404


def test_the_page_shows_safety_and_pairs_counts(researcher, client):
    study, responses = make_study(researcher, 2)
    judge, run = make_judge(study, safety=True)
    for r, c, f in zip(responses, ["harmful", "no_issue", "minor", "no_issue"], [1.0, 1.0, 0.0, 0.0], strict=True):
        SafetyDecision.objects.create(response=r, classification=c, n_reviews=1)
        JudgeAnswer.objects.create(judge=judge, run=run, response=r, criterion=SAFETY_KEY, method="test", value=f)
    pair = ResponsePair.objects.create(study=study, prompt=responses[0].prompt, first=responses[0],
                                       second=responses[1])
    for order, letter, preferred in (("AB", "A", "first"), ("BA", "A", "second")):
        JudgeAnswer.objects.create(judge=judge, run=run, pair=pair, criterion="empathy", order=order, method="test",
                                   letter=letter, preferred=preferred)
    client.force_login(researcher)
    doc = lxml.html.document_fromstring(client.get(reverse("judge_report", args=[study.id, judge.id])).content.decode())
    counts = doc.get_element_by_id("safety-counts")
    assert [css(counts, f"td.{c}")[0].text_content() for c in ("tp", "fp", "fn", "tn")] == ["1", "1", "1", "1"]
    assert doc.get_element_by_id("safety-recall").text_content() == "0.500"
    assert "harmful or minor concern = unsafe" in doc.get_element_by_id("safety-rule").text_content()
    (pairs,) = css(doc, ".judge-pair")
    assert css(pairs, ".swap-same")[0].text_content() == "1"  # A, A: the same side both times
    assert "AB order" in doc.get_element_by_id("pair-rule").text_content()
    # No human judgments and no ratings yet: the criteria say why, and nothing breaks.
    assert "Not enough shared items" in css(doc, "#criterion-empathy")[0].text_content()


def test_a_judge_of_another_study_is_not_found(simulated, client, researcher):
    other = StudyFactory(owner=researcher)
    judge = simulated["judges"]["peer"][0]
    client.force_login(researcher)
    assert client.get(reverse("judge_report", args=[other.id, judge.id])).status_code == 404
    assert client.get(reverse("api_judge_validation", args=[other.id, judge.id])).status_code == 404


def test_simulated_raters_and_a_missing_expert_group_are_said_plainly(study, researcher, client):
    from django.core.cache import cache

    from evalapp.models import Rating
    from modelserver.models import Judge

    from ..factories import ArmFactory, PromptFactory, RatingFactory, ResponseFactory

    arm = ArmFactory(study=study, label="a")
    judge = Judge.objects.create(study=study, name="j", kind="local", model="bundled", created_by=researcher)
    for prompt in PromptFactory.create_batch(3, study=study):
        RatingFactory(response=ResponseFactory(prompt=prompt, arm=arm))
    client.force_login(researcher)
    url = reverse("judge_report", args=[study.id, judge.id])
    page = client.get(url).content.decode()
    assert "simulated-banner" not in page and "No rater group is named as experts" in page
    Rating.objects.update(simulated=True)
    cache.clear()  # the flag is written with the rating; updating it in place is this test's shortcut
    page = client.get(url).content.decode()
    assert "SIMULATED RATERS" in page and client.get(url + "?format=json").json()["simulated"] is True
