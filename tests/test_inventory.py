"""The site inventory refuses what could break labels or readiness maths."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.inventory import InventoryError, load_inventory, parse_inventory

PROVINCES = {"dong-thap": {"name": "Đồng Tháp"}}


def test_defaults_follow_the_level() -> None:
    inv = parse_inventory({"provinces": PROVINCES, "sites": [
        {"id": "dt-tt", "province": "dong-thap", "level": "central"},
        {"id": "dt-xa", "province": "dong-thap", "name": "Xã Mỹ An"}]})
    assert inv.sites["dt-tt"].bandwidth_bits_per_second == 30e6
    assert inv.sites["dt-xa"].bandwidth_bits_per_second == 5e6
    assert inv.sites["dt-xa"].level == "member"
    assert inv.provinces == {"dong-thap": "Đồng Tháp"}


@pytest.mark.parametrize("site,message", [
    ({"id": 'x",a="1', "province": "dong-thap"}, "not a slug"),
    ({"id": "Xa-My-An", "province": "dong-thap"}, "not a slug"),
    ({"id": "x", "province": "ha-noi"}, "not declared"),
    ({"id": "x", "province": "dong-thap", "level": "district"}, "level"),
    ({"id": "x", "province": "dong-thap", "name": 'Xã "A"'}, "quotes"),
    ({"id": "x", "province": "dong-thap", "bandwidth_mbps": "5"}, "number"),
    ({"id": "x", "province": "dong-thap", "bandwidth_mbps": 0}, "positive"),
    ({"id": "x", "province": "dong-thap", "lat": float("nan")}, "number"),
    ({"id": "x", "province": "dong-thap", "colour": "red"}, "unknown keys"),
])
def test_bad_sites_are_refused_with_their_index(site: dict, message: str) -> None:
    with pytest.raises(InventoryError, match=message) as err:
        parse_inventory({"provinces": PROVINCES, "sites": [site]})
    assert "sites[0]" in str(err.value)


def test_duplicate_site_ids_are_refused() -> None:
    with pytest.raises(InventoryError, match="duplicate"):
        parse_inventory({"provinces": PROVINCES, "sites": [
            {"id": "x", "province": "dong-thap"}, {"id": "x", "province": "dong-thap"}]})


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "inventory.yaml"
    bad.write_text("sites: [unclosed", encoding="utf-8")
    with pytest.raises(InventoryError, match=r"inventory\.yaml"):
        load_inventory(bad)


def test_shards_partition_the_sites_stably() -> None:
    inv = parse_inventory({"provinces": PROVINCES, "sites": [
        {"id": f"dt-xa-{i}", "province": "dong-thap"} for i in range(300)]})
    shards = [inv.shard(i, 3) for i in range(3)]
    owned = [set(s.sites) for s in shards]
    assert set().union(*owned) == set(inv.sites)
    assert sum(len(o) for o in owned) == 300, "no site in two shards"
    assert all(60 < len(o) < 140 for o in owned), "roughly even"
    assert [set(inv.shard(i, 3).sites) for i in range(3)] == owned, "stable"
    with pytest.raises(InventoryError, match="shard"):
        inv.shard(3, 3)


def test_province_names_fall_back_to_the_slug() -> None:
    """A province listed with no name (``thanh-hoa:``) is named by its slug, not "None"."""
    inventory = parse_inventory({"provinces": {"thanh-hoa": None, "ha-noi": {},
                                               "dong-thap": {"name": "Đồng Tháp"},
                                               "hue": "Thành phố Huế"}, "sites": []})
    assert inventory.provinces == {"thanh-hoa": "thanh-hoa", "ha-noi": "ha-noi",
                                   "dong-thap": "Đồng Tháp", "hue": "Thành phố Huế"}
