"""Fleet overview: how many bridges are online and ready, where they are, what hurts now."""

from __future__ import annotations

from grafana_foundation_sdk.builders import common as common_b
from grafana_foundation_sdk.builders import geomap
from grafana_foundation_sdk.models import common as common_m
from grafana_foundation_sdk.models import dashboard as dash_m
from grafana_foundation_sdk.models import geomap as geomap_m

from .common import (
    BLUE,
    DS,
    GREEN,
    JITTER_LIMIT_S,
    LOSS_LIMIT_RATIO,
    MOS_MIN,
    ORANGE,
    PROVINCE,
    RED,
    RTT_LIMIT_S,
    YELLOW,
    Board,
    Column,
    datasource_variable,
    label_table,
    lower_limit,
    matrix_table,
    province_variable,
    sel,
    stat_panel,
    steps,
    tag,
    target,
    union,
    upper_limit,
    vmap,
)

UID = "bw-fleet-overview"
TITLE = "BridgeWatch — Tổng quan điểm cầu"

# Per-bridge state for the map and the counts, one code per (province, site):
# 0 offline, 1 failed (or missed), 2 pending, 3 passed its next checkpoint, 4 online with no
# checkpoint ahead. "Next checkpoint" = the one with the nearest deadline still ahead among
# the sessions the bridge belongs to.
STATE_CODES: dict[str | int, tuple[str, str]] = {
    0: ("Mất kết nối", RED),
    1: ("Chưa sẵn sàng: không đạt", ORANGE),
    2: ("Chưa sẵn sàng: chờ kiểm tra", YELLOW),
    3: ("Sẵn sàng", GREEN),
    4: ("Trực tuyến, chưa có mốc kiểm tra", BLUE),
}

# Seconds to the deadline, per (session, checkpoint, site, province) still ahead.
_AHEAD = f"""(
        max by (session, checkpoint, site, province) ({sel("bridge_readiness", PROVINCE)}) * 0
      + on (session, checkpoint) group_left ()
        (bridge_checkpoint:seconds_left > 0)
    )"""

# The readiness code (1 failed/missed, 2 pending, 3 passed) of each bridge's next checkpoint.
NEXT_CHECKPOINT_CODE = f"""min by (province, site) (
    sum without (state) (
        {sel("bridge_readiness", PROVINCE, 'state=~"failed|missed"')}
      or {sel("bridge_readiness", PROVINCE, 'state="pending"')} * 2
      or {sel("bridge_readiness", PROVINCE, 'state="passed"')} * 3
    )
  and on (session, checkpoint, site, province)
    (
      {_AHEAD}
      == on (site, province) group_left ()
      min by (site, province) {_AHEAD}
    )
)"""

BRIDGE_STATE = f"""(
    max by (province, site) ({sel("bridge_up", PROVINCE)} == 0)
  or on (province, site)
    {NEXT_CHECKPOINT_CODE}
  or on (province, site)
    max by (province, site) ({sel("bridge_up", PROVINCE)} == 1) * 4
  or on (province, site)
    max by (province, site) ({sel("bridge_site_info", PROVINCE)}) * 0
)"""

_LINK = "province, site, target"
LOSS = f"max by ({_LINK}) ({sel('bridge_site:link_loss_ratio:rate5m', PROVINCE)})"
_MEDIAN = 'quantile="0.5"'
_RFC3550 = 'definition="rfc3550"'
RTT = f"max by ({_LINK}) ({sel('bridge_link_rtt_seconds', PROVINCE, _MEDIAN)})"
JITTER = f"max by ({_LINK}) ({sel('bridge_link_jitter_seconds', PROVINCE, _RFC3550)})"
MOS = f"min by ({_LINK}) ({sel('bridge_link_mos', PROVINCE)})"
# How far the worst of a link's four measures is from its readiness limit (> 1: failing).
LINK_SCORE = f"""max by ({_LINK}) (
  {union([
      tag(f"{LOSS} / {LOSS_LIMIT_RATIO}", "measure", "loss"),
      tag(f"{RTT} / {RTT_LIMIT_S}", "measure", "rtt"),
      tag(f"{JITTER} / {JITTER_LIMIT_S}", "measure", "jitter"),
      tag(f"{MOS_MIN} / {MOS}", "measure", "mos"),
  ])}
)"""
WORST_LINKS = 10

