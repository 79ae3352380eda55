"""Who rates which response, in which order: the balanced blind rating design as plain data.

No Django (numpy, scipy and the stdlib) so the rules can be property-tested without a database; the caller stores
a design with design_to_rows(). The rules, checked by Design.violations():
1. every real item is rated by exactly k distinct raters, plus the extra ratings asked for it (`extra`:
   an adjudicator's send-back); after rebalance(), kept ratings count;
2. real-item loads differ by at most one between raters (rebalance(): see there);
3. no rater gets any item, gold included, twice;
4. two items of one group (arms of one prompt) never touch among a rater's real items, hence neither
   in the final queue, where a gold item between them does not count as a gap;
5. all chance comes from a numpy Generator seeded with the recorded seed, and ids are sorted first,
   so the same inputs and seed give the same design in whatever order the caller lists them.
Whether a rater sees both arms of a prompt is left to chance: research practice differs on it.

Rule 4 holds by capping each rater's items of one group at ceil(n/2) of their n items, the most a
queue can keep apart; _order() can order any mix within the cap. Exact per-item counts, exact loads
and that cap make a max-flow problem (items -> (group, rater) -> rater): a random greedy fill, then
scipy's maximum_flow on what it left, either succeeds or proves that no design exists, so we never
return a broken one.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import maximum_flow

MAX_TRIES = 64  # rebalance(): how many ways of placing the "+1" loads are tried before giving up


def trim_over_target(rated: Mapping[str, Iterable[str]], want: Mapping[str, int]) -> dict[str, set[str]]:
    """Items can hold more counted ratings than wanted after raters come back (rebalance() refuses that):
    keep any of them, enough, in a fixed order."""
    counts: dict[str, int] = {}
    out: dict[str, set[str]] = {}
    for rater in sorted(rated):
        for item in sorted(rated[rater]):
            if counts.get(item, 0) < want[item]:
                counts[item] = counts.get(item, 0) + 1
                out.setdefault(rater, set()).add(item)
    return out


def ratings_wanted(ratings_per_item: int, n_raters: int, extra: int = 0) -> int:
    """How many ratings an item gets: the study's k plus those asked for it, within the raters there are.

    The one definition of the design's k (extra=0): the design and the adjudication queue both use it,
    so the queue never waits for a rating nobody can be asked for."""
    return min(ratings_per_item + extra, n_raters)


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
    extra: dict[str, int] = field(default_factory=dict)  # real item id -> ratings wanted beyond k

    def wanted(self) -> dict[str, int]:
        """Real item id -> how many distinct raters it needs in all (rule 1)."""
        return {i: self.k + self.extra.get(i, 0) for i in self.groups}

    def violations(self) -> list[str]:
        """Every broken rule, in words; empty for a valid design."""
        out: list[str] = []
        gold, kept, want = set(self.gold), self.kept or {}, self.wanted()
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
        out += [f"item {i!r} has {count[i]} raters, not {want[i]}" for i in self.groups if count[i] != want[i]]
        if self.kept is None:
            if new and max(new.values()) - min(new.values()) > 1:
                out.append("loads differ by more than one")
        else:
            room = _rooms(self.groups, want, kept, list(new))
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
                 gold: Sequence[GoldItem] = (), gold_rate: float = 0.0,
                 extra: Mapping[str, int] | None = None) -> Design:
    """A fresh design: rules 1-5, loads within one, about `gold_rate` gold items per real item.

    `extra` (item id -> ratings wanted beyond k) is kept in the design, so rebalance() honours it."""
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
    extra = {i: n for i, n in sorted((extra or {}).items()) if n}
    if unknown := sorted(set(extra) - set(groups)):
        raise ValueError(f"extra ratings asked for unknown items {unknown[:3]}")
    if bad := [i for i, n in extra.items() if not isinstance(n, int) or n < 0 or k + n > len(raters)]:
        raise ValueError(f"extra ratings must be whole numbers from 0 to {len(raters) - k}: {bad[:3]}")
    design = Design({}, _seed(seed), k, groups, gold_ids, gold_rate, extra=extra)
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
    want = design.wanted()
    if over := [i for i, n in Counter(i for s in kept.values() for i in s).items() if n > want[i]]:
        raise ValueError(f"items rated more than k={design.k} (plus extra) times: {sorted(over)[:3]}")
    fresh = Design({}, _seed(seed), design.k, design.groups, design.gold, design.gold_rate, kept, design.extra)
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


def _rooms(groups: Mapping[str, Hashable], want: Mapping[str, int], kept: Mapping[str, frozenset[str]],
           raters: list[str]) -> dict[str, int]:
    """_room() of each rater over the items still short of their ratings that they have not rated."""
    count = Counter(i for s in kept.values() for i in s)
    open_items = [i for i in groups if count[i] < want[i]]
    return {r: _room(Counter(groups[i] for i in open_items if i not in kept.get(r, ())).values())
            for r in raters}


def _fill(design: Design, raters: list[str], kept: Mapping[str, frozenset[str]],
          seen: Mapping[str, frozenset[str]], tries: int) -> Design:
    rng = np.random.default_rng(design.seed)
    groups, k, want = design.groups, design.k, design.wanted()
    count = Counter(i for s in kept.values() for i in s)
    need = {i: want[i] - count[i] for i in groups if count[i] < want[i]}
    for i, n in need.items():
        if (free := sum(i not in kept.get(r, ()) for r in raters)) < n:
            raise ValueError(f"item {i!r} needs {n} more ratings but only {free} active raters have not rated it")
    room = _rooms(groups, want, kept, raters)
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
    load, per = dict.fromkeys(raters, 0), Counter[tuple[Hashable, str]]()

    # Greedy: most unfilled load first (as in Gale-Ryser; alone it completes a fresh design when the
    # group cap does not bind), ties broken at random so that who meets which item is left to chance.
    for j in rng.permutation(len(items)):
        i = items[j]
        cand = [r for r in raters
                if i not in blocked.get(r, ()) and load[r] < limit[r] and per[groups[i], r] < cap[r]]
        noise = rng.random(len(cand))
        for x in sorted(range(len(cand)), key=lambda x: (load[cand[x]] - limit[cand[x]], noise[x]))[: need[i]]:
            held[cand[x]][i] = None
            load[cand[x]] += 1
            per[groups[i], cand[x]] += 1
    short = sum(need.values()) - sum(load.values())
    if short == 0:
        return held
    return _complete(need, groups, limit, blocked, cap, held, per, short)


def _complete(need: dict[str, int], groups: Mapping[str, Hashable], limit: dict[str, int],
              blocked: Mapping[str, frozenset[str]], cap: dict[str, int], held: dict[str, dict[str, None]],
              per: Counter[tuple[Hashable, str]], short: int) -> dict[str, dict[str, None]] | None:
    """Finish the greedy fill with a maximum flow through its residual network: source -> item
    (need) -> (group, rater) (1) -> rater (cap) -> sink (limit), each edge with what the greedy fill
    left of it forwards and what it used backwards, so the flow may hand an item on between raters."""
    raters, items = list(limit), list(need)
    # Node numbers: 0 the source, 1 the sink, then items, raters and (group, rater) pairs.
    node: dict[tuple, int] = {("i", i): 2 + n for n, i in enumerate(items)}
    node.update({("r", r): 2 + len(items) + n for n, r in enumerate(raters)})
    rows: list[int] = []
    cols: list[int] = []
    caps: list[int] = []

    def edge(u: int, v: int, capacity: int, used: int) -> None:
        rows.extend((u, v))
        cols.extend((v, u))
        caps.extend((capacity - used, used))

    for i in items:
        edge(0, node["i", i], need[i], sum(i in held[r] for r in raters))
        for r in raters:
            if i not in blocked.get(r, ()):
                gr = node.setdefault(("g", groups[i], r), len(node) + 2)
                edge(node["i", i], gr, 1, int(i in held[r]))
    for key, gr in list(node.items()):
        if key[0] == "g":
            edge(gr, node["r", key[2]], cap[key[2]], per[key[1], key[2]])
    for r in raters:
        edge(node["r", r], 1, limit[r], len(held[r]))
    size = len(node) + 2
    graph = csr_matrix((np.array(caps, dtype=np.int32), (rows, cols)), shape=(size, size))
    graph.eliminate_zeros()
    result = maximum_flow(graph, 0, 1)
    if result.flow_value < short:
        return None  # the flow is maximal and short of the need: no assignment exists
    owner = {n: key[2] for key, n in node.items() if key[0] == "g"}
    item_of = {n: key[1] for key, n in node.items() if key[0] == "i"}
    flow = result.flow.tocoo()
    for u, v, f in zip(flow.row, flow.col, flow.data, strict=True):
        if u in item_of and v in owner and f:  # +1: the item goes to that rater; -1: it leaves them
            if f > 0:
                held[owner[v]][item_of[u]] = None
            else:
                del held[owner[v]][item_of[u]]
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
