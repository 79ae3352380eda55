"""The pairwise results: numbers against hand counts, position bias recovered from biased raters, three
arms, the agreement with the 1-10 scores, the pages, the JSON, the API and the judgments CSV."""

import csv
import io
import json

import krippendorff
import numpy as np
import pytest
from django.urls import reverse
from scipy import stats
from statsmodels.stats.proportion import proportion_confint

from evalapp.models import PairJudgment, ResponsePair
from evalapp.pair_adjudication import pair_adjudication_resolve
from evalapp.pair_results import pairwise_results
from raters import services
from raters.models import PairAssignment, Role

from ..factories import ArmFactory, MembershipFactory, PromptFactory, RatingFactory, ResponseFactory, UserFactory

pytestmark = pytest.mark.django_db
CRITERIA = [{"key": "empathy", "question": "Which is more empathetic?"},
            {"key": "fluency", "question": "Which is more fluent?"}]
FLIP = {"first": "second", "second": "first", "tie": "tie"}


def make_study(study, n_prompts=6, arms=("fine-tuned", "baseline")):
    made = [ArmFactory(study=study, label=label) for label in arms]
    for prompt in PromptFactory.create_batch(n_prompts, study=study):
        for arm in made:
            ResponseFactory(prompt=prompt, arm=arm, text=f"Reply from {arm.label} to {prompt.external_id}")
    study.gold_rate = 0
    study.save()
    services.consent_publish(study=study, text="Your judgments are research data.", withdrawal_policy="exclude")
    return study


def add_rater(study, name):
    user = MembershipFactory(study=study, user=UserFactory(username=name), role=Role.RATER).user
    services.consent_accept(study=study, user=user, version=study.consent_versions.first())
    return user


def open_phase(study, k):
    services.pair_phase_save(study=study, criteria=CRITERIA, judgments_per_pair=k, gold_rate=0.0, reason="optional")
    return services.pair_phase_open(study=study)


def shown(verdict, first_on_left):
    """What a rater presses on screen to give `verdict` (first/second/tie) in the pair's terms."""
    if verdict == "tie":
        return "same"
    return "a" if (verdict == "first") == first_on_left else "b"


def judge(study, raters, choose):
    """Every rater answers their whole queue: choose(rater index, assignment) -> {key: first/second/tie}."""
    for n, rater in enumerate(raters):
        for a in PairAssignment.objects.filter(study=study, rater=rater, pair__isnull=False).select_related(
                "pair__prompt", "pair__first__arm", "pair__second__arm").order_by("position"):
            verdicts = choose(n, a)
            services.pair_judgment_submit(study=study, rater=rater, item_public_id=a.pair.public_id,
                                          submission=services.PairSubmission(
                                              answers={k: shown(v, a.first_on_left) for k, v in verdicts.items()}))


def prompt_index(study, assignment):
    return list(study.prompts.order_by("id").values_list("id", flat=True)).index(assignment.pair.prompt_id)


def hand_pattern(study):
    """r0 always prefers the second arm; r1 the second on prompts 0-3, ties on 4-5; r2 the first on even
    prompts and the second on odd ones. Fluency is the mirror image."""
    def choose(n, a):
        p = prompt_index(study, a)
        verdict = ["second", "second" if p < 4 else "tie", "first" if p % 2 == 0 else "second"][n]
        return {"empathy": verdict, "fluency": FLIP[verdict]}
    return choose


@pytest.fixture
def hand(study):
    make_study(study)
    raters = [add_rater(study, f"r{i}") for i in range(3)]
    open_phase(study, k=3)
    judge(study, raters, hand_pattern(study))
    return study, raters


def criterion(data, key):
    return next(c for c in data["criteria"] if c["key"] == key)


