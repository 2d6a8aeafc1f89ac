"""Bridge detail: everything one bridge room reports, against the readiness test's limits."""

from __future__ import annotations

from grafana_foundation_sdk.builders import common as common_b
from grafana_foundation_sdk.builders import gauge
from grafana_foundation_sdk.models import common as common_m

from .common import (
    BACKGROUND,
    BLUE,
    CHECKPOINTS,
    DEVICE_KINDS,
    DS,
    GREEN,
    GREY,
    JITTER_LIMIT_S,
    LOSS_LIMIT_RATIO,
    MOS_MIN,
    OK_1,
    ORANGE,
    READINESS_STATES,
    RED,
    RTT_LIMIT_S,
    SITE,
    VOLUME_ROLES,
    YELLOW,
    YES_NO,
    Board,
    Column,
    bar_panel,
    datasource_variable,
    label_table,
    lower_limit,
    matrix_table,
    names,
    pivot_table,
    province_variable,
    rate,
    sel,
    site_variable,
    stat_panel,
    steps,
    target,
    translate,
    ts_panel,
    upper_limit,
    vmap,
)

UID = "bw-bridge-detail"
TITLE = "BridgeWatch — Chi tiết điểm cầu"

_QUANTILES = 'quantile=~"0.5|0.9|0.99"'
_RFC3550 = 'definition="rfc3550"'
_UPLOAD = 'direction="upload"'
_DOWNLOAD = 'direction="download"'

POWER_STATES: dict[str | int, tuple[str, str]] = {
    0: ("Không xác định", GREY),
    1: ("Điện lưới", GREEN),
    2: ("Đang chạy pin", ORANGE),
    3: ("Pin yếu", RED),
}
# One code per UPS from the one-hot power state (unknown is all zeros: 0).
_POWER = {state: sel("bridge_ups_power_state", SITE, f'state="{state}"')
          for state in ("mains", "battery", "low_battery")}
POWER_CODE = (f"sum by (ups) (\n    {_POWER['mains']}\n  or {_POWER['battery']} * 2\n"
              f"  or {_POWER['low_battery']} * 3\n)")
SOFTWARE: dict[str | int, tuple[str, str]] = {
    1: ("Đang chạy", GREEN), 0: ("Đã tắt", BLUE), -1: ("Chưa cấu hình", GREY)}


def _overview(board: Board) -> None:
    """Who the bridge is, whether it reports, its latest test and its readiness."""
    board.add(stat_panel(
        "Điểm cầu", [target(sel("bridge_site_info", SITE), legend="{{name}}", instant=True)],
        text_mode=common_m.BigValueTextMode.NAME, color_mode=common_m.BigValueColorMode.NONE,
        description="Tên phòng tiếp công dân theo danh mục điểm cầu."), 8, 4)
    board.add(stat_panel(
        "Kết nối", [target(f"max({sel('bridge_up', SITE)})", instant=True)],
        mappings=vmap({1: ("Trực tuyến", GREEN), 0: ("Mất kết nối", RED)}),
        color_mode=common_m.BigValueColorMode.BACKGROUND), 4, 4)
    board.add(stat_panel(
        "Nhận dữ liệu lần cuối cách đây",
        [target(f"time() - max({sel('bridge_last_seen_timestamp_seconds', SITE)})",
                instant=True)],
        unit="s", thresholds=steps(GREEN, (60, ORANGE), (300, RED))), 4, 4)
    board.add(stat_panel(
        "Kiểm thử gần nhất",
        [target(f"min({sel('bridge_test_last_passed', SITE)})", instant=True)],
        mappings=vmap(OK_1), color_mode=common_m.BigValueColorMode.BACKGROUND), 4, 4)
    board.add(stat_panel(
        "Thời điểm kiểm thử gần nhất",
        [target(f"max({sel('bridge_test_last_timestamp_seconds', SITE)}) * 1000",
                instant=True)],
        unit="dateTimeFromNow", color_mode=common_m.BigValueColorMode.NONE), 4, 4)

    board.add(pivot_table(
        "Sẵn sàng theo phiên và mốc",
        f"max by (session, checkpoint, state) ({sel('bridge_readiness', SITE)}) == 1",
        row="session", column="checkpoint", value="state", row_header="Phiên",
        columns=CHECKPOINTS).mappings(vmap(READINESS_STATES))
        .override_by_name(CHECKPOINTS["confirm"], [BACKGROUND])
        .override_by_name(CHECKPOINTS["test-1"], [BACKGROUND])
        .override_by_name(CHECKPOINTS["test-2"], [BACKGROUND])
        .override_by_name(CHECKPOINTS["start"], [BACKGROUND]), 12, 6)
    failing = (f"max by (session, checkpoint, criterion) "
               f"({sel('bridge_readiness_failing_criterion', SITE)})\n"
               f"  * on (criterion) group_left (vi, advice_vi)\n"
               f"max by (criterion, vi, advice_vi) (bridge_readiness_criterion_info)")
    board.add(label_table(
        "Tiêu chí không đạt", failing,
        {"session": "Phiên", "checkpoint": "Mốc", "vi": "Tiêu chí", "advice_vi": "Hướng xử lý"},
        mappings={"checkpoint": names(CHECKPOINTS)}), 12, 6)


