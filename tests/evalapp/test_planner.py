"""The study planner: the pilot read from a study's counted ratings, the plan, its page and command."""

import json
from io import StringIO

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from evalapp import planner
from evalapp.models import PairJudgment
from evalapp.planner import PlanError, PlanRequest
from evalapp.stats.planning import PairwiseModel, estimate_components
from raters import services as rater_services
from raters.models import PairAssignment, Role

from ..factories import ArmFactory, MembershipFactory, PromptFactory, RatingFactory, ResponseFactory, StudyFactory

pytestmark = pytest.mark.django_db

TRUTH = {"mean": 5.0, "prompt_sd": 1.2, "rater_sd": 0.7, "residual_sd": 0.9, "effect": 1.0}


@pytest.fixture
def piloted(study):
    """24 prompts x 2 arms, each response scored by 3 of 6 raters under a known model (empathy; fluency
    constant 8 but for noise), plus a seventh rater who withdrew and scored everything 1."""
    rng = np.random.default_rng(7)
    raters = [MembershipFactory(study=study, role=Role.RATER).user for _ in range(6)]
    severity = rng.normal(0, TRUTH["rater_sd"], len(raters))
    gone = MembershipFactory(study=study, role=Role.RATER).user
    base, tuned = ArmFactory(study=study, label="baseline"), ArmFactory(study=study, label="fine-tuned")
    study.rows = []  # (prompt, rater, arm, empathy) as they were written
    for prompt in PromptFactory.create_batch(24, study=study):
        quality = rng.normal(0, TRUTH["prompt_sd"])
        for arm, bonus in ((base, 0.0), (tuned, TRUTH["effect"])):
            response = ResponseFactory(prompt=prompt, arm=arm)
            for r in rng.choice(len(raters), 3, replace=False):
                value = TRUTH["mean"] + quality + bonus + severity[r] + rng.normal(0, TRUTH["residual_sd"])
                empathy = int(np.clip(np.rint(value), 1, 10))
                RatingFactory(response=response, rater=raters[r], empathy=empathy,
                              fluency=int(np.clip(np.rint(8 + rng.normal(0, 1)), 1, 10)))
                study.rows.append((prompt.id, raters[r].id, int(arm is tuned), empathy))
            RatingFactory(response=response, rater=gone, empathy=1, fluency=1)
    rater_services.consent_withdraw(study=study, user=gone)
    study.base, study.tuned = base, tuned
    return study


def request_for(study, **extra) -> PlanRequest:
    fields = {"criteria": ("empathy",), "arm_a": study.base.id, "arm_b": study.tuned.id, "prompts": (10, 30),
              "sims": 60, "raters_per_response": 3, "n_raters": 6, "seed": 3, **extra}
    return PlanRequest(**fields)


def test_the_pilot_is_the_counted_ratings_of_the_two_arms(piloted):
    components, effect, n = planner.score_pilot(piloted, "empathy", piloted.base.id, piloted.tuned.id)
    assert n == 24 * 2 * 3  # the withdrawn rater's ratings do not count
    # The fit of exactly the rows written by the counted raters, and near the truth they were drawn from.
    assert (components, effect) == estimate_components(*map(np.asarray, zip(*piloted.rows, strict=True)))
    assert effect == pytest.approx(TRUTH["effect"], abs=0.45)
    assert components.prompt_sd == pytest.approx(TRUTH["prompt_sd"], abs=0.5)
    assert components.residual_sd == pytest.approx(TRUTH["residual_sd"], abs=0.3)
    assert (components.low, components.high) == (1, 10)
    # Arms the other way round: the effect changes sign.
    assert planner.score_pilot(piloted, "empathy", piloted.tuned.id, piloted.base.id)[1] == pytest.approx(-effect)


def test_a_choice_criterion_is_refused_with_a_reason(researcher):
    study = StudyFactory(owner=researcher, rubric=[
        {"key": "warmth", "question": "Warm?", "kind": "likert", "min": 1, "max": 5},
        {"key": "stance", "question": "Stance?", "kind": "choice", "options": ["agree", "disagree"]}])
    a, b = ArmFactory(study=study, label="a"), ArmFactory(study=study, label="b")
    with pytest.raises(PlanError, match="named options"):
        planner.score_pilot(study, "stance", a.id, b.id)
    assert [c["key"] for c in planner.likert_criteria(study)] == ["warmth"]


def test_too_small_a_pilot_says_so_and_offers_entered_values(study):
    base, tuned = ArmFactory(study=study, label="baseline"), ArmFactory(study=study, label="fine-tuned")
    RatingFactory(response=ResponseFactory(prompt=PromptFactory(study=study), arm=base))
    req = PlanRequest(criteria=("empathy",), arm_a=base.id, arm_b=tuned.id, prompts=(10,), sims=20)
    with pytest.raises(PlanError, match="too small") as caught:
        planner.plan(study, req)
    assert caught.value.pilot
    entered = planner.plan(study, PlanRequest(**{**req.__dict__, "source": "entered", "entered": {"rater_sd": 0.5}}))
    assert entered["criteria"][0]["components"]["rater_sd"] == 0.5
    assert entered["criteria"][0]["components"]["prompt_sd"] == 1.0  # the default fills in