def test_numbers_match_hand_counts(hand):
    study, raters = hand
    data = pairwise_results(study)
    assert data["n_judgments"] == 18 and data["n_simulated"] == 0 and not data["simulated"]
    assert data["arms"] == ["fine-tuned", "baseline"] and data["reference"] == "fine-tuned"
    empathy, fluency = criterion(data, "empathy"), criterion(data, "fluency")
    (pair,) = empathy["arm_pairs"]
    # Second (baseline) wins: r0 6, r1 4, r2 3; ties: r1 2; first wins: r2 3.
    assert pair["label"] == "baseline vs fine-tuned"
    assert (pair["n"], pair["wins"], pair["ties"], pair["losses"]) == (18, 13, 2, 3)
    assert pair["win_ci95"] == pytest.approx(list(proportion_confint(13, 18, method="wilson")))
    assert pair["sign_test"]["p"] == pytest.approx(stats.binomtest(13, 16, 0.5).pvalue)
    assert pair["n_prompts"] == 6
    (mirror,) = fluency["arm_pairs"]
    assert (mirror["wins"], mirror["ties"], mirror["losses"]) == (3, 2, 13)
    # Position bias over the sides as shown, counted here from the stored sides.
    left = decisive = 0
    for j in PairJudgment.objects.filter(pair__study=study):
        verdict = j.verdicts.get(key="empathy").verdict
        if verdict != "tie":
            decisive += 1
            left += (verdict == "first") == j.first_on_left
    bias = empathy["position_bias"]
    assert (bias["left_wins"], bias["n_decisive"]) == (left, decisive) == (left, 16)
    assert "balanced" in bias["control"]
    # Alpha over pairs against the krippendorff package on the pattern written out by hand.
    code = {"first": 0, "second": 1, "tie": 2}
    matrix = [[code["second"]] * 6, [code["second"]] * 4 + [code["tie"]] * 2,
              [code["first"] if p % 2 == 0 else code["second"] for p in range(6)]]
    expected = krippendorff.alpha(reliability_data=np.array(matrix, dtype=float), level_of_measurement="nominal",
                                  value_domain=[0, 1, 2])
    assert empathy["alpha"]["value"] == pytest.approx(expected)
    assert empathy["alpha"]["n_pairs"] == 6 and None not in empathy["alpha"]["ci95"]
    strengths = empathy["strengths"]
    assert strengths["fitted"] and strengths["reference"] == "fine-tuned"
    ft, base = strengths["arms"]
    assert ft["bt"]["estimate"] == 0 and ft["davidson"]["estimate"] == 0
    # Plain Bradley-Terry on two arms: log(13 / 3), ties dropped.
    assert base["bt"]["estimate"] == pytest.approx(np.log(13 / 3), rel=1e-4)
    assert base["centered"] > 0 > ft["centered"]


def test_judgments_csv_names_raters_by_pseudonym_and_shows_sides(client, hand, researcher):
    study, raters = hand
    client.force_login(researcher)
    response = client.get(reverse("export_csv", args=[study.id, "pair_judgments"]))
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert len(rows) == 36  # 18 judgments x 2 questions
    pseudonyms = set(study.memberships.filter(role=Role.RATER).values_list("pseudonym", flat=True))
    assert {r["rater"] for r in rows} == pseudonyms
    text = json.dumps(rows)
    assert not any(f'"{u.username}"' in text for u in raters)
    for r in rows:
        assert r["left_arm"] == (r["first_arm"] if r["first_on_left"] == "1" else r["second_arm"])
        if r["verdict"] != "tie":
            assert (r["preferred_side"] == "left") == (r["preferred_arm"] == r["left_arm"])
    # r0 and r1 agree on "second" for prompt 0: its final verdict is the majority's.
    first_prompt = study.prompts.order_by("id").first().external_id
    assert {(r["final_verdict"], r["final_source"]) for r in rows
            if r["prompt_id"] == first_prompt and r["key"] == "empathy"} == {("second", "majority")}


