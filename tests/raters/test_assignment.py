"""The balanced rating design (raters/assignment.py): property tests, no database.

Long because the design's properties (exact k, loads, no repeats, groups, gold, extra demand, rebalance)
are checked by one shared independent checker and the same hypothesis strategies.

The checks here are written independently of Design.violations(), which is also asserted to agree.
"""

import itertools
import math
import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from raters.assignment import Design, GoldItem, Item, build_design, design_to_rows, ratings_wanted, rebalance

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
GOLD_RATES = [0.0, 0.05, 0.1, 0.25, 0.5, 1.0]


@st.composite
def problems(draw, max_items=200, max_raters=40, max_k=5):
    """Items in groups of 1-3 (the arms of a prompt), k, raters >= k, gold and a seed."""
    n_items = draw(st.integers(1, max_items))
    sizes = draw(st.lists(st.integers(1, 3), min_size=n_items, max_size=n_items))
    items = [Item(f"resp-{g}-{a}", f"prompt-{g}") for g, size in enumerate(sizes) for a in range(size)][:n_items]
    k = draw(st.integers(1, max_k))
    raters = [f"rater-{j}" for j in range(draw(st.integers(k, max(k, max_raters))))]
    rate = draw(st.sampled_from(GOLD_RATES))
    gold = [GoldItem(f"gold-{j}", {"empathy": 5.0}) for j in range(draw(st.integers(1 if rate else 0, 12)))]
    return items, raters, k, draw(st.integers(0, 2**32 - 1)), gold, rate


def caps_may_bind(items, raters, k):
    """A design can only be impossible when some queue is too short to keep a group apart."""
    largest = max(Counter(it.group for it in items).values())
    low, high = divmod(len(items) * k, len(raters))
    return low < 2 * largest - 1 and low + (high > 0) >= 2


def room(items_left, groups):
    """Most of these items a queue can hold with no two of a group adjacent."""
    counts = Counter(groups[i] for i in items_left)
    total, top = sum(counts.values()), max(counts.values(), default=0)
    return min(total, 2 * (total - top) + 1)


def assert_queue_rules(design, gold_ids, seen=None):
    """Rules 3 and 4 and the gold placement, for every queue."""
    seen = seen or {}
    for r, queue in design.queues.items():
        assert len(queue) == len(set(queue)), "an item twice in one queue"
        assert not set(queue) & set(seen.get(r, ())), "an item the rater already rated"
        real = [i for i in queue if i in design.groups]
        for a, b in zip(real, real[1:]):
            assert design.groups[a] != design.groups[b], f"{r}: {a} and {b} share a group and touch"
        for a, b in zip(queue, queue[1:]):  # the final queue, gold included
            assert not (a in design.groups and b in design.groups and design.groups[a] == design.groups[b])
        golds = [i for i in queue if i not in design.groups]
        assert set(golds) <= set(gold_ids)
        if queue:
            assert queue[0] in design.groups, "gold first"
        assert not any(a in gold_ids and b in gold_ids for a, b in zip(queue, queue[1:]))
        pool = len(set(gold_ids) - set(seen.get(r, ())))
        assert len(golds) == min(pool, math.floor(len(real) * design.gold_rate + 0.5))


def assert_design(design, items, raters, k, gold):
    assert isinstance(design, Design)
    assert sorted(design.queues) == sorted(raters)
    count = Counter(i for q in design.queues.values() for i in q if i in design.groups)
    assert count == Counter({it.item_id: k for it in items})  # rule 1 (distinctness: rule 3 below)
    loads = [sum(i in design.groups for i in q) for q in design.queues.values()]
    assert max(loads) - min(loads) <= 1  # rule 2
    assert_queue_rules(design, {g.item_id for g in gold})
    assert design.violations() == []


@SETTINGS
@given(problems())
def test_fresh_design_keeps_every_rule(problem):
    items, raters, k, seed, gold, rate = problem
    try:
        design = build_design(items, raters, k, seed, gold, rate)
    except ValueError as err:
        assert caps_may_bind(items, raters, k), f"refused a design that must exist: {err}"
        return
    assert design.seed == seed
    assert_design(design, items, raters, k, gold)
    rows = design_to_rows(design)
    assert len(rows) == sum(map(len, design.queues.values()))
    assert all(design.queues[r][p] == i and g == (i not in design.groups) for r, p, i, g in rows)