def test_the_plan_is_reproducible_and_more_prompts_give_more_power(piloted):
    req = request_for(piloted, criteria=("empathy", "fluency"))
    first = planner.plan(piloted, req, use_cache=False)
    again = planner.plan(piloted, req, use_cache=False)
    assert first == again
    rows = [r for r in first["rows"] if r["criterion"] == "empathy"]
    assert [r["n_prompts"] for r in rows] == [10, 30]
    assert rows[0]["power_wilcoxon"] <= rows[1]["power_wilcoxon"] and rows[1]["power_t"] > 0.5
    assert all(r["alpha_ci_width"] is None or r["alpha_ci_width"] > 0 for r in first["rows"])
    assert {r["criterion"] for r in first["rows"]} == {"empathy", "fluency"}
    assert first["inputs"]["seed"] == 3 and first["inputs"]["source"] == "pilot"
    other = planner.plan(piloted, request_for(piloted, criteria=("empathy", "fluency"), seed=4), use_cache=False)
    assert other["rows"] != first["rows"]
    # The printed command names everything the plan depends on.
    assert "--seed 3" in first["command"] and "--criterion fluency" in first["command"]
    assert planner.plan(piloted, req) == planner.plan(piloted, req)  # through the cache


def test_pairwise_plans_from_entered_values_or_a_pilot_model_passed_in(piloted):
    req = request_for(piloted, mode="pairwise", criteria=(), source="entered", entered={"nu": 0.4, "prompt_sd": 0.2},
                      effect=0.8, prompts=(20, 60), sims=40)
    result = planner.plan(piloted, req, use_cache=False)
    assert [r["criterion"] for r in result["rows"]] == ["preference", "preference"]
    assert result["rows"][1]["power_sign"] > result["rows"][0]["power_sign"] - 0.1
    with pytest.raises(PlanError, match="no pairwise judgments"):
        planner.plan(piloted, request_for(piloted, mode="pairwise", criteria=(), sims=40))
    from_pilot = planner.plan(piloted, request_for(piloted, mode="pairwise", criteria=(), sims=40, prompts=(20,)),
                              pairwise_pilot=(PairwiseModel(nu=0.4, prompt_sd=0.2), 0.3), use_cache=False)
    assert from_pilot["criteria"][0]["pilot"] == {"effect": 0.3}


def test_a_request_too_large_is_refused_naming_the_cap(piloted):
    with pytest.raises(PlanError, match="cap is 50,000,000"):
        planner.check_request(request_for(piloted, sims=2000, prompts=(1000, 900), n_raters=200))
    with pytest.raises(PlanError, match="pool has 2"):
        planner.check_request(request_for(piloted, n_raters=2))


def plan_query(study, **extra):
    query = {"mode": "scores", "criteria": ["empathy"], "arm_a": study.base.id, "arm_b": study.tuned.id,
             "source": "pilot", "effect": "1", "prompts": "10,30", "raters_per_response": "3", "n_raters": "6",
             "sims": "40", "seed": "2", "alpha": "0.05"}
    query.update(extra)
    return query


def test_the_page_plans_for_a_researcher_and_hides_from_a_rater(client, researcher, piloted):
    url = reverse("planner", args=[piloted.id])
    client.force_login(researcher)
    blank = client.get(url)
    assert blank.status_code == 200 and b'id="plan-form"' in blank.content and b"plan-result" not in blank.content
    page = client.get(url, plan_query(piloted))
    assert page.status_code == 200
    text = page.content.decode()
    assert 'id="plan-table"' in text and text.count('class="power"') == 4  # 2 rows x 2 tests
    assert "manage.py plan_study" in text
    plot = client.get(reverse("planner_plot", args=[piloted.id]), plan_query(piloted))
    assert plot.status_code == 200 and plot["Content-Type"] == "image/png" and plot.content[:4] == b"\x89PNG"
    study_page = client.get(reverse("study_detail", args=[piloted.id]))
    assert url.encode() in study_page.content
    rater = MembershipFactory(study=piloted, role=Role.RATER).user
    client.force_login(rater)
    assert client.get(url, plan_query(piloted)).status_code == 404
    assert client.get(reverse("planner_plot", args=[piloted.id]), plan_query(piloted)).status_code == 404


@pytest.mark.parametrize(("extra", "message"), [
    ({"prompts": "ten"}, "whole numbers of prompts"),
    ({"sims": "5000"}, "less than or equal to 2000"),
    ({"arm_b": "same"}, "Select a valid choice"),
    ({"sims": "2000", "prompts": "1000,900,800", "n_raters": "200"}, "the cap is"),
])
def test_bad_input_is_a_400_with_the_reason(client, researcher, piloted, extra, message):
    client.force_login(researcher)
    response = client.get(reverse("planner", args=[piloted.id]), plan_query(piloted, **extra))
    assert response.status_code == 400 and message in response.content.decode()
    plot = client.get(reverse("planner_plot", args=[piloted.id]), plan_query(piloted, **extra))
    assert plot.status_code == 400


