"""Which side each response of a pair is shown on (raters/pair_assignment.py): property tests over designs
that raters.assignment.build_design makes, as the pairwise phase makes them, and one test through the
service with a late rater.

The checks are written here, independently of violations(), which is also asserted to agree.
"""

import random
from collections import Counter

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from raters.assignment import GoldItem, Item, build_design, design_to_rows
from raters.pair_assignment import arm_pairs, orient, violations

# What raters/pair_assignment.py says of a design build_design makes, from even starting balances (found
# over 30,000 random designs of this module's sizes, not proved: a counterexample fails here).
RATER_BOUND = 2
SETTINGS = settings(max_examples=100, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


@st.composite
def pair_designs(draw, max_prompts=30, max_raters=8, max_k=4):
    """(slots, seed): the pairs of 2-4 arms over some prompts, k judgments each, gold pairs mixed in."""
    n_prompts, n_arms = draw(st.integers(1, max_prompts)), draw(st.integers(2, 4))
    groups = arm_pairs(range(n_arms))
    items = [Item(f"p{p}-{g}", p) for p in range(n_prompts) for g in range(len(groups))]
    arms_of = {f"p{p}-{g}": groups[g] for p in range(n_prompts) for g in range(len(groups))}
    raters = [f"rater-{j}" for j in range(draw(st.integers(1, max_raters)))]
    k = draw(st.integers(1, min(max_k, len(raters))))
    gold = [GoldItem(f"gold-{j}") for j in range(draw(st.integers(0, 3)))]
    rate = draw(st.sampled_from([0.1, 0.5])) if gold else 0.0
    seed = draw(st.integers(0, 2**32 - 1))
    try:
        design = build_design(items, raters, k, seed=seed, gold=gold, gold_rate=rate)
    except ValueError:
        assume(False)  # no design keeps one prompt's pairs apart in queues this short: none to orient
    slots = [(item, ("gold",) if is_gold else arms_of[item], rater)
             for rater, _, item, is_gold in design_to_rows(design)]
    return slots, seed


def balances(slots, sides, start=None):
    """(per pair, per arm pair, per rater) of (first on the left) minus (first on the right)."""
    per_pair, per_group, per_rater = Counter(), Counter((start or {}).get("group", {})), Counter(
        (start or {}).get("rater", {}))
    for pair_id, group, rater in slots:
        step = 1 if sides[(rater, pair_id)] else -1
        per_pair[pair_id] += step
        per_group[group] += step
        per_rater[rater] += step
    return per_pair, per_group, per_rater


@SETTINGS
@given(pair_designs())
def test_every_pair_and_every_pair_of_arms_is_shown_both_ways_alike(problem):
    slots, seed = problem
    sides = orient(slots, seed=seed)
    assert set(sides) == {(rater, pair_id) for pair_id, _, rater in slots}
    per_pair, per_group, _ = balances(slots, sides)
    assert max(map(abs, per_pair.values())) <= 1  # rule 1
    assert max(map(abs, per_group.values())) <= 1  # rule 2
    assert violations(slots, sides) == []


@SETTINGS
@given(pair_designs())
def test_each_rater_sees_the_first_response_on_each_side_about_as_often(problem):
    slots, seed = problem
    _, _, per_rater = balances(slots, orient(slots, seed=seed))
    assert max(map(abs, per_rater.values())) <= RATER_BOUND, per_rater


@SETTINGS
@given(pair_designs(), st.randoms(use_true_random=False))
def test_the_same_seed_gives_the_same_sides_whatever_the_order_of_the_slots(problem, shuffler):
    slots, seed = problem
    shuffled = list(slots)
    shuffler.shuffle(shuffled)
    assert orient(shuffled, seed=seed) == orient(slots, seed=seed)


def test_another_seed_gives_other_sides():
    slots = [(f"pair-{p}", (1, 2), f"rater-{r}") for p in range(20) for r in range(3)]
    assert len({tuple(sorted(orient(slots, seed=s).items())) for s in range(5)}) == 5


@SETTINGS
@given(pair_designs(max_prompts=15), st.data())
def test_balances_continue_from_where_they_stand(problem, data):
    """Starting balances (the kept judgments' sides): arm pairs stay within one, counting them in; no rater
    ends further off than the bound or one past the worst starting balance, but for the steps that arm
    pairs starting off balance force. (The starting surplus has to stay somewhere: each pair's slots are
    split as evenly as its k allows, so two raters starting at +3 may well end at +4 and +2.)"""
    slots, seed = problem
    raters = sorted({rater for _, _, rater in slots})
    groups = sorted({group for _, group, _ in slots}, key=repr)
    start = {"rater": {r: data.draw(st.integers(-6, 6)) for r in raters},
             "group": {g: data.draw(st.integers(-1, 1)) for g in groups}}
    sides = orient(slots, seed=seed, rater_balance=start["rater"], group_balance=start["group"])
    _, per_group, per_rater = balances(slots, sides, start)
    assert max(map(abs, per_group.values())) <= 1
    assert violations(slots, sides, group_balance=start["group"]) == []
    # A pair of arms that starts one off forces its next odd slot the other way, whoever's it is.
    forced = sum(1 for value in start["group"].values() if value)
    worst_start = max(map(abs, start["rater"].values()))
    assert max(map(abs, per_rater.values())) <= max(RATER_BOUND, worst_start + 1) + forced, (start, per_rater)


def test_a_rater_far_off_balance_is_steered_back():
    # Both see every pair of one pair of arms: k = 2, one on each side, and the left goes to whoever has
    # had it less, so the one six ahead meets the other half way (their sum stays six) and they stay level.
    slots = [(f"pair-{p}", (1, 2), rater) for p in range(10) for rater in ("ahead", "level")]
    for seed in range(20):
        sides = orient(slots, seed=seed, rater_balance={"ahead": 6})
        _, _, per_rater = balances(slots, sides, {"rater": {"ahead": 6}})
        assert per_rater["ahead"] + per_rater["level"] == 6 and abs(per_rater["ahead"] - per_rater["level"]) <= 2


def test_violations_names_what_is_off():
    slots = [("p1", (1, 2), "x"), ("p1", (1, 2), "y"), ("p2", (1, 2), "x")]
    sides = {("x", "p1"): True, ("y", "p1"): True, ("x", "p2"): True}
    assert violations(slots, sides) == ["pair p1 is shown +2 towards one side",
                                        "arms (1, 2) are shown +3 towards one side"]
    assert violations(slots, {**sides, ("y", "p1"): False, ("x", "p2"): False}) == []


# ----------------------------------------------------------------------------- through the service


@pytest.mark.django_db
def test_a_late_rater_leaves_every_pair_of_arms_as_balanced_as_the_kept_rows_allow(rating_study):
    from evalapp.models import ResponsePair
    from raters import services
    from raters.models import PairAssignment

    from ..factories import ArmFactory, ResponseFactory
    from .conftest import add_rater

    third = ArmFactory(study=rating_study, label="third")
    for prompt in rating_study.prompts.all():
        ResponseFactory(prompt=prompt, arm=third, text=f"third to {prompt.external_id}")
    raters = [add_rater(rating_study, f"r{i}") for i in range(3)]
    services.pair_phase_save(study=rating_study, criteria=[{"key": "empathy", "question": "More empathetic?"}],
                             judgments_per_pair=3, gold_rate=0.0, reason="none")
    services.pair_phase_open(study=rating_study)
    pick = random.Random(5)
    for rater in raters[:2]:  # two of them judge part of their queue before the late rater joins
        for slot in PairAssignment.objects.filter(study=rating_study, rater=rater).order_by("position")[:7]:
            services.pair_judgment_submit(study=rating_study, rater=rater, item_public_id=slot.pair.public_id,
                                          submission=services.PairSubmission({"empathy": pick.choice("ab")}))
    before = set(PairAssignment.objects.filter(study=rating_study).values_list("id", flat=True))
    late = add_rater(rating_study, "late")  # joining rebuilds the queues (raters.services.design)
    assert PairAssignment.objects.filter(study=rating_study, rater=late).exists()
    arms = {p.id: (p.first.arm_id, p.second.arm_id)
            for p in ResponsePair.objects.filter(study=rating_study).select_related("first", "second")}
    rows = PairAssignment.objects.filter(study=rating_study).values_list("id", "pair_id", "first_on_left")
    kept, total = Counter(), Counter()  # kept: the rows the rebalance left (judged, and each one's pair on screen)
    for row_id, pair_id, first_on_left in rows:
        step = 1 if first_on_left else -1
        total[arms[pair_id]] += step
        kept[arms[pair_id]] += step if row_id in before else 0
    assert 0 < len(before & {row[0] for row in rows}) < len(before)
    # The rebalance counts the kept rows in: each pair of arms ends within one, or (when the judged part of
    # the queues already leaned further, which orient cannot undo) no further out than the kept rows left it.
    assert len(total) == 3
    for group, value in total.items():
        assert abs(value) <= max(1, abs(kept[group])), (group, total, kept)


@SETTINGS
@given(pair_designs(max_prompts=15), st.data())
def test_a_pairs_kept_sides_are_counted_in(problem, data):
    """A pair whose kept judgments lean one way gets its new slots the other way: rule 1 over both."""
    slots, seed = problem
    pairs = sorted({pair for pair, _, _ in slots})
    n_new = Counter(pair for pair, _, _ in slots)
    start = {pair: data.draw(st.integers(-n_new[pair], n_new[pair])) for pair in pairs}
    sides = orient(slots, seed=seed, pair_balance=start)
    assert [v for v in violations(slots, sides, pair_balance=start) if v.startswith("pair")] == []