def feasible_by_brute_force(items, raters, k):
    groups = {it.item_id: it.group for it in items}
    for choice in itertools.product(itertools.combinations(raters, k), repeat=len(items)):
        held = {r: [it.item_id for it, c in zip(items, choice) if r in c] for r in raters}
        loads = [len(h) for h in held.values()]
        if max(loads) - min(loads) <= 1 and all(room(h, groups) == len(h) for h in held.values()):
            return True
    return False


@settings(max_examples=80, deadline=None)
@given(problems(max_items=5, max_raters=4, max_k=3))
def test_fresh_design_refuses_exactly_the_impossible(problem):
    items, raters, k, seed, gold, rate = problem
    try:
        assert_design(build_design(items, raters, k, seed, gold, rate), items, raters, k, gold)
        made = True
    except ValueError:
        made = False
    event(f"design made: {made}")
    assert made == feasible_by_brute_force(items, raters, k)


@SETTINGS
@given(problems(), st.randoms(use_true_random=False))
def test_same_seed_same_design_whatever_the_input_order(problem, shuffler):
    items, raters, k, seed, gold, rate = problem
    try:
        first = build_design(items, raters, k, seed, gold, rate)
    except ValueError:
        return
    items, raters, gold = list(items), list(raters), list(gold)
    for xs in (items, raters, gold):
        shuffler.shuffle(xs)
    assert build_design(items, raters, k, seed, gold, rate) == first