def test_position_bias_is_recovered_from_biased_raters(study):
    make_study(study, n_prompts=40)
    raters = [add_rater(study, f"r{i}") for i in range(6)]
    open_phase(study, k=5)
    rng = np.random.default_rng(20240515)
    seen = {True: 0, False: 0}

    # The two responses are as good as each other; these raters press the left one four times in five,
    # counted apart for each arm on the left. Drawing it at random made the arm's win CI miss 0.5 in about
    # one run in a hundred (the assignment's order is not seeded, so neither were the draws it met).
    def choose(n, a):
        left_arm = (a.pair.first if a.first_on_left else a.pair.second).arm.label
        seen[left_arm == "fine-tuned"] += 1
        left = seen[left_arm == "fine-tuned"] % 5 != 0
        verdict = ("first" if a.first_on_left else "second") if left else ("second" if a.first_on_left else "first")
        return {"empathy": verdict, "fluency": "tie" if rng.random() < 0.5 else verdict}

    judge(study, raters, choose)
    PairJudgment.objects.filter(pair__study=study).update(simulated=True)
    data = pairwise_results(study)
    bias = criterion(data, "empathy")["position_bias"]
    assert bias["n_decisive"] == 200
    low, high = bias["ci95"]
    assert low < 0.8 < high and low > 0.5 and bias["p"] < 1e-6
    # Sides were balanced, so the bias does not favour an arm.
    (pair,) = criterion(data, "empathy")["arm_pairs"]
    assert pair["win_ci95"][0] < 0.5 < pair["win_ci95"][1]
    assert data["n_simulated"] == 200 and data["simulated"]


def test_three_arms_give_three_arm_pairs_and_ordered_strengths(study):
    make_study(study, n_prompts=8, arms=("base", "prompted", "fine-tuned"))
    raters = [add_rater(study, f"r{i}") for i in range(3)]
    open_phase(study, k=2)
    rank = {"base": 0, "prompted": 1, "fine-tuned": 2}

    # The higher-ranked arm wins, except each rater's first pair, where they call a tie or the other way.
    def choose(n, a):
        p = prompt_index(study, a)
        first, second = rank[a.pair.first.arm.label], rank[a.pair.second.arm.label]
        verdict = "first" if first > second else "second"
        if p == n:
            verdict = "tie"
        elif p == n + 3:
            verdict = FLIP[verdict]
        return {"empathy": verdict, "fluency": verdict}

    judge(study, raters, choose)
    data = pairwise_results(study)
    empathy = criterion(data, "empathy")
    assert [p["label"] for p in empathy["arm_pairs"]] == ["prompted vs base", "fine-tuned vs base",
                                                          "fine-tuned vs prompted"]
    assert all(p["n"] == 16 for p in empathy["arm_pairs"])
    strengths = empathy["strengths"]
    assert strengths["fitted"] and [a["arm"] for a in strengths["arms"]] == ["base", "prompted", "fine-tuned"]
    centered = [a["centered"] for a in strengths["arms"]]
    assert centered[0] < centered[1] < centered[2] and sum(centered) == pytest.approx(0, abs=1e-9)
    assert strengths["arms"][0]["davidson"]["estimate"] == 0 and strengths["nu"] > 0
    assert ResponsePair.objects.filter(study=study).count() == 24