def _link(board: Board) -> None:
    """The link as the conference will feel it, per target, against the limits."""
    board.row("Đường truyền")
    board.add(ts_panel(
        "Độ trễ khứ hồi (RTT) theo đích",
        [target(sel("bridge_link_rtt_seconds", SITE, _QUANTILES),
                legend="{{target}} ({{method}}) phân vị {{quantile}}")],
        unit="s", thresholds=upper_limit(RTT_LIMIT_S),
        description="Phân vị 0,5 / 0,9 / 0,99 của cửa sổ đo gần nhất; ngưỡng 150 ms."), 12, 8)
    board.add(ts_panel(
        "Độ biến động trễ (jitter RFC 3550)",
        [target(sel("bridge_link_jitter_seconds", SITE, _RFC3550),
                legend="{{target}} ({{method}})")],
        unit="s", thresholds=upper_limit(JITTER_LIMIT_S),
        description="Jitter theo RFC 3550 trên thời gian khứ hồi; ngưỡng 30 ms."), 12, 8)
    board.add(ts_panel(
        "Tỉ lệ mất gói (5 phút)",
        [target(sel("bridge_site:link_loss_ratio:rate5m", SITE),
                legend="{{target}} ({{method}})")],
        unit="percentunit", thresholds=upper_limit(LOSS_LIMIT_RATIO), min_value=0,
        description="Quy tắc ghi bridge_site:link_loss_ratio:rate5m; ngưỡng 1 %."), 8, 8)
    board.add(ts_panel(
        "Điểm chất lượng thoại (MOS)",
        [target(sel("bridge_link_mos", SITE), legend="{{target}}")],
        unit="none", thresholds=lower_limit(MOS_MIN), min_value=1, max_value=5,
        description="MOS theo mô hình E (ITU-T G.107); tối thiểu 3,6."), 8, 8)
    board.add(ts_panel(
        "Gói tin đo gửi và nhận",
        [target(f"sum by (target, method) ({rate('bridge_link_packets_sent_total', SITE)})",
                legend="gửi: {{target}} ({{method}})"),
         target(f"sum by (target, method) "
                f"({rate('bridge_link_packets_received_total', SITE)})",
                "B", legend="nhận: {{target}} ({{method}})")],
        unit="pps"), 8, 8)


def _bandwidth(board: Board) -> None:
    """The last on-demand bandwidth test against the site's requirement."""
    board.row("Băng thông")
    board.add(stat_panel(
        "Băng thông đo gần nhất và yêu cầu",
        [target(f"max by (target) ({sel('bridge_link_bandwidth_bits_per_second', SITE, _UPLOAD)})",
                legend="Tải lên ({{target}})", instant=True),
         target(f"max by (target) "
                f"({sel('bridge_link_bandwidth_bits_per_second', SITE, _DOWNLOAD)})",
                "B", legend="Tải xuống ({{target}})", instant=True),
         target(f"max({sel('bridge_site_required_bandwidth_bits_per_second', SITE)})",
                "C", legend="Yêu cầu", instant=True)],
        unit="bps", text_mode=common_m.BigValueTextMode.VALUE_AND_NAME,
        color_mode=common_m.BigValueColorMode.NONE,
        description="Đo theo yêu cầu (bridgewatch-agent bandwidth hoặc khi kiểm thử)."), 10, 5)
    board.add(bar_panel(
        "Băng thông so với yêu cầu",
        [target(f"max by (target) ({sel('bridge_site:bandwidth_ratio', SITE, _UPLOAD)})",
                legend="Tải lên ({{target}})", instant=True),
         target(f"max by (target) ({sel('bridge_site:bandwidth_ratio', SITE, _DOWNLOAD)})",
                "B", legend="Tải xuống ({{target}})", instant=True)],
        unit="percentunit", thresholds=lower_limit(1.0), max_value=2.0,
        description="Dưới 100 % là không đủ băng thông cho phiên."), 8, 5)
    board.add(stat_panel(
        "Lần đo băng thông gần nhất",
        [target(f"max by (target) "
                f"({sel('bridge_link_bandwidth_test_timestamp_seconds', SITE)}) * 1000",
                legend="{{target}}", instant=True)],
        unit="dateTimeFromNow", color_mode=common_m.BigValueColorMode.NONE), 6, 5)