def test_the_same_arm_twice_and_a_thin_pilot_are_400s(client, researcher, piloted):
    client.force_login(researcher)
    url = reverse("planner", args=[piloted.id])
    same = client.get(url, plan_query(piloted, arm_b=piloted.base.id))
    assert same.status_code == 400 and "two different arms" in same.content.decode()
    thin = client.get(url, plan_query(piloted, mode="pairwise"))
    assert thin.status_code == 400 and "Values entered below" in thin.content.decode()


def test_the_command_prints_the_table_and_the_page_agrees(client, researcher, piloted, tmp_path):
    out = StringIO()
    plot = tmp_path / "power.png"
    call_command("plan_study", piloted.id, "--criterion", "empathy", "--arm-a", str(piloted.base.id), "--arm-b",
                 str(piloted.tuned.id), "--effect", "1", "--prompts", "10,30", "--raters-per-response", "3",
                 "--raters", "6", "--sims", "40", "--seed", "2", "--plot", str(plot), stdout=out)
    text = out.getvalue()
    assert "power (Wilcoxon)" in text and "alpha 95% CI width" in text and "--seed 2" in text
    assert plot.read_bytes()[:4] == b"\x89PNG"
    as_json = StringIO()
    call_command("plan_study", piloted.id, "--criterion", "empathy", "--effect", "1", "--prompts", "10,30",
                 "--raters", "6", "--sims", "40", "--seed", "2", "--json", stdout=as_json)
    result = json.loads(as_json.getvalue())
    # The defaults are the first two arms (baseline, fine-tuned): the page's plan, the same numbers.
    client.force_login(researcher)
    page = client.get(reverse("planner", args=[piloted.id]), plan_query(piloted))
    assert [r["power_t"] for r in result["rows"]] == [r["power_t"] for r in page.context["result"]["rows"]]


def test_the_command_refuses_clearly(piloted):
    with pytest.raises(CommandError, match="--entered"):
        call_command("plan_study", piloted.id, "--mode", "pairwise", "--sims", "20", stdout=StringIO())
    with pytest.raises(CommandError, match="pairwise mode plans every question"):
        call_command("plan_study", piloted.id, "--mode", "pairwise", "--criterion", "empathy", stdout=StringIO())
    with pytest.raises(CommandError, match="name=value"):
        call_command("plan_study", piloted.id, "--entered", "prompt_sd", stdout=StringIO())
    with pytest.raises(CommandError, match="Unknown entered"):
        call_command("plan_study", piloted.id, "--entered", "nu=0.3", "--sims", "20", stdout=StringIO())
    out = StringIO()
    call_command("plan_study", piloted.id, "--mode", "pairwise", "--entered", "nu=0.3,prompt_sd=0.1", "--sims", "20",
                 "--prompts", "20", stdout=out)
    assert "preference" in out.getvalue() and "power (sign test)" in out.getvalue()


def test_a_pairwise_pilot_is_read_from_the_studys_own_judgments(piloted):
    """Raters who prefer the fine-tuned response 3 times in 4 on every prompt (and never tie): the pilot
    fitted from the counted judgments has B ahead, and a withdrawn rater's judgments stop counting."""
    raters = [MembershipFactory(study=piloted, role=Role.RATER).user for _ in range(4)]  # beside the pilot's 6
    rater_services.pair_phase_save(study=piloted, criteria=[{"key": "empathy", "question": "Kinder?"}],
                                   judgments_per_pair=4, gold_rate=0, reason="none")
    rater_services.pair_phase_open(study=piloted)
    rng = np.random.default_rng(5)
    for assignment in PairAssignment.objects.filter(study=piloted).select_related("pair__first"):
        tuned_wins = rng.random() < 0.75
        tuned_is_first = assignment.pair.first.arm_id == piloted.tuned.id
        tuned_on_left = tuned_is_first == assignment.first_on_left
        pick = "a" if tuned_wins == tuned_on_left else "b"
        rater_services.pair_judgment_submit(study=piloted, rater=assignment.rater,
                                            item_public_id=assignment.pair.public_id,
                                            submission=rater_services.PairSubmission(answers={"empathy": pick}))
    rows = planner.pairwise_pilot_rows(piloted, piloted.base.id, piloted.tuned.id)
    assert len(rows["empathy"]) == 24 * 4
    share = np.mean([score == 1 for _, score in rows["empathy"]])
    assert 0.6 < share < 0.9
    result = planner.plan(piloted, request_for(piloted, mode="pairwise", criteria=(), sims=40, prompts=(20,)),
                          use_cache=False)
    assert [c["key"] for c in result["criteria"]] == ["empathy"]
    assert result["criteria"][0]["pilot"]["effect"] > 0.5  # log(3): B is ahead
    assert result["criteria"][0]["pilot"]["n_judgments"] == 96
    theirs = PairJudgment.objects.filter(rater=raters[0]).count()
    assert theirs
    rater_services.consent_withdraw(study=piloted, user=raters[0])
    assert len(planner.pairwise_pilot_rows(piloted, piloted.base.id, piloted.tuned.id)["empathy"]) == 96 - theirs