def test_agreement_with_the_1_10_scores(hand):
    study, raters = hand
    prompts = list(study.prompts.order_by("id"))
    scorer = UserFactory(username="scorer")
    MembershipFactory(study=study, user=scorer, role=Role.RATER)
    # Empathy scores: baseline higher on prompts 0-2, fine-tuned higher on 3, equal on 5; prompt 4 has no
    # majority verdict. Pairs' final verdicts: "second" (baseline) on 0, 1, 2, 3, 5.
    scores = {0: (3, 8), 1: (4, 6), 2: (5, 9), 3: (7, 2), 4: (5, 5), 5: (6, 6)}
    for n, prompt in enumerate(prompts):
        ft = prompt.responses.get(arm__label="fine-tuned")
        base = prompt.responses.get(arm__label="baseline")
        RatingFactory(response=ft, rater=scorer, empathy=scores[n][0])
        RatingFactory(response=base, rater=scorer, empathy=scores[n][1])
    result = criterion(pairwise_results(study), "empathy")["scores"]
    assert result["n_pairs"] == 5 and result["n_decisive"] == 4 and result["agree"] == 3
    assert result["agree_share"] == pytest.approx(0.75)
    assert result["agree_ci95"] == pytest.approx(list(proportion_confint(3, 4, method="wilson")))
    cells = {(c["verdict"], c["scores"]): c["n"] for c in result["cells"]}
    assert cells[("second", "second higher")] == 3 and cells[("second", "first higher")] == 1
    assert cells[("second", "equal")] == 1 and sum(cells.values()) == 5
    # The verdict is "second" on every pair: no variation, so no tau.
    assert result["kendall_tau_b"] is None
    # An adjudicator settles prompt 4 (no majority) for the first arm, whose scores are equal: tau now exists.
    pair = ResponsePair.objects.get(study=study, prompt=prompts[4])
    adjudicator = UserFactory(username="adj")
    MembershipFactory(study=study, user=adjudicator, role=Role.ADJUDICATOR)
    pair_adjudication_resolve(study=study, pair=pair, key="empathy", adjudicator=adjudicator, verdict="first",
                              rationale="Warmer opening.")
    result = criterion(pairwise_results(study), "empathy")["scores"]
    verdicts, diffs = [1, 1, 1, 1, -1, 1], [5, 2, 4, -5, 0, 0]
    assert result["n_pairs"] == 6
    assert result["kendall_tau_b"] == pytest.approx(stats.kendalltau(verdicts, diffs).statistic)
    # Fluency is a 1-10 criterion too; every response scored 8 there (RatingFactory's default): no decisive pair.
    fluency = criterion(pairwise_results(study), "fluency")["scores"]
    assert fluency["n_pairs"] == 5 and fluency["n_decisive"] == 0 and fluency["agree_share"] is None


def test_pages_json_plots_and_api_are_for_researchers(client, hand, researcher):
    study, raters = hand
    client.force_login(researcher)
    page = client.get(reverse("pairwise_results", args=[study.id]))
    body = page.content.decode()
    assert page.status_code == 200
    assert "baseline vs fine-tuned" in body and 'id="pair-result-empathy"' in body and "balanced" in body
    assert "SIMULATED" not in body
    assert 'id="pairwise-results-link"' in client.get(reverse("results", args=[study.id])).content.decode()
    data = json.loads(client.get(reverse("pairwise_results_json", args=[study.id])).content)
    assert criterion(data, "empathy")["arm_pairs"][0]["wins"] == 13
    for name in ("strengths", "outcomes"):
        image = client.get(reverse("pairwise_plot", args=[study.id, name]))
        assert image.status_code == 200 and image["Content-Type"] == "image/png" and image.content[:4] == b"\x89PNG"
    assert client.get(reverse("pairwise_plot", args=[study.id, "nope"])).status_code == 404
    api = client.get(reverse("api_pairwise_results", args=[study.id]))
    assert api.status_code == 200 and criterion(api.json(), "fluency")["arm_pairs"][0]["losses"] == 13
    refused = client.get(reverse("api_pairwise_results", args=[study.id]), {"ordering": "x"})
    assert refused.status_code == 400 and "ordering" in refused.json()["detail"]
    client.force_login(raters[0])
    for name in ("pairwise_results", "pairwise_results_json", "api_pairwise_results", "export_preferences"):
        assert client.get(reverse(name, args=[study.id])).status_code == 404, name
    assert client.get(reverse("pairwise_plot", args=[study.id, "strengths"])).status_code == 404


def test_a_study_without_a_phase_says_so(client, study, researcher):
    make_study(study)
    client.force_login(researcher)
    page = client.get(reverse("pairwise_results", args=[study.id]))
    assert page.status_code == 200 and 'id="no-phase"' in page.content.decode()
    assert pairwise_results(study)["criteria"] == []
    assert client.get(reverse("pairwise_plot", args=[study.id, "outcomes"])).content[:4] == b"\x89PNG"
    assert 'id="pairwise-results-link"' not in client.get(reverse("results", args=[study.id])).content.decode()
