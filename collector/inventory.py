"""The site inventory: which bridges exist, where, and what link each one needs.

Only sites listed here are accepted from the broker; everything else is refused as
``unknown_site``. Site and province IDs are slugs, so no label value can be injected.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.wire import is_slug
from agent.yamlfile import read_yaml

LEVELS = ("central", "member", "national")
DEFAULT_BANDWIDTH_MBPS = {"central": 30.0, "member": 5.0, "national": 30.0}


@dataclass(frozen=True)
class Site:
    id: str
    province: str
    name: str
    level: str
    bandwidth_bits_per_second: float
    lat: float | None = None
    lon: float | None = None
    # The identifying labels every series of this site carries, rendered once.
    labels: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        labels = f'province="{self.province}",site="{self.id}",level="{self.level}"'
        object.__setattr__(self, "labels", labels)


@dataclass(frozen=True)
class Inventory:
    provinces: dict[str, str]
    sites: dict[str, Site]

    def shard(self, index: int, count: int) -> Inventory:
        """The sites one of ``count`` collector processes owns: a stable split by site id."""
        if not 0 <= index < count:
            raise InventoryError(f"shard {index}/{count}: need 0 <= index < count")
        return Inventory(self.provinces, {sid: site for sid, site in self.sites.items()
                                          if zlib.crc32(sid.encode()) % count == index})


class InventoryError(ValueError):
    pass


def _site(raw: Any, index: int, provinces: dict[str, str]) -> Site:
    where = f"sites[{index}]"
    if not isinstance(raw, dict):
        raise InventoryError(f"{where}: not a mapping")
    unknown = set(raw) - {"id", "province", "name", "level", "bandwidth_mbps", "lat", "lon"}
    if unknown:
        raise InventoryError(f"{where}: unknown keys {sorted(unknown)}")
    site_id, province = raw.get("id"), raw.get("province")
    if not is_slug(site_id):
        raise InventoryError(f"{where}: id {site_id!r} is not a slug (a-z, 0-9, -)")
    if province not in provinces:
        raise InventoryError(f"{where} ({site_id}): province {province!r} is not declared")
    level = raw.get("level", "member")
    if level not in LEVELS:
        raise InventoryError(f"{where} ({site_id}): level {level!r} not in {LEVELS}")
    name = raw.get("name", site_id)
    if not isinstance(name, str) or '"' in name or "\\" in name or "\n" in name:
        raise InventoryError(f"{where} ({site_id}): name must be text without quotes")
    mbps = raw.get("bandwidth_mbps", DEFAULT_BANDWIDTH_MBPS[level])
    coords = {k: raw.get(k) for k in ("lat", "lon")}
    for key, value in [("bandwidth_mbps", mbps), *coords.items()]:
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value)):
            raise InventoryError(f"{where} ({site_id}): {key} must be a number")
    if mbps <= 0:
        raise InventoryError(f"{where} ({site_id}): bandwidth_mbps must be positive")
    return Site(site_id, province, name, level, float(mbps) * 1e6, coords["lat"], coords["lon"])


def parse_inventory(raw: Any) -> Inventory:
    if not isinstance(raw, dict):
        raise InventoryError("inventory must be a mapping with provinces and sites")
    provinces_raw = raw.get("provinces") or {}
    if not isinstance(provinces_raw, dict):
        raise InventoryError("provinces must be a mapping")
    provinces: dict[str, str] = {}
    for slug, info in provinces_raw.items():
        if not is_slug(slug):
            raise InventoryError(f"province {slug!r} is not a slug")
        if info is None:  # "thanh-hoa:" with nothing after it: the slug names it
            provinces[slug] = slug
        elif isinstance(info, dict):
            provinces[slug] = str(info.get("name") or slug)
        else:
            provinces[slug] = str(info)
    sites_raw = raw.get("sites") or []
    if not isinstance(sites_raw, list):
        raise InventoryError("sites must be a list")
    sites: dict[str, Site] = {}
    for index, item in enumerate(sites_raw):
        site = _site(item, index, provinces)
        if site.id in sites:
            raise InventoryError(f"sites[{index}]: duplicate site id {site.id!r}")
        sites[site.id] = site
    return Inventory(provinces, sites)


def load_inventory(path: str | Path) -> Inventory:
    try:
        raw = read_yaml(path)
    except ValueError as err:  # not valid YAML: an inventory error like any other
        raise InventoryError(str(err)) from None
    try:
        return parse_inventory(raw)
    except InventoryError as err:
        raise InventoryError(f"{path}: {err}") from None
