"""An inventory against the site's expectations: the wire rows, and what is wrong, in words.

* ``device_present{kind,name}``: 1 per working device, 0 per device the OS lists as not
  working, 0 per named expectation no device matched (labelled with the pattern).
* ``device_count{kind}``: working devices, for every kind whose source could be read; a
  kind whose source failed has no count (unknown is not zero).
* ``device_expected{kind}``: the configured count, per configured kind.

Counts are minimums: a room with a spare microphone is ready. Names are case-insensitive
substrings and each must match a *different* working device; the assignment is a maximum
bipartite matching, so ``["HDMI", "SAMSUNG"]`` is met by "HDMI-A-1 (SAMSUNG)" and
"HDMI-A-2 (DELL)" even though "HDMI" alone would also take the Samsung.

Label values must be unique per kind (the wire refuses a repeated label set) while two
identical monitors or USB speakers share a name: repeats get " #2", " #3"... in the order
of (name, stable key), so a suffix keeps to one physical device while the set is stable.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from agent import wire
from agent.devices import KINDS, Device, Inventory
from agent.probes import label

if TYPE_CHECKING:
    from agent.config import DeviceExpectation


@dataclass
class Evaluation:
    metrics: dict[str, list[wire.Row]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # empty: the room is as configured


def match_names(patterns: Sequence[str], names: Sequence[str]) -> list[int | None]:
    """For each pattern, the index of the distinct name it is matched to (or None).

    Kuhn's augmenting paths: a maximum matching, trying patterns and names in order.
    """
    options = [[i for i, name in enumerate(names) if p.casefold() in name.casefold()]
               for p in patterns]
    owner: dict[int, int] = {}  # name index -> pattern index

    def augment(pattern: int, visited: set[int]) -> bool:
        for candidate in options[pattern]:  # a free device first: no needless reshuffle
            if candidate not in owner:
                owner[candidate] = pattern
                return True
        for candidate in options[pattern]:
            if candidate in visited:
                continue
            visited.add(candidate)
            if candidate not in owner or augment(owner[candidate], visited):
                owner[candidate] = pattern
                return True
        return False

    for pattern in range(len(patterns)):
        augment(pattern, set())
    result: list[int | None] = [None] * len(patterns)
    for candidate, pattern in owner.items():
        result[pattern] = candidate
    return result


def unique_labels(names: Iterable[str]) -> list[str]:
    """Sanitised label values, repeats suffixed " #2", " #3"... within the length limit."""
    seen: set[str] = set()
    out = []
    for raw in names:
        base = label(raw)
        candidate, n = base, 1
        while candidate in seen:
            n += 1
            suffix = f" #{n}"
            candidate = base[: wire.MAX_LABEL_VALUE_CHARS - len(suffix)] + suffix
        seen.add(candidate)
        out.append(candidate)
    return out


def _failure_text(kinds: tuple[str, ...], reason: str) -> str:
    return reason if set(kinds) == set(KINDS) else f"{', '.join(kinds)}: {reason}"


def evaluate(inventory: Inventory, expectations: Iterable[DeviceExpectation]) -> Evaluation:
    """Rows for the three device families and the problems, read failures first."""
    expectations = tuple(expectations)
    expected = {e.kind: e for e in expectations}
    unknown = inventory.unknown_kinds
    problems = [_failure_text(f.kinds, f.reason) for f in inventory.failures]
    not_working: list[str] = []
    present: list[wire.Row] = []
    counts: list[wire.Row] = []
    for kind in KINDS:
        devices: list[Device] = sorted((d for d in inventory.devices if d.kind == kind),
                                       key=lambda d: (d.name.casefold(), d.name, d.key))
        working = [d for d in devices if d.working]
        entries = [(d.name, 1.0 if d.working else 0.0) for d in devices]
        not_working += [f"{kind} '{d.name}' not working ({d.status})"
                        for d in devices if not d.working]
        if kind not in unknown:
            counts.append(((kind,), float(len(working))))
            expectation = expected.get(kind)
            if expectation is not None and expectation.names:
                matched = match_names(expectation.names, [d.name for d in working])
                for pattern, index in zip(expectation.names, matched, strict=True):
                    if index is None:
                        problems.append(f"{kind}: missing '{pattern}'")
                        entries.append((pattern, 0.0))
            elif expectation is not None and len(working) < expectation.count:
                found = "connected" if kind == "display" else "found"
                problems.append(f"{kind}: {len(working)} of {expectation.count} {found}")
        names = unique_labels(name for name, _ in entries)
        present += [((kind, name), value) for name, (_, value) in zip(names, entries, strict=True)]
    if len(present) > wire.MAX_ROWS_PER_METRIC:
        problems.append(f"{len(present)} device rows, only {wire.MAX_ROWS_PER_METRIC} sent")
    metrics: dict[str, list[wire.Row]] = {
        "device_present": present[: wire.MAX_ROWS_PER_METRIC],
        "device_count": counts,
        "device_expected": [((e.kind,), float(e.count)) for e in expectations],
    }
    # An empty family is left out: absent and empty mean the same on the wire.
    return Evaluation({k: rows for k, rows in metrics.items() if rows}, problems + not_working)