ALERT_STATES: dict[str | int, tuple[str, str]] = {
    "firing": ("Đang báo", RED), "pending": ("Chờ đủ thời gian", YELLOW)}
SEVERITIES: dict[str | int, tuple[str, str]] = {
    "critical": ("Nghiêm trọng", RED), "warning": ("Cảnh báo", ORANGE),
    "info": ("Thông tin", BLUE)}
AREAS: dict[str | int, tuple[str, str]] = {
    "agent": ("Tác tử", "text"), "link": ("Đường truyền", "text"),
    "devices": ("Thiết bị", "text"), "power": ("Nguồn điện", "text"),
    "storage": ("Lưu trữ", "text"), "readiness": ("Sẵn sàng", "text"),
    "collector": ("Bộ thu thập", "text")}
# Alerts of the province, plus those without a province (the collector's own).
ALERTS_HERE = 'ALERTS{province=~"$province|"}'


def _worst_links(columns: str) -> str:
    """Keep the worst links' rows, keyed "site → target"."""
    return (f"label_join(\n  (\n{columns}\n  )\n  and on ({_LINK}) "
            f'topk({WORST_LINKS}, {LINK_SCORE}),\n  "link", " → ", "site", "target"\n)')


def _bridge_map() -> geomap.Panel:
    """Bridges at their coordinates, coloured by state: one query (latitude, longitude and
    state tagged apart) regrouped into one row per site by "grouping to matrix"."""
    lat, lon, state = "Vĩ độ", "Kinh độ", "Trạng thái"
    expr = union([
        tag(f"max by (province, site) ({sel('bridge_site_latitude_degrees', PROVINCE)})",
            "field", lat),
        tag(f"max by (province, site) ({sel('bridge_site_longitude_degrees', PROVINCE)})",
            "field", lon),
        tag(BRIDGE_STATE, "field", state),
    ])
    markers = (
        common_b.MapLayerOptions().type("markers").name("Điểm cầu").tooltip(True)
        .location(common_b.FrameGeometrySource().mode(common_m.FrameGeometrySourceMode.COORDS)
                  .latitude(lat).longitude(lon))
        .config({
            "showLegend": True,
            "style": {
                "color": {"field": state, "fixed": "dark-green"},
                "opacity": 0.9,
                "size": {"fixed": 9, "min": 4, "max": 16},
                "symbol": {"fixed": "img/icons/marker/circle.svg", "mode": "fixed"},
                "text": {"field": "Điểm cầu", "fixed": "", "mode": "field"},
                "textConfig": {"fontSize": 10, "offsetX": 0, "offsetY": -12,
                               "textAlign": "center", "textBaseline": "bottom"},
            },
        })
    )
    return (
        geomap.Panel().title("Bản đồ điểm cầu theo trạng thái").datasource(DS)
        .description("Màu theo trạng thái: mất kết nối, chưa sẵn sàng (không đạt / chờ kiểm "
                     "tra) hoặc sẵn sàng cho mốc kiểm tra gần nhất của điểm cầu.")
        .with_target(target(expr, table_format=True))
        .with_transformation(dash_m.DataTransformerConfig(id_val="groupingToMatrix", options={
            "columnField": "field", "rowField": "site", "valueField": "Value",
            "emptyValue": "null"}))
        .with_transformation(dash_m.DataTransformerConfig(id_val="organize", options={
            "excludeByName": {}, "indexByName": {}, "renameByName": {"site\\field": "Điểm cầu"}}))
        .view(geomap.MapViewConfig().id("fit").all_layers(True).padding(10).max_zoom(12))
        .controls(geomap.ControlsOptions().show_zoom(True).mouse_wheel_zoom(True)
                  .show_attribution(True))
        .basemap(common_b.MapLayerOptions().type("default").name("Nền bản đồ"))
        .layers([markers])
        .tooltip(geomap.TooltipOptions().mode(geomap_m.TooltipMode.DETAILS))
        .override_by_name(state, [
            dash_m.DynamicConfigValue(id_val="mappings", value=vmap(STATE_CODES)),
            dash_m.DynamicConfigValue(id_val="color", value={"mode": "thresholds"}),
        ])
        .thresholds(steps(RED))
    )


