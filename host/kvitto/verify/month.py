"""A month judged piece by piece (issue #21): the unit of judging, the per-unit entry point and
the month over a process pool, with results equal to one process.

    unit = Unit(("c-1001", "c-1002"), claims, orders, {"c-1001": [...], "c-1002": [...]})
    verdict = judge_unit(profile, 2026, 10, registry, unit)   # the stable entry point
    for verdict in judge_month(Month(profile, 2026, 10, registry), units, jobs=2): ...
    result = merge_verdicts(verdicts)    # findings in claims order, billing by customer

A unit is the smallest set of customers whose findings depend on nothing outside it: one
customer, joined with its cohabitants (E6 and the coverage rules read the household's doors)
and with every customer a staff member's overlapping claims reach (T2 shares one person's
overlapping time between homes). `units_of` forms them from a month's claims; a stream of them
(the bench builds one customer at a time) is judged with at most a window of units in flight,
so memory follows the largest unit, not the month.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

from kvitto.verify.case import Claim, Order, Registry
from kvitto.verify.rules import Facts, Finding, Profile, _rule_order, run_rules
from kvitto.verify.rules.billing import billing_basis
from kvitto.verify.visits import Evidence, Presence

NO_POSITION = 1 << 62  # a finding whose claim is not among the unit's (none today)
# Claims handed to a process at a time; a month of one batch or less is judged in this process
# (starting processes would cost more than it saves). Tests lower it to use the pool.
BATCH_CLAIMS = 2000


@dataclass
class Unit:
    """Customers judged together, with their claims of the month (in claims.csv order), their
    orders and the presences at their doors. `positions`: each claim's index in the month's
    claims (for the report's order); empty means the claims' own order."""

    customers: tuple[str, ...]
    claims: list[Claim]
    orders: list[Order]
    presences: dict[str, list[Presence]]
    positions: list[int] = field(default_factory=list)
    # passages of the shared entrance locks serving its customers: never presence, only the
    # reason a claim they alone show has no evidence at the apartment (issue #23, E1)
    entrance: list[Presence] = field(default_factory=list)
    # its customers' claims before the month that the month's rules read (Facts.earlier: X6)
    earlier: list[Claim] = field(default_factory=list)


@dataclass
class Verdict:
    """What one unit's judging gives: findings (sorted by claim position, then rule), the
    billing rows of its customers, what could not be checked, and counts to add up."""

    customers: tuple[str, ...]
    findings: list[tuple[int, Finding]]
    billing: list[dict[str, Any]]
    not_checked: list[tuple[int, dict[str, Any]]]  # position of its claim (-1: none)
    counts: dict[str, Any]
    claims: int = 0  # the unit's claims judged


@dataclass
class Month:
    """What every unit of a month shares: the profile, the month and the registry."""

    profile: Profile
    year: int
    month: int
    registry: Registry


@dataclass
class Flow:
    """Counters of one judge_month run, for tests and the bench: units and customers judged,
    and the most customers handed out and not yet merged at any moment."""

    units: int = 0
    customers: int = 0
    customers_in_flight: int = 0
    most_customers_in_flight: int = 0


def judge_unit(profile: Profile, year: int, month: int, registry: Registry, unit: Unit) -> Verdict:
    """Judge one unit (a customer, its household and the customers T2 ties it to) for a month:
    all the profile's rules and the billing basis, exactly as the whole month would judge
    these claims. Pure: nothing is read or written."""
    evidence = Evidence(by_customer=unit.presences, entrance=unit.entrance)
    facts = Facts(profile, year, month, registry, unit.claims, unit.orders, evidence,
                  earlier=unit.earlier)  # fmt: skip
    findings = run_rules(facts)
    positions = unit.positions or range(len(unit.claims))
    named = {f.claim_id for f in findings} | {e.get("claim_id", "") for e in facts.not_checked}
    place = {c.claim_id: p for c, p in zip(unit.claims, positions) if c.claim_id in named}
    placed = [(place.get(f.claim_id, NO_POSITION), f) for f in findings]
    placed.sort(key=lambda item: (item[0], item[1].rule))
    billing = billing_basis(facts, findings)
    for row in billing:
        row.pop("claims", None)
    skipped = [(place.get(e.get("claim_id", ""), -1), e) for e in facts.not_checked]
    return Verdict(unit.customers, placed, billing, skipped, dict(facts.counts), len(unit.claims))


def units_of(
    registry: Registry,
    claims: list[Claim],
    orders: list[Order],
    evidence: Evidence,
    earlier: Iterable[Claim] = (),
) -> Iterator[Unit]:
    """The month's units (see the module), in order of their first claim; customers with
    orders or presences but no claims are left out (no rule judges them). `earlier`: claims
    before the month the rules read (Facts.earlier), each given to its customer's unit."""
    parent: dict[str, str] = {}

    def find(customer: str) -> str:
        root = parent.setdefault(customer, customer)
        while root != parent[root]:
            root = parent[root]
        while parent[customer] != root:  # path compression
            parent[customer], customer = root, parent[customer]
        return root

    def join(a: str, b: str) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    by_customer: dict[str, list[int]] = defaultdict(list)
    for index, claim in enumerate(claims):
        by_customer[claim.customer].append(index)
    for customer in by_customer:
        find(customer)
    for customer, cohabitant in _cohabitants(registry, by_customer):
        join(customer, cohabitant)
    for group in _staff_overlaps(claims):
        for customer in group[1:]:
            join(group[0], customer)
    if not claims:  # the month-wide notes (what the bundle cannot show) are still made
        yield Unit((), [], list(orders), {})
        return
    members: dict[str, list[str]] = defaultdict(list)
    for customer in by_customer:  # first-claim order
        members[find(customer)].append(customer)
    orders_of: dict[str, list[Order]] = defaultdict(list)
    for order in orders:
        orders_of[order.customer].append(order)
    earlier_of: dict[str, list[Claim]] = defaultdict(list)
    for claim in earlier:
        earlier_of[claim.customer].append(claim)
    for customers in members.values():
        everyone = _with_cohabitants(registry, customers)
        positions = sorted(i for c in customers for i in by_customer[c])
        yield Unit(
            customers=tuple(customers),
            claims=[claims[i] for i in positions],
            orders=[o for c in everyone for o in orders_of.get(c, [])],
            presences={c: evidence.by_customer[c] for c in everyone if c in evidence.by_customer},
            positions=positions,
            entrance=[
                p for p in evidence.entrance
                if not set(registry.devices[p.device].customers).isdisjoint(customers)
            ],
            earlier=[c for customer in customers for c in earlier_of.get(customer, [])],
        )  # fmt: skip


def _cohabitants(registry: Registry, customers: Iterable[str]) -> Iterator[tuple[str, str]]:
    """(customer, cohabitant) pairs among the given customers' households (claims only)."""
    first: dict[str, str] = {}
    for customer in customers:
        household = registry.household_of(customer)
        if household == customer:
            continue
        other = first.setdefault(household, customer)
        if other != customer:
            yield customer, other


def _with_cohabitants(registry: Registry, customers: list[str]) -> list[str]:
    """The customers and their cohabitants without claims (whose doors coverage reads)."""
    households = {registry.household_of(c) for c in customers} - set(customers)
    if not households:
        return customers
    extra = [
        c for c in registry.customers
        if c not in customers and registry.household_of(c) in households
    ]  # fmt: skip
    return customers + extra


def _staff_overlaps(claims: list[Claim]) -> Iterator[list[str]]:
    """The customers of each chain of one staff member's overlapping claims that reaches two
    or more customers: what T2 (kvitto.verify.rules.timing) compares."""
    by_staff: dict[str, list[Claim]] = defaultdict(list)
    for claim in claims:
        if claim.staff and claim.minutes > 0:
            by_staff[claim.staff].append(claim)
    for items in by_staff.values():
        items.sort(key=lambda c: (c.start, c.end))
        group: set[str] = set()
        end = None
        for claim in items:
            if end is not None and claim.start < end:
                group.add(claim.customer)
                end = max(end, claim.end)
                continue
            if len(group) > 1:
                yield sorted(group)
            group, end = {claim.customer}, claim.end
        if len(group) > 1:
            yield sorted(group)


# -- the month over a process pool ---------------------------------------------------------

_MONTH: Month | None = None  # a worker's month, set once by _start


def _start(month: Month) -> None:
    global _MONTH
    _MONTH = month


# A unit, or what makes it where it is judged (a reader of the store; the bench's generator):
# a picklable callable, so the process that judges a unit is also the one that holds it.
Lazy = Callable[[], Unit]
LAZY_CLAIMS = 100  # what a lazy unit counts for in a batch: a customer's month, ~3 visits a day


def _judge(month: Month, unit: Unit | Lazy) -> Verdict:
    made = unit if isinstance(unit, Unit) else unit()
    return judge_unit(month.profile, month.year, month.month, month.registry, made)


def _judge_batch(units: list[Unit | Lazy]) -> list[Verdict]:
    month = _MONTH
    assert month is not None, "worker started without its month"
    return [_judge(month, unit) for unit in units]


def default_jobs() -> int:
    """The cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def judge_month(
    month: Month,
    units: Iterable[Unit | Lazy],
    jobs: int | None = None,
    batch_claims: int | None = None,
    flow: Flow | None = None,
) -> Iterator[Verdict]:
    """Each unit's Verdict, in the units' order, judged over `jobs` processes (None: every
    core; 1: in this process). Units go out in batches of about `batch_claims` claims (default
    BATCH_CLAIMS), at most two batches per process in flight, so a streamed month is never held
    whole."""
    jobs = default_jobs() if jobs is None else max(1, jobs)
    flow = flow if flow is not None else Flow()
    batches = _batches(units, batch_claims or BATCH_CLAIMS)
    first = next(batches, [])
    second = next(batches, None)
    if jobs == 1 or second is None:
        rest = (unit for batch in batches for unit in batch)
        for unit in chain(first, second or [], rest):
            customers = _customers([unit])
            _count_out(flow, [unit], customers)
            yield _judge(month, unit)
            flow.customers_in_flight -= customers
        return
    context = multiprocessing.get_context("spawn")  # workers start small, not a fork's copy
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=_start,
                             initargs=(month,)) as pool:  # fmt: skip
        pending: deque[tuple[Future[list[Verdict]], int]] = deque()  # (batch, its customers)

        def drain() -> Iterator[Verdict]:
            done, customers = pending.popleft()
            yield from done.result()
            flow.customers_in_flight -= customers

        for batch in chain([first, second], batches):
            customers = _customers(batch)
            _count_out(flow, batch, customers)
            pending.append((pool.submit(_judge_batch, batch), customers))
            while len(pending) > 2 * jobs:
                yield from drain()
        while pending:
            yield from drain()


def _customers(units: list[Unit | Lazy]) -> int:
    """Customers held here for these units (a lazy unit is one, made elsewhere)."""
    return sum(len(u.customers) if isinstance(u, Unit) else 1 for u in units)


def _count_out(flow: Flow, batch: list[Unit | Lazy], customers: int) -> None:
    flow.customers_in_flight += customers
    in_flight = flow.customers_in_flight
    flow.units += len(batch)
    flow.customers += customers
    flow.most_customers_in_flight = max(flow.most_customers_in_flight, in_flight)


def _batches(units: Iterable[Unit | Lazy], claims: int) -> Iterator[list[Unit | Lazy]]:
    batch: list[Unit | Lazy] = []
    size = 0
    for unit in units:
        batch.append(unit)
        size += len(unit.claims) if isinstance(unit, Unit) else LAZY_CLAIMS
        if size >= claims:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


@dataclass
class MonthVerdict:
    """The month's verdicts merged: as verify_loaded reports them."""

    findings: list[Finding]
    billing: list[dict[str, Any]]
    not_checked: list[dict[str, Any]]
    counts: dict[str, Any]


def merge_verdicts(verdicts: Iterable[Verdict]) -> MonthVerdict:
    """Findings in claims order (then rule), billing rows by customer and category, what could
    not be checked in rule order (each once), counts added up."""
    placed: list[tuple[int, Finding]] = []
    billing: list[dict[str, Any]] = []
    not_checked: list[tuple[tuple[int, int], int, dict[str, Any]]] = []
    counts: dict[str, Any] = {}
    for verdict in verdicts:
        placed += verdict.findings
        billing += verdict.billing
        for where, entry in verdict.not_checked:
            not_checked.append((_order(entry["rule"]), where, entry))
        _add_counts(counts, verdict.counts)
    placed.sort(key=lambda item: (item[0], item[1].rule))
    billing.sort(key=lambda row: (row["customer"], row["category"]))
    # each entry once, in rule order, then claims order (entries naming no claim first)
    not_checked.sort(key=lambda item: (item[0], item[1]))
    seen: set[tuple[Any, ...]] = set()
    unique = []
    for _, _, entry in not_checked:
        key = tuple(sorted(entry.items()))
        if key not in seen:
            seen.add(key)
            unique.append(entry)
    return MonthVerdict([f for _, f in placed], billing, unique, counts)


def _order(rule: str) -> tuple[int, int]:
    try:
        return _rule_order(rule)
    except ValueError:  # not a rule id of RULES.md: after them all
        return (99, 0)


def _add_counts(total: dict[str, Any], counts: dict[str, Any]) -> None:
    for key, value in counts.items():
        if isinstance(value, dict):
            _add_counts(total.setdefault(key, {}), value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            total[key] = total.get(key, 0) + value
        else:
            total.setdefault(key, value)
