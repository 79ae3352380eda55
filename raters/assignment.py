"""Who rates which response, in which order: the balanced blind rating design as plain data.

No Django (numpy + stdlib) so the rules can be property-tested without a database; the caller stores
a design with design_to_rows(). The rules, checked by Design.violations():
1. every real item is rated by exactly k distinct raters (after rebalance(), kept ratings count);
2. real-item loads differ by at most one between raters (rebalance(): see there);
3. no rater gets any item, gold included, twice;
4. two items of one group (arms of one prompt) never touch among a rater's real items, hence neither
   in the final queue, where a gold item between them does not count as a gap;
5. all chance comes from a numpy Generator seeded with the recorded seed, and ids are sorted first,
   so the same inputs and seed give the same design in whatever order the caller lists them.
Whether a rater sees both arms of a prompt is left to chance: research practice differs on it.

Rule 4 holds by capping each rater's items of one group at ceil(n/2) of their n items, the most a
queue can keep apart; _order() can order any mix within the cap. Exact per-item counts, exact loads
and that cap make a max-flow problem (items -> (group, rater) -> rater): a greedy fill finished by
augmenting paths either succeeds or proves that no design exists, so we never return a broken one.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter, deque
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

MAX_TRIES = 64  # rebalance(): how many ways of placing the "+1" loads are tried before giving up


@dataclass(frozen=True)
class Item:
    """A response to rate; `group` is its prompt (the responses of the arms to one prompt share it)."""
    item_id: str
    group: Hashable


@dataclass(frozen=True)
class GoldItem:
    """A calibration item with reference scores (scale -> score); only its id enters the design."""
    item_id: str
    reference: Mapping[str, float] = field(default_factory=dict)


@dataclass
class Design:
    queues: dict[str, list[str]]  # rater -> item ids in the order shown, gold included
    seed: int
    k: int
    groups: dict[str, Hashable]  # real item id -> group
    gold: tuple[str, ...] = ()
    gold_rate: float = 0.0
    # Set by rebalance(): real items each rater (active or not) had rated; they count toward k.
    kept: dict[str, frozenset[str]] | None = None

    def violations(self) -> list[str]:
        """Every broken rule, in words; empty for a valid design."""
        out: list[str] = []
        gold, kept = set(self.gold), self.kept or {}
        count: Counter[str] = Counter(i for items in kept.values() for i in items)
        new: dict[str, int] = {}
        for r, queue in self.queues.items():
            real = [i for i in queue if i in self.groups]
            new[r] = len(real)
            count.update(real)
            if len(set(queue)) < len(queue) or kept.get(r, frozenset()) & set(real):
                out.append(f"rater {r!r} gets an item twice")
            if any(i not in self.groups and i not in gold for i in queue):
                out.append(f"rater {r!r} has an unknown item")
            if queue and queue[0] in gold:
                out.append(f"rater {r!r} starts with a gold item")
            if any(self.groups[a] == self.groups[b] for a, b in zip(real, real[1:])):
                out.append(f"rater {r!r} gets two items of one group back to back")
        out += [f"item {i!r} has {count[i]} raters, not {self.k}" for i in self.groups if count[i] != self.k]
        if self.kept is None:
            if new and max(new.values()) - min(new.values()) > 1:
                out.append("loads differ by more than one")
        else:
            room = _rooms(self.groups, self.k, kept, list(new))
            total = {r: n + len(kept.get(r, ())) for r, n in new.items()}
            busy = [total[r] for r in new if new[r] > 0]
            could = [total[r] for r in new if new[r] < room[r]]
            if busy and could and max(busy) > min(could) + 1:
                out.append("a rater got new work while one who could take more has two fewer ratings")
        return out

    def check(self) -> None:
        if problems := self.violations():
            raise ValueError("design breaks its rules: " + "; ".join(problems[:5]))


def build_design(items: Sequence[Item], raters: Sequence[str], ratings_per_item: int, seed: int,
                 gold: Sequence[GoldItem] = (), gold_rate: float = 0.0) -> Design:
    """A fresh design: rules 1-5, loads within one, about `gold_rate` gold items per real item."""
    k = ratings_per_item
    groups = {it.item_id: it.group for it in sorted(items, key=lambda it: it.item_id)}
    gold_ids = tuple(sorted(g.item_id for g in gold))
    _unique("item", [it.item_id for it in items])
    _unique("gold item", list(gold_ids))
    _unique("rater", list(raters))
    if clash := sorted(set(groups) & set(gold_ids)):
        raise ValueError(f"gold item ids must differ from real item ids: {clash[:3]}")
    if not 0 <= gold_rate <= 1:
        raise ValueError(f"gold_rate must lie in [0, 1], got {gold_rate}")
    if gold_rate > 0 and not gold_ids:
        raise ValueError("gold_rate > 0 needs at least one gold item")
    if k < 1:
        raise ValueError(f"ratings_per_item must be at least 1, got {k}")
    if k > len(raters):
        raise ValueError(f"ratings_per_item={k} needs at least {k} distinct raters, got {len(raters)}")
    design = Design({}, _seed(seed), k, groups, gold_ids, gold_rate)
    # One try suffices: raters start alike, so which ones get the "+1" loads cannot matter.
    return _fill(design, sorted(raters), {}, {}, tries=1)


def rebalance(design: Design, rated: Mapping[str, Iterable[str]], active_raters: Sequence[str],
              seed: int) -> Design:
    """Re-plan the unrated work after raters joined late or withdrew.

    `rated` holds every rating that counts so far (cumulative, not since the last rebalance), per
    rater, active or not: leave a withdrawn rater out of it to discard their ratings. The result has
    a queue (remaining work only, gold included) for each active rater and none for anyone else;
    `kept` records the counted ratings. Guaranteed, or ValueError:
    - each real item: kept ratings + new assignments = k, all from distinct raters (rules 1, 3);
    - no rater gets an item (gold included) they have already rated; rules 4-5 hold for new queues;
    - loads (kept + new real items): let room(b) be the most remaining items rater b could still take
      (items short of k ratings that b has not rated, fewer if one group dominates them, rule 4).
      Whenever active rater a gets new work and active rater b got less than room(b), then
      total(a) <= total(b) + 1. So totals differ by at most one among active raters, except raters
      already above that level (they get nothing) and raters who can take no more (they get all).
    The ValueError is exact when at most MAX_TRIES ways exist to hand out the "+1" loads; beyond
    that it may, in theory, miss a design whose "+1" loads sit with other raters.
    """
    active = sorted(active_raters)
    _unique("active rater", active)
    kept: dict[str, frozenset[str]] = {}
    seen: dict[str, frozenset[str]] = {}
    for r in sorted(rated):
        ids = frozenset(rated[r])
        if unknown := sorted(ids - set(design.groups) - set(design.gold)):
            raise ValueError(f"rater {r!r} rated unknown items {unknown[:3]}")
        if real := ids.intersection(design.groups):
            kept[r] = real
        seen[r] = ids
    if over := [i for i, n in Counter(i for s in kept.values() for i in s).items() if n > design.k]:
        raise ValueError(f"items rated more than k={design.k} times: {sorted(over)[:3]}")
    fresh = Design({}, _seed(seed), design.k, design.groups, design.gold, design.gold_rate, kept)
    return _fill(fresh, active, kept, seen, tries=MAX_TRIES)


def design_to_rows(design: Design) -> list[tuple[str, int, str, bool]]:
    """(rater, position from 0, item id, is gold) for every queue entry, ready for a bulk insert."""
    gold = set(design.gold)
    return [(r, p, i, i in gold) for r, queue in design.queues.items() for p, i in enumerate(queue)]


def _seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:  # numpy refuses < 0
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return int(seed)


def _unique(what: str, ids: list[str]) -> None:
    if dup := [i for i, n in Counter(ids).items() if n > 1]:
        raise ValueError(f"{what} ids must be unique: {dup[:3]} repeat")


def _room(per_group: Iterable[int]) -> int:
    """Most items a queue can take from these group counts with no two of a group touching."""
    counts = list(per_group)
    total, top = sum(counts), max(counts, default=0)
    return min(total, 2 * (total - top) + 1)  # one dominant group: separate it with all the others


def _rooms(groups: Mapping[str, Hashable], k: int, kept: Mapping[str, frozenset[str]],
           raters: list[str]) -> dict[str, int]:
    """_room() of each rater over the items still short of k ratings that they have not rated."""
    count = Counter(i for s in kept.values() for i in s)
    open_items = [i for i in groups if count[i] < k]
    return {r: _room(Counter(groups[i] for i in open_items if i not in kept.get(r, ())).values())
            for r in raters}


def _fill(design: Design, raters: list[str], kept: Mapping[str, frozenset[str]],
          seen: Mapping[str, frozenset[str]], tries: int) -> Design:
    rng = np.random.default_rng(design.seed)
    groups, k = design.groups, design.k
    count = Counter(i for s in kept.values() for i in s)
    need = {i: k - count[i] for i in groups if count[i] < k}
    for i, n in need.items():
        if (free := sum(i not in kept.get(r, ()) for r in raters)) < n:
            raise ValueError(f"item {i!r} needs {n} more ratings but only {free} active raters have not rated it")
    room = _rooms(groups, k, kept, raters)
    total = sum(need.values())
    if sum(room.values()) < total:
        raise ValueError(f"{total} ratings remain but the raters can take only {sum(room.values())} of them "
                         "without rating an item twice or getting two items of one group back to back")
    # Water-filling: raise every rater's total (kept + new) to a common level, within room.
    done = {r: len(kept.get(r, ())) for r in raters}

    def at(level: int) -> dict[str, int]:
        return {r: min(room[r], max(0, level - done[r])) for r in raters}

    level, top = 0, max(done.values(), default=0) + max(room.values(), default=0)
    while level < top and sum(at(level + 1).values()) <= total:
        level += 1
    base, higher = at(level), at(level + 1)
    cands = [r for r in raters if higher[r] > base[r]]
    extra = total - sum(base.values())
    for pick in _picks(cands, extra, rng, tries):
        held = _solve(need, groups, {r: base[r] + (r in pick) for r in raters}, kept, rng)
        if held is not None:
            break
    else:
        raise ValueError(f"no design gives each item {k} distinct raters, loads as even as promised and no "
                         "rater two items of one group back to back; change the raters or ratings_per_item")
    for r in raters:
        pool = [g for g in design.gold if g not in seen.get(r, ())]
        design.queues[r] = _with_gold(_order(list(held[r]), groups, rng), pool, design.gold_rate, rng)
    if problems := design.violations():  # cheap, and a broken design must never reach the database
        raise RuntimeError(f"bug in raters.assignment: {problems[:5]}")
    return design


def _picks(cands: list[str], extra: int, rng: np.random.Generator, tries: int) -> Iterator[set[str]]:
    """Which raters get one item more than the level: every way if few, else `tries` random ones."""
    if math.comb(len(cands), extra) <= tries:
        combos = list(itertools.combinations(cands, extra))
        yield from (set(combos[j]) for j in rng.permutation(len(combos)))
    else:
        for _ in range(tries):
            yield {cands[j] for j in rng.choice(len(cands), extra, replace=False)}


def _solve(need: dict[str, int], groups: Mapping[str, Hashable], limit: dict[str, int],
           blocked: Mapping[str, frozenset[str]], rng: np.random.Generator) -> dict[str, dict[str, None]] | None:
    """Give item i need[i] distinct raters and rater r exactly limit[r] items, never one in blocked[r],
    at most ceil(limit[r]/2) of one group; None if impossible. Dicts, not sets, keep iteration order
    (hence the result) independent of string hashing."""
    raters, items = list(limit), list(need)
    cap = {r: (limit[r] + 1) // 2 for r in raters}
    held: dict[str, dict[str, None]] = {r: {} for r in raters}
    load, got, per = dict.fromkeys(raters, 0), dict.fromkeys(items, 0), Counter[tuple[Hashable, str]]()
    members: dict[Hashable, list[str]] = {}
    for i in items:
        members.setdefault(groups[i], []).append(i)

    def move(i: str, r: str, step: int) -> None:
        if step > 0:
            held[r][i] = None
        else:
            del held[r][i]
        load[r] += step
        got[i] += step
        per[groups[i], r] += step

    def free(i: str, r: str) -> bool:
        return i not in held[r] and i not in blocked.get(r, ())

    # Greedy: most unfilled load first (as in Gale-Ryser; alone it completes a fresh design when the
    # group cap does not bind), ties broken at random so that who meets which item is left to chance.
    for j in rng.permutation(len(items)):
        i = items[j]
        cand = [r for r in raters if free(i, r) and load[r] < limit[r] and per[groups[i], r] < cap[r]]
        noise = rng.random(len(cand))
        for x in sorted(range(len(cand)), key=lambda x: (load[cand[x]] - limit[cand[x]], noise[x]))[: need[i]]:
            move(i, cand[x], 1)

    # Augmenting paths. Nodes: ("i", item) an item that may take one more rater, ("g", group, rater)
    # one more of that group for that rater, ("r", rater) one more item for that rater. Moving
    # backwards through ("g", ...) -> ("i", j) hands item j, held by that rater, on to someone else.
    while any(got[i] < need[i] for i in items):
        parent: dict[tuple, tuple | None] = {("i", i): None for i in items if got[i] < need[i]}
        todo = deque(parent)
        while todo:
            node = todo.popleft()
            if node[0] == "r" and load[node[1]] < limit[node[1]]:
                break
            if node[0] == "i":
                nxt = [("g", groups[node[1]], r) for r in raters if free(node[1], r)]
            elif node[0] == "g":
                _, g, r = node
                nxt = [("r", r)] if per[g, r] < cap[r] else []
                nxt += [("i", j) for j in members[g] if j in held[r]]
            else:
                nxt = [("g", g, node[1]) for g in dict.fromkeys(groups[j] for j in held[node[1]])]
            for n in nxt:
                if n not in parent:
                    parent[n] = node
                    todo.append(n)
        else:
            return None  # the flow is maximal and short of the need: no assignment exists
        while (prev := parent[node]) is not None:
            if prev[0] == "i":
                move(prev[1], node[2], 1)
            elif prev[0] == "g" and node[0] == "i":
                move(node[1], prev[2], -1)
            node = prev
    return held


def _order(items: list[str], groups: Mapping[str, Hashable], rng: np.random.Generator) -> list[str]:
    """A random order with no two items of a group adjacent; needs every group <= ceil(n/2) items.

    Each step draws uniformly among items not of the last group, except that a group holding
    (left+1)/2 of the items left must go now; this never paints itself into a corner."""
    piles: dict[Hashable, list[str]] = {}
    for j in rng.permutation(len(items)):
        piles.setdefault(groups[items[j]], []).append(items[j])
    out: list[str] = []
    last: object = object()
    while (left := len(items) - len(out)) > 0:
        forced = [g for g, pile in piles.items() if 2 * len(pile) == left + 1]
        allowed = forced or [g for g in piles if g != last]
        sizes = np.cumsum([len(piles[g]) for g in allowed])
        g = allowed[int(np.searchsorted(sizes, rng.integers(sizes[-1]), side="right"))]
        out.append(piles[g].pop())
        if not piles[g]:
            del piles[g]
        last = g
    return out


def _with_gold(real: list[str], pool: list[str], rate: float, rng: np.random.Generator) -> list[str]:
    """Insert round(len(real) * rate) gold items (fewer if the pool runs out) after distinct real
    items: never first, never two in a row, never one the rater has seen."""
    n = min(len(pool), math.floor(len(real) * rate + 0.5))
    if n == 0:
        return real
    picks = [pool[j] for j in rng.choice(len(pool), n, replace=False)]
    after = dict(zip(sorted(int(p) for p in rng.choice(len(real), n, replace=False)), picks))
    return [x for p, i in enumerate(real) for x in ([i, after[p]] if p in after else [i])]