def build() -> Board:
    """The fleet overview dashboard."""
    board = Board(UID, TITLE, "Điểm cầu trực tuyến, sẵn sàng, bản đồ, đường truyền kém nhất "
                  "và cảnh báo đang báo.", [datasource_variable(), province_variable()],
                  'ALERTS{alertstate="firing", province=~"$province|"}')
    count = f"sum({sel('province:bridges:count', PROVINCE)})"
    up = f"sum({sel('province:bridges_up:sum', PROVINCE)})"
    board.add(stat_panel("Tổng số điểm cầu", [target(count, instant=True)],
                         thresholds=steps(BLUE)), 4, 4)
    board.add(stat_panel("Đang trực tuyến", [target(up, instant=True)],
                         thresholds=steps(GREEN)), 4, 4)
    board.add(stat_panel("Mất kết nối", [target(f"{count} - {up}", instant=True)],
                         thresholds=steps(GREEN, (1, RED))), 4, 4)
    board.add(stat_panel(
        "Sẵn sàng cho mốc kiểm tra kế tiếp",
        [target(f"count({BRIDGE_STATE} == 3) or vector(0)", instant=True)],
        thresholds=steps(GREEN),
        description="Điểm cầu trực tuyến đã đạt mốc kiểm tra có hạn gần nhất của mình."), 4, 4)
    board.add(stat_panel(
        "Chưa sẵn sàng cho mốc kế tiếp",
        [target(f"count({BRIDGE_STATE} > 0 < 3) or vector(0)", instant=True)],
        thresholds=steps(GREEN, (1, ORANGE)),
        description="Trực tuyến nhưng mốc kiểm tra gần nhất chưa đạt (không đạt hoặc chưa "
                    "kiểm tra)."), 4, 4)
    board.add(stat_panel(
        "Cảnh báo đang báo",
        [target('count(ALERTS{alertstate="firing", province=~"$province|"}) or vector(0)',
                instant=True)],
        thresholds=steps(GREEN, (1, RED))), 4, 4)

    board.add(_bridge_map(), 12, 14)
    board.add(matrix_table(
        f"Đường truyền kém nhất ({WORST_LINKS} đường)", "link", "Điểm cầu → đích",
        [
            Column("So với ngưỡng", LINK_SCORE, unit="suffix: lần", decimals=2,
                   thresholds=steps(GREEN, (0.8, YELLOW), (1, RED)), coloured=True),
            Column("Mất gói (5 phút)", LOSS, unit="percentunit", decimals=2,
                   thresholds=upper_limit(LOSS_LIMIT_RATIO), coloured=True),
            Column("Độ trễ khứ hồi (trung vị)", RTT, unit="s",
                   thresholds=upper_limit(RTT_LIMIT_S), coloured=True),
            Column("Jitter (RFC 3550)", JITTER, unit="s",
                   thresholds=upper_limit(JITTER_LIMIT_S), coloured=True),
            Column("MOS", MOS, decimals=2, thresholds=lower_limit(MOS_MIN), coloured=True),
        ],
        wrap=_worst_links,
        sort_desc="So với ngưỡng",
        description="Xếp theo chỉ số xấu nhất so với ngưỡng kiểm thử (trễ 150 ms, jitter "
                    "30 ms, mất gói 1 %, MOS 3,6); lớn hơn 1 là không đạt."), 12, 14)

    board.add(label_table(
        "Cảnh báo (đang báo và đang chờ)", ALERTS_HERE,
        {"alertstate": "Trạng thái", "severity": "Mức độ", "alertname": "Cảnh báo",
         "area": "Lĩnh vực", "province": "Tỉnh", "site": "Điểm cầu", "session": "Phiên",
         "checkpoint": "Mốc", "target": "Đích", "ups": "UPS", "kind": "Loại thiết bị",
         "probe": "Phép đo"},
        mappings={"alertstate": vmap(ALERT_STATES), "severity": vmap(SEVERITIES),
                  "area": vmap(AREAS)},
        coloured=("alertstate", "severity"), sort_by="Trạng thái",
        description="Mọi cảnh báo Prometheus đang giữ; cột Trạng thái cho biết đã báo hay "
                    "còn chờ đủ thời gian."), 24, 10)
    return board
