"""Realistic fleets for the benchmarks: an inventory of N sites and their telemetry."""

from __future__ import annotations

import random
import time
from typing import Any

from agent import wire
from agent.simulated_pc import SimulatedPc
from collector.inventory import Inventory, parse_inventory

PROVINCE = "dong-thap"


def inventory_document(sites: int) -> dict[str, Any]:
    """One central bridge and N-1 communes, as an inventory file would list them."""
    return {
        "provinces": {PROVINCE: {"name": "Đồng Tháp"}},
        "sites": [{"id": f"dt-cau-{i:05d}", "province": PROVINCE,
                   "name": "Điểm cầu trung tâm tỉnh" if i == 0 else f"UBND xã số {i}",
                   "level": "central" if i == 0 else "member"} for i in range(sites)],
    }


def inventory(sites: int) -> Inventory:
    return parse_inventory(inventory_document(sites))


def inventory_part(sites: int, start: int, stop: int) -> Inventory:
    """Sites ``[start, stop)`` of the N-site fleet: the share one simulator process plays."""
    document = inventory_document(sites)
    document["sites"] = document["sites"][start:stop]
    return parse_inventory(document)


class FleetFeed:
    """Telemetry payloads of every site, one interval after another."""

    def __init__(self, inv: Inventory, interval: float = 10.0, seed: int = 1) -> None:
        rng = random.Random(seed)
        now = time.time()
        self.interval = interval
        self.sites = list(inv.sites.values())
        self.pcs = [SimulatedPc(s.level, s.bandwidth_bits_per_second, rng, now)
                    for s in self.sites]
        self.seq = 0

    def next_round(self) -> list[tuple[str, bytes]]:
        """(topic, payload) for every site: one more interval of telemetry."""
        self.seq += 1
        now = time.time()
        out = []
        for site, pc in zip(self.sites, self.pcs, strict=True):
            pc.advance(self.interval)
            message = wire.Telemetry(PROVINCE, site.id, 1, self.seq, self.seq, now,
                                     pc.probes(self.interval))
            out.append((wire.topic(wire.DEFAULT_PREFIX, PROVINCE, site.id, wire.Kind.TELEMETRY),
                        wire.encode(message)))
        return out
