"""Collector health: is the province's collector up, connected, keeping up and accepting data."""

from __future__ import annotations

from grafana_foundation_sdk.models import common as common_m

from .common import (
    BLUE,
    GREEN,
    ORANGE,
    RATE,
    RED,
    Board,
    datasource_variable,
    stat_panel,
    steps,
    target,
    ts_panel,
    vmap,
)

UID = "bw-collector-health"
TITLE = "BridgeWatch — Sức khỏe bộ thu thập"

JOB = 'job="bridgewatch"'
INGEST_LAG_LIMIT_S = 5.0  # BridgeWatchCollectorIngestLagHigh: p99 above 5 s


def _lag(quantile: float) -> str:
    """A quantile of the ingest lag over `$__rate_interval`, across every collector shard."""
    return (f"histogram_quantile({quantile}, sum by (le) "
            f"(rate(bridge_collector_ingest_lag_seconds_bucket[{RATE}])))")


def build() -> Board:
    """The collector health dashboard (no province: one collector serves a province)."""
    board = Board(UID, TITLE, "Bộ thu thập của tỉnh: hoạt động, kết nối MQTT, lưu lượng bản "
                  "tin, bản tin bị từ chối, độ trễ tiếp nhận.", [datasource_variable()],
                  'ALERTS{alertstate="firing", area="collector"}')
    board.add(stat_panel(
        "Bộ thu thập hoạt động", [target(f"up{{{JOB}}}", legend="{{instance}}", instant=True)],
        mappings=vmap({1: ("Hoạt động", GREEN), 0: ("Ngừng", RED)}),
        color_mode=common_m.BigValueColorMode.BACKGROUND,
        description="Prometheus thu thập được /metrics của bộ thu thập."), 6, 4)
    board.add(stat_panel(
        "Kết nối MQTT",
        [target("bridge_collector_mqtt_connected", legend="{{instance}}", instant=True)],
        mappings=vmap({1: ("Đã kết nối", GREEN), 0: ("Mất kết nối", RED)}),
        color_mode=common_m.BigValueColorMode.BACKGROUND), 6, 4)
    board.add(stat_panel(
        "Điểm cầu đang báo cáo",
        [target("sum(bridge_up)", legend="Đang báo cáo", instant=True),
         target("count(bridge_site_info)", "B", legend="Trong danh mục", instant=True)],
        text_mode=common_m.BigValueTextMode.VALUE_AND_NAME, thresholds=steps(BLUE)), 6, 4)
    board.add(stat_panel(
        "Cảnh báo bộ thu thập đang báo",
        [target('count(ALERTS{area="collector", alertstate="firing"}) or vector(0)',
                instant=True)],
        thresholds=steps(GREEN, (1, RED))), 6, 4)

    board.add(ts_panel(
        "Bản tin nhận theo loại",
        [target(f"sum by (kind) (rate(bridge_collector_messages_received_total[{RATE}]))",
                legend="{{kind}}")],
        unit="mps", min_value=0,
        description="telemetry: số liệu định kỳ; state: trạng thái kết nối; test: kết quả "
                    "kiểm thử; cmd: lệnh."), 12, 8)
    board.add(ts_panel(
        "Bản tin bị từ chối theo lý do",
        [target(f"sum by (reason) (rate(bridge_collector_messages_rejected_total[{RATE}]))",
                legend="{{reason}}")],
        unit="mps", min_value=0, thresholds=steps(GREEN, (0.1, ORANGE)),
        description="Cảnh báo khi trên 0,1 bản tin/giây trong 10 phút (điểm cầu lạ, giả "
                    "mạo, sai định dạng...)."), 12, 8)
    board.add(ts_panel(
        "Độ trễ tiếp nhận (p50 / p99)",
        [target(_lag(0.5), legend="p50"), target(_lag(0.99), "B", legend="p99")],
        unit="s", min_value=0, thresholds=steps(GREEN, (INGEST_LAG_LIMIT_S, RED)),
        description="Từ lúc tác tử tạo bản tin đến lúc bộ thu thập nhận; cảnh báo khi p99 "
                    "trên 5 giây."), 8, 8)
    board.add(ts_panel(
        "Thời gian dựng trang /metrics",
        [target("bridge_collector_render_seconds", legend="{{instance}}"),
         target(f"scrape_duration_seconds{{{JOB}}}", "B",
                legend="Prometheus thu thập ({{instance}})")],
        unit="s", min_value=0), 8, 8)
    board.add(ts_panel(
        "Bản tin trùng lặp và bị mất",
        [target(f"sum(rate(bridge_collector_messages_duplicate_total[{RATE}]))",
                legend="Trùng lặp (đã bỏ)"),
         target(f"sum(rate(bridge_messages_lost_total[{RATE}]))", "B",
                legend="Mất (thiếu số thứ tự)")],
        unit="mps", min_value=0,
        description="Trùng lặp là bình thường khi gửi lại (QoS 1); mất là bản tin tác tử "
                    "sẽ không bao giờ gửi được."), 8, 8)
    board.add(ts_panel(
        "Yêu cầu HTTP bị từ chối theo lý do",
        [target(f"sum by (reason) (rate(bridge_collector_http_rejected_total[{RATE}]))",
                legend="{{reason}}")],
        unit="reqps", min_value=0, thresholds=steps(GREEN, (0.05, ORANGE)),
        description="unauthorized: thiếu hoặc sai token (cảnh báo khi trên 0,05/giây trong 10 "
                    "phút); internal_error: lỗi của bộ thu thập (cảnh báo ngay); còn lại: "
                    "yêu cầu sai định dạng, quá lớn, quá chậm."), 24, 8)
    return board