def _equipment(board: Board) -> None:
    """Room equipment, UPS, recording space and clock: the test's other criteria."""
    board.row("Thiết bị, nguồn điện, lưu trữ, đồng hồ")
    kind = translate("{}", "kind", "item", DEVICE_KINDS)
    count = kind.format(sel("bridge_device_count", SITE))
    expected = kind.format(sel("bridge_device_expected", SITE))
    named = (f'label_join({kind.format(sel("bridge_device_present", SITE))}, '
             f'"item", " · ", "item", "name")')
    board.add(matrix_table(
        "Thiết bị trong phòng", "item", "Thiết bị",
        [
            Column("Hiện có", f"max by (item) ({count})"),
            Column("Yêu cầu", f"max by (item) ({expected})"),
            Column("Đủ", f"max by (item) ({count} >= bool {expected})",
                   mappings=vmap({1: ("Đủ", GREEN), 0: ("Thiếu", RED)}), coloured=True),
            Column("Nhận diện", f"max by (item) ({named})", mappings=vmap(YES_NO),
                   coloured=True),
        ],
        description="Số thiết bị nhận diện theo loại so với yêu cầu của điểm cầu, và từng "
                    "thiết bị (loại · tên) có đang được nhận diện."), 8, 8)
    board.add(ts_panel(
        "Thời gian lưu điện so với yêu cầu",
        [target(sel("bridge_ups_runtime_seconds", SITE), legend="{{ups}}"),
         target(f"max({sel('bridge_ups_runtime_required_seconds', SITE)})", "B",
                legend="Yêu cầu (thời lượng phiên + dự phòng)")],
        unit="s", min_value=0,
        description="UPS phải giữ điện hết một phiên cộng thời gian dự phòng."), 10, 8)
    board.add(matrix_table(
        "Chi tiết UPS", "ups", "UPS",
        [
            Column("Tự kiểm tra", f"max by (ups) ({sel('bridge_ups_self_test_passed', SITE)})",
                   mappings=vmap(OK_1), coloured=True),
            Column("Số cảnh báo", f"max by (ups) ({sel('bridge_ups_alarms', SITE)})",
                   thresholds=steps(GREEN, (1, RED)), coloured=True),
            Column("Dư thời gian lưu điện",
                   f"max by (ups) ({sel('bridge_site:ups_runtime_margin_seconds', SITE)})",
                   unit="s", thresholds=steps(RED, (0, GREEN)), coloured=True),
        ]), 6, 8)

    board.add(stat_panel(
        "Trạng thái nguồn UPS", [target(POWER_CODE, legend="{{ups}}", instant=True)],
        mappings=vmap(POWER_STATES), color_mode=common_m.BigValueColorMode.BACKGROUND,
        text_mode=common_m.BigValueTextMode.VALUE_AND_NAME), 4, 5)
    board.add(
        gauge.Panel().title("Dung lượng pin UPS").datasource(DS)
        .with_target(target(sel("bridge_ups_battery_charge_ratio", SITE), legend="{{ups}}",
                            instant=True))
        .reduce_options(common_b.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .unit("percentunit").min(0).max(1)
        .thresholds(steps(RED, (0.5, YELLOW), (0.8, GREEN))), 4, 5)
    board.add(stat_panel(
        "Thời lượng ghi hình còn lại",
        [target(f"max({sel('bridge_recording_seconds_left', SITE)})", legend="Còn lại",
                instant=True),
         target(f"max({sel('bridge_planned_session_seconds', SITE)})", "B",
                legend="Một phiên dự kiến", instant=True)],
        unit="s", text_mode=common_m.BigValueTextMode.VALUE_AND_NAME,
        color_mode=common_m.BigValueColorMode.NONE), 6, 5)
    board.add(stat_panel(
        "Số phiên còn ghi được",
        [target(f"max({sel('bridge_site:recording_sessions_left', SITE)})", instant=True)],
        decimals=1, thresholds=steps(RED, (1, ORANGE), (2, GREEN)),
        description="Dung lượng trống của ổ ghi hình chia cho thời lượng một phiên; dưới 1 "
                    "là không đủ ghi một phiên."), 4, 5)
    role = translate("{}", "role", "item", VOLUME_ROLES)
    board.add(matrix_table(
        "Ổ ghi hình và ổ sao lưu", "item", "Ổ đĩa",
        [
            Column("Đã gắn", f"max by (item) ({role.format(sel('bridge_volume_mounted', SITE))})",
                   mappings=vmap({1: ("Đã gắn", GREEN), 0: ("Chưa gắn", RED)}), coloured=True),
            Column("Thiết bị cắm vào", "max by (item) "
                   f"({role.format(sel('bridge_volume_device_present', SITE))})",
                   mappings=vmap(YES_NO), coloured=True),
        ]), 6, 5)

    avail = sel("bridge_filesystem_avail_bytes", SITE)
    size = sel("bridge_filesystem_size_bytes", SITE)
    board.add(matrix_table(
        "Dung lượng phân vùng", "mountpoint", "Điểm gắn",
        [
            Column("Còn trống", f"max by (mountpoint) ({avail})", unit="bytes"),
            Column("Tổng", f"max by (mountpoint) ({size})", unit="bytes"),
            Column("Tỉ lệ trống", f"max by (mountpoint) ({avail} / {size})",
                   unit="percentunit", thresholds=steps(RED, (0.1, ORANGE), (0.2, GREEN)),
                   coloured=True),
        ]), 12, 7)
    limit = f"max({sel('bridge_clock_offset_limit_seconds', SITE)})"
    board.add(ts_panel(
        "Độ lệch đồng hồ so với máy chủ NTP",
        [target(sel("bridge_clock_offset_seconds", SITE), legend="{{server}}"),
         target(limit, "B", legend="Giới hạn"),
         target(f"-{limit}", "C", legend="Giới hạn (âm)")],
        unit="s", description="Lệch quá giới hạn làm sai thời điểm trong biên bản và bản "
                              "ghi hình."), 12, 7)


def _agent(board: Board) -> None:
    """Whether the agent itself is healthy enough to be believed."""
    board.row("Tác tử và phần mềm hội nghị")
    board.add(matrix_table(
        "Các phép đo của tác tử", "probe", "Phép đo",
        [
            Column("Kết quả", f"max by (probe) ({sel('bridge_probe_success', SITE)})",
                   mappings=vmap({1: ("Thành công", GREEN), 0: ("Lỗi", RED)}), coloured=True),
            Column("Thời gian đo",
                   f"max by (probe) ({sel('bridge_probe_duration_seconds', SITE)})", unit="s"),
        ],
        description="Mỗi phép đo (probe) của tác tử; lý do lỗi nằm trong nhật ký tác tử."),
        6, 9)
    board.add(stat_panel(
        "Phần mềm hội nghị",
        [target(f"max by (name) ({sel('bridge_software_running', SITE)})\n"
                f'  or on () label_replace(vector(-1), "name", "(không khai báo)", "", "")',
                legend="{{name}}", instant=True)],
        mappings=vmap(SOFTWARE), text_mode=common_m.BigValueTextMode.VALUE_AND_NAME,
        color_mode=common_m.BigValueColorMode.BACKGROUND,
        description="Phần mềm tắt giữa các phiên là bình thường; cảnh báo chỉ khi phiên sắp "
                    "bắt đầu."), 6, 9)
    board.add(ts_panel(
        "Hàng đợi gửi của tác tử (spool)",
        [target(sel("bridge_agent_spool_messages", SITE), legend="Số bản tin chờ gửi")],
        unit="short", min_value=0,
        description="Bản tin lưu trên đĩa chờ broker xác nhận; tăng dần là đường truyền "
                    "đến tỉnh có vấn đề."), 6, 9)
    board.add(ts_panel(
        "Bản tin bị bỏ hoặc bị mất",
        [target(f"sum({rate('bridge_agent_spool_dropped_total', SITE)})",
                legend="Tác tử bỏ (hàng đợi đầy)"),
         target(f"sum({rate('bridge_messages_lost_total', SITE)})", "B",
                legend="Bộ thu thập không nhận được")],
        unit="mps", min_value=0), 6, 9)
    board.add(ts_panel(
        "Bộ nhớ tác tử",
        [target(sel("bridge_agent_resident_memory_bytes", SITE), legend="Bộ nhớ thường trú")],
        unit="bytes", min_value=0), 12, 7)
    board.add(ts_panel(
        "CPU tác tử",
        [target(f"sum({rate('bridge_agent_cpu_seconds_total', SITE)})",
                legend="Tỉ lệ một lõi CPU")],
        unit="percentunit", min_value=0), 12, 7)


def build() -> Board:
    """The bridge detail dashboard."""
    board = Board(UID, TITLE, "Mọi số liệu của một điểm cầu so với ngưỡng kiểm thử: đường "
                  "truyền, băng thông, thiết bị, UPS, lưu trữ, đồng hồ và tác tử.",
                  [datasource_variable(), province_variable(), site_variable()],
                  f'ALERTS{{alertstate="firing", {SITE}}}')
    _overview(board)
    _link(board)
    _bandwidth(board)
    _equipment(board)
    _agent(board)
    return board