@settings(max_examples=30, deadline=None)
@given(st.integers(30, 120), st.integers(1, 3), st.integers(0, 2**32 - 2))
def test_another_seed_gives_another_order(n_items, k, seed):
    items = [Item(f"i{j}", j // 2) for j in range(n_items)]
    raters = [f"r{j}" for j in range(k + 1)]
    assert build_design(items, raters, k, seed) != build_design(items, raters, k, seed + 1)


SCRIPT = """
from raters.assignment import *
items = [Item(f"p{g}-{a}", f"p{g}") for g in range(40) for a in range(1 + g % 3)]
d = build_design(items, [f"r{j}" for j in range(6)], 3, 9, [GoldItem(f"gold{j}") for j in range(5)], 0.2)
rated = {r: set(q[: len(q) // 3]) for r, q in d.queues.items() if r != "r1"}
print(d.queues, rebalance(d, rated, [r for r in d.queues if r != "r1"] + ["late"], 4).queues)
"""


def test_same_design_whatever_the_string_hashing():
    # Iterating a set of strings follows PYTHONHASHSEED; a design must not.
    root = str(Path(__file__).resolve().parents[2])
    outputs = {
        subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True, cwd=root,
                       env={**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": root}).stdout
        for seed in ("1", "2", "3")
    }
    assert len(outputs) == 1


def test_a_realistic_study():
    items = [Item(f"resp{p}{arm}", p) for p in range(150) for arm in "AB"]
    gold = [GoldItem(f"gold{j}") for j in range(15)]
    design = build_design(items, [f"student{j}" for j in range(17)], 3, 2024, gold, 0.1)
    assert_design(design, items, [f"student{j}" for j in range(17)], 3, gold)
    # Neither forced apart nor forced together: some raters see both arms of some prompt, not all.
    both = [sum(n == 2 for n in Counter(design.groups[i] for i in q if i in design.groups).values())
            for q in design.queues.values()]
    assert 0 < sum(both) < 150 * 3


@pytest.mark.parametrize(
    ("items", "raters", "k", "kwargs", "message"),
    [
        ([Item("a", 1)], ["r1", "r2"], 3, {}, "at least 3 distinct raters"),
        ([Item("a", 1)], ["r1"], 0, {}, "at least 1"),
        ([Item("a", 1)], [], 1, {}, "at least 1 distinct raters"),
        ([Item("a", 1), Item("a", 2)], ["r1"], 1, {}, "item ids must be unique"),
        ([Item("a", 1)], ["r1", "r1"], 1, {}, "rater ids must be unique"),
        ([Item("a", 1)], ["r1"], 1, {"gold": [GoldItem("a")], "gold_rate": 0.1}, "must differ"),
        ([Item("a", 1)], ["r1"], 1, {"gold_rate": 0.1}, "at least one gold item"),
        ([Item("a", 1)], ["r1"], 1, {"gold": [GoldItem("g")], "gold_rate": 1.5}, "gold_rate"),
        ([Item("a", 1)], ["r1"], 1, {"seed": -1}, "seed"),
        ([Item("a", 1), Item("b", 1)], ["r1"], 1, {}, "back to back"),  # one queue of two arms
        ([Item("a", 1), Item("b", 1)], ["r1", "r2"], 2, {}, "back to back"),
        ([Item("a", 1), Item("b", 1), Item("c", 1), Item("d", 2)], ["r1", "r2", "r3"], 2, {}, "back to back"),
    ],
)
def test_impossible_inputs_are_refused_clearly(items, raters, k, kwargs, message):
    kwargs = {"seed": 0, **kwargs}
    with pytest.raises(ValueError, match=message):
        build_design(items, raters, k, **kwargs)


def test_two_arms_go_to_different_raters_when_queues_are_too_short():
    design = build_design([Item("a", 1), Item("b", 1)], ["r1", "r2"], 1, 0)
    assert sorted(map(len, design.queues.values())) == [1, 1]


# --- rebalance --------------------------------------------------------------------------------------


@st.composite
def progress(draw, max_items=200, max_raters=40, max_k=5, max_late=3):
    """A design part-way through: each rater rated a prefix of their queue; some withdraw (their
    ratings counted or not), some join late."""
    items, raters, k, seed, gold, rate = draw(problems(max_items, max_raters, max_k))
    try:
        design = build_design(items, raters, k, seed, gold, rate)
    except ValueError:
        assume(False)
    rated = {r: set(q[: draw(st.integers(0, len(q)))]) for r, q in design.queues.items()}
    gone = draw(st.sets(st.sampled_from(raters), max_size=len(raters) - 1))
    if not draw(st.booleans()):  # the caller may discard a withdrawn rater's ratings
        rated = {r: s for r, s in rated.items() if r not in gone}
    late = [f"late-{j}" for j in range(draw(st.integers(0, max_late)))]
    active = [r for r in raters if r not in gone] + late
    assume(len(active) >= k)
    return design, rated, active, late, gone, draw(st.integers(0, 2**32 - 1))


def assert_rebalanced(old, new, rated, active):
    kept = {r: {i for i in s if i in old.groups} for r, s in rated.items() if s & old.groups.keys()}
    assert {r: set(s) for r, s in new.kept.items()} == kept  # kept ratings kept
    assert sorted(new.queues) == sorted(active)  # withdrawn raters get nothing new
    count = Counter(i for s in kept.values() for i in s)
    count.update(i for q in new.queues.values() for i in q if i in old.groups)
    assert count == Counter(dict.fromkeys(old.groups, old.k))  # exactly k, from distinct raters:
    assert_queue_rules(new, set(old.gold), seen=rated)  # nobody gets what they rated, nor anything twice
    # Loads: whoever got new work has at most one more in total than anyone who could have taken more.
    left = [i for i in old.groups if Counter(i for s in kept.values() for i in s)[i] < old.k]
    new_load = {r: sum(i in old.groups for i in q) for r, q in new.queues.items()}
    total = {r: n + len(kept.get(r, ())) for r, n in new_load.items()}
    could = [total[r] for r in active if new_load[r] < room([i for i in left if i not in kept.get(r, ())], old.groups)]
    busy = [total[r] for r in active if new_load[r] > 0]
    if busy and could:
        assert max(busy) <= min(could) + 1
    assert new.violations() == []


@SETTINGS
@given(progress())
def test_rebalance_keeps_every_rule(case):
    design, rated, active, late, gone, seed = case
    try:
        new = rebalance(design, rated, active, seed)
    except ValueError:
        assume(False)  # exactness of the refusal is checked by brute force below
    assert_rebalanced(design, new, rated, active)
    assert rebalance(design, rated, list(reversed(active)), seed) == new  # deterministic
    kept = Counter(i for s in rated.values() for i in s if i in design.groups)
    left = [i for i in design.groups if kept[i] < design.k]
    remaining = sum(design.k - kept[i] for i in left)
    for r in late:  # a late joiner gets work whenever at least one rating per active rater is left
        if remaining >= len(active) and room(left, design.groups) > 0:
            assert any(i in design.groups for i in new.queues[r])


def completion_exists(old, rated, active):
    """Brute force: is there any completion meeting every rule of rebalance()'s guarantee?"""
    kept = {r: {i for i in s if i in old.groups} for r, s in rated.items()}
    count = Counter(i for s in kept.values() for i in s)
    need = {i: old.k - count[i] for i in old.groups if count[i] < old.k}
    left = list(need)
    free = {i: [r for r in active if i not in kept.get(r, ())] for i in left}
    options = [list(itertools.combinations(free[i], n)) for i, n in need.items()]
    room_of = {r: room([i for i in left if i not in kept.get(r, ())], old.groups) for r in active}
    for choice in itertools.product(*options):
        held = {r: [i for i, c in zip(left, choice) if r in c] for r in active}
        if any(room(h, old.groups) < len(h) for h in held.values()):
            continue
        total = {r: len(h) + len(kept.get(r, ())) for r, h in held.items()}
        busy = [total[r] for r in active if held[r]]
        could = [total[r] for r in active if len(held[r]) < room_of[r]]
        if not (busy and could) or max(busy) <= min(could) + 1:
            return True
    return False


@settings(max_examples=80, deadline=None)
@given(progress(max_items=4, max_raters=3, max_k=2, max_late=1))
def test_rebalance_refuses_exactly_the_impossible(case):
    design, rated, active, late, gone, seed = case
    try:
        assert_rebalanced(design, rebalance(design, rated, active, seed), rated, active)
        made = True
    except ValueError:
        made = False
    event(f"rebalanced: {made}")
    assert made == completion_exists(design, rated, active)


def test_rebalance_after_withdrawal_and_late_join():
    raters = [f"s{j}" for j in range(10)]
    items = [Item(f"resp{p}{arm}", p) for p in range(100) for arm in "AB"]
    gold = [GoldItem(f"gold{j}") for j in range(12)]
    design = build_design(items, raters, 3, 1, gold, 0.1)
    rng = random.Random(0)
    rated = {r: set(q[: rng.randrange(len(q) // 2)]) for r, q in design.queues.items()}
    active = raters[2:] + ["newcomer"]  # s0 and s1 withdraw; their ratings still count
    new = rebalance(design, rated, active, 5)
    assert_rebalanced(design, new, rated, active)
    assert "s0" not in new.queues and "s1" not in new.queues
    real = {r: sum(i in design.groups for i in q) for r, q in new.queues.items()}
    totals = {r: real[r] + len(rated.get(r, set()) & design.groups.keys()) for r in active}
    assert max(totals.values()) - min(totals.values()) <= 1
    # Discarding the withdrawn raters' ratings puts their items back into play.
    again = rebalance(design, {r: s for r, s in rated.items() if r not in ("s0", "s1")}, active, 5)
    assert sum(map(len, again.queues.values())) > sum(map(len, new.queues.values()))


def test_rebalance_refuses_clearly():
    design = build_design([Item("a", 1), Item("b", 2)], ["r1", "r2"], 2, 0)
    with pytest.raises(ValueError, match="unknown items"):
        rebalance(design, {"r1": {"zzz"}}, ["r1", "r2"], 0)
    with pytest.raises(ValueError, match="more than k=2"):
        rebalance(design, {"r1": {"a"}, "r2": {"a"}, "r3": {"a"}}, ["r1", "r2"], 0)
    with pytest.raises(ValueError, match="only 1 active raters"):
        rebalance(design, {}, ["r1"], 0)
    with pytest.raises(ValueError, match="active rater ids must be unique"):
        rebalance(design, {}, ["r1", "r1"], 0)


def test_rebalance_respects_room_when_one_group_is_all_that_is_left():
    # Only the two arms of prompt 1 are left (k=1). The newcomer, far behind, can still take just
    # one of them, since two arms in a queue of two would touch; the other goes to "a".
    design = Design({}, 0, 1, {"arm1": 1, "arm2": 1, "c": 2, "d": 3})
    rated = {"a": {"c", "d"}}
    new = rebalance(design, rated, ["a", "newcomer"], 0)
    assert_rebalanced(design, new, rated, ["a", "newcomer"])
    assert sorted(map(len, new.queues.values())) == [1, 1]


@pytest.mark.parametrize("seed", range(12))
def test_rebalance_finds_who_can_take_the_extra_item(seed):
    # k=3. x needs one more rating (two from withdrawn raters), y needs one but a and b rated it.
    # All three active raters stand at one rating, so two of them get one more: it must be c and
    # one of a, b, whatever the seed draws first.
    design = Design({}, 0, 3, {"x": 1, "y": 2, "z": 3})
    rated = {"w1": {"x", "z"}, "w2": {"x", "z"}, "a": {"y"}, "b": {"y"}, "c": {"z"}}
    new = rebalance(design, rated, ["a", "b", "c"], seed)
    assert_rebalanced(design, new, rated, ["a", "b", "c"])
    assert new.queues["c"] == ["y"]


# --- extra ratings (an adjudicator's send-back) ---------------------------------------------------------


@SETTINGS
@given(problems(max_items=60), st.data())
def test_extra_ratings_are_part_of_the_design_and_survive_rebalance(problem, data):
    items, raters, k, seed, gold, rate = problem
    assume(len(raters) > k)
    asked = data.draw(st.lists(st.sampled_from(items), unique=True, min_size=1, max_size=4))
    extra = {it.item_id: data.draw(st.integers(1, len(raters) - k)) for it in asked}
    try:
        design = build_design(items, raters, k, seed, gold, rate, extra=extra)
    except ValueError:
        assume(False)
    want = Counter({it.item_id: k + extra.get(it.item_id, 0) for it in items})
    assert Counter(i for q in design.queues.values() for i in q if i in design.groups) == want
    assert_queue_rules(design, {g.item_id for g in gold})
    assert design.violations() == []
    rated = {r: set(q[: data.draw(st.integers(0, len(q)))]) for r, q in design.queues.items()}
    late = ["late-0"]
    try:
        new = rebalance(design, rated, raters + late, seed)
    except ValueError:
        assume(False)
    count = Counter(i for s in rated.values() for i in s if i in design.groups)
    count.update(i for q in new.queues.values() for i in q if i in design.groups)
    assert count == want and new.extra == design.extra
    assert_queue_rules(new, set(design.gold), seen=rated)
    assert new.violations() == []


def test_an_extra_rating_asked_after_the_fact_goes_to_someone_who_has_not_rated_it():
    items = [Item(f"resp{p}{arm}", p) for p in range(20) for arm in "AB"]
    raters = [f"s{j}" for j in range(5)]
    design = build_design(items, raters, 2, 3)
    rated = {r: {i for i in q if i in design.groups} for r, q in design.queues.items()}  # all done
    asked = build_design(items, raters, 2, 3, extra={"resp7A": 1})
    new = rebalance(asked, rated, raters, 4)
    [(who, queue)] = [(r, q) for r, q in new.queues.items() if q]
    assert queue == ["resp7A"] and "resp7A" not in rated[who]


@pytest.mark.parametrize(
    ("extra", "message"),
    [({"zzz": 1}, "unknown items"), ({"a": -1}, "whole numbers from 0 to 1"), ({"a": 2}, "whole numbers")],
)
def test_impossible_extra_ratings_are_refused(extra, message):
    with pytest.raises(ValueError, match=message):
        build_design([Item("a", 1), Item("b", 2)], ["r1", "r2"], 1, 0, extra=extra)


@pytest.mark.parametrize(("per_item", "n_raters", "extra", "wanted"),
                         [(3, 5, 0, 3), (3, 2, 0, 2), (3, 5, 1, 4), (3, 4, 2, 4), (2, 0, 1, 0)])
def test_ratings_wanted_is_k_plus_extra_within_the_raters(per_item, n_raters, extra, wanted):
    assert ratings_wanted(per_item, n_raters, extra) == wanted
