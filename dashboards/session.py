"""Session board: the sessions ahead, and for each bridge and checkpoint whether it is ready."""

from __future__ import annotations

from grafana_foundation_sdk.builders import table
from grafana_foundation_sdk.models import common as common_m

from .common import (
    BACKGROUND,
    BLUE,
    CHECKPOINTS,
    GREEN,
    GREY,
    ORANGE,
    READINESS_STATES,
    RED,
    SESSION,
    Board,
    Column,
    datasource_variable,
    label_table,
    merged_table,
    names,
    pivot_table,
    province_variable,
    sel,
    session_variable,
    stat_panel,
    steps,
    target,
    vmap,
)

UID = "bw-session-board"
TITLE = "BridgeWatch — Phiên tiếp công dân"

_SESSIONS = 'session=~"$session"'
MISSED = 'state="missed"'
PASSED = 'state="passed"'
# Labels of every row of the session table: a session with its title and host bridge.
_SESSION_KEYS = {"session": "Phiên", "title": "Nội dung", "host": "Điểm cầu chủ trì"}
_SESSION_INFO = f"max by (session, title, host) ({sel('bridge_session_info', _SESSIONS)})"


def _per_session(expr: str) -> str:
    """A per-session value carrying the session's title and host (for the merged table)."""
    return f"{_SESSION_INFO}\n  * on (session) group_left ()\n{expr}"


def _readiness_matrix() -> table.Panel:
    """Bridge by checkpoint: the `state` label of the one-hot series that is 1, one row per
    session and bridge, one column per checkpoint, cells in Vietnamese and coloured."""
    expr = (f"label_join(\n  max by (session, checkpoint, site, state) "
            f"({sel('bridge_readiness', SESSION)}) == 1,\n"
            f'  "bridge", " · ", "session", "site"\n)')
    panel = pivot_table(
        "Trạng thái từng điểm cầu theo mốc kiểm tra", expr, row="bridge", column="checkpoint",
        value="state", row_header="Phiên · điểm cầu", columns=CHECKPOINTS,
        description="Mỗi dòng là một điểm cầu của một phiên; mỗi cột là một mốc: xác nhận "
                    "tham gia, kiểm thử trước 1 ngày, trước 2 giờ, sẵn sàng lúc bắt đầu.",
    ).mappings(vmap(READINESS_STATES))
    for header in CHECKPOINTS.values():
        panel = panel.override_by_name(header, [BACKGROUND])
    return panel


def build() -> Board:
    """The session board dashboard."""
    board = Board(UID, TITLE, "Các phiên tiếp công dân sắp tới và mức sẵn sàng của từng điểm "
                  "cầu theo các mốc kiểm thử (T-24 giờ, T-2 giờ, lúc bắt đầu).",
                  [datasource_variable(), province_variable(), session_variable()],
                  f'ALERTS{{alertstate="firing", {SESSION}}}')
    board.add(stat_panel(
        "Số phiên đang theo dõi",
        [target(f"count({sel('bridge_session_info', _SESSIONS)}) or vector(0)", instant=True)],
        thresholds=steps(BLUE)), 4, 4)
    board.add(stat_panel(
        "Thời gian còn lại đến hạn kiểm tra kế tiếp",
        [target(f"min by (session) ({sel('bridge_checkpoint:seconds_left', _SESSIONS)} > 0)",
                legend="{{session}}", instant=True)],
        unit="s", thresholds=steps(RED, (3600, ORANGE), (6 * 3600, GREEN)),
        text_mode=common_m.BigValueTextMode.VALUE_AND_NAME,
        no_value="Không còn mốc nào sắp đến hạn"), 8, 4)
    board.add(stat_panel(
        "Điểm cầu chưa sẵn sàng (còn hạn)",
        [target(f"count(count by (site) ({sel('bridge_readiness:not_ready', SESSION)}))"
                " or vector(0)", instant=True)],
        thresholds=steps(GREEN, (1, ORANGE)),
        description="Điểm cầu có ít nhất một mốc chưa đến hạn mà chưa đạt (không đạt hoặc "
                    "chưa kiểm tra)."), 4, 4)
    board.add(stat_panel(
        "Điểm cầu quá hạn chưa đạt",
        [target(f"count(count by (site) ({sel('bridge_readiness', SESSION, MISSED)}"
                " == 1)) or vector(0)", instant=True)],
        thresholds=steps(GREEN, (1, RED))), 4, 4)
    board.add(stat_panel(
        "Tiêu chí không đạt",
        [target(f"count({sel('bridge_readiness_failing_criterion', SESSION)}) or vector(0)",
                instant=True)],
        thresholds=steps(GREEN, (1, ORANGE)),
        description="Số tiêu chí không đạt trong lần kiểm thử gần nhất, cộng trên mọi điểm "
                    "cầu và mốc."), 4, 4)

    start = "max by (session) (bridge_session_start_timestamp_seconds)"
    end = "max by (session) (bridge_session_end_timestamp_seconds)"
    sites = f"count by (session) (max by (session, site) ({sel('bridge_readiness', SESSION)}))"
    board.add(merged_table(
        "Các phiên sắp tới", _SESSION_KEYS,
        [
            Column("Bắt đầu", _per_session(f"{start} * 1000"), unit="dateTimeAsIso"),
            Column("Kết thúc", _per_session(f"{end} * 1000"), unit="dateTimeAsIso"),
            Column("Bắt đầu sau", _per_session(f"({start} - time())"), unit="s",
                   thresholds=steps(RED, (2 * 3600, ORANGE), (24 * 3600, GREEN)),
                   coloured=True),
            Column("Số điểm cầu", _per_session(sites)),
        ],
        sort_by="Bắt đầu",
        description="Các phiên chưa kết thúc mà bộ thu thập đang theo dõi."), 24, 7)

    board.add(_readiness_matrix(), 24, 10)

    # Checkpoints of the sessions that have bridges in the selected provinces.
    judged = f"count by (session, checkpoint) ({sel('bridge_readiness', SESSION, PASSED)})"
    passed = f"sum by (session, checkpoint) ({sel('bridge_readiness', SESSION, PASSED)})"
    here = f"and on (session, checkpoint) {judged}"
    deadline = (f"max by (session, checkpoint) "
                f"({sel('bridge_checkpoint_deadline_timestamp_seconds', _SESSIONS)}) * 1000")
    left = f"max by (session, checkpoint) ({sel('bridge_checkpoint:seconds_left', _SESSIONS)})"
    board.add(merged_table(
        "Thời gian còn lại đến hạn từng mốc", {"session": "Phiên", "checkpoint": "Mốc"},
        [
            Column("Hạn", f"{deadline}\n  {here}", unit="dateTimeAsIso"),
            Column("Còn lại", f"{left}\n  {here}", unit="s",
                   thresholds=steps(GREY, (0, RED), (3600, ORANGE), (6 * 3600, GREEN)),
                   coloured=True),
            Column("Đạt", passed),
            Column("Tổng số điểm cầu", judged),
        ],
        sort_by="Hạn", key_mappings={"checkpoint": names(CHECKPOINTS)},
        description="Âm là đã qua hạn. Đạt / tổng: số điểm cầu đã đạt mốc trong tỉnh đang "
                    "chọn."), 12, 9)

    failing = (f"max by (session, checkpoint, site, criterion) "
               f"({sel('bridge_readiness_failing_criterion', SESSION)})\n"
               f"  * on (criterion) group_left (vi, advice_vi)\n"
               f"max by (criterion, vi, advice_vi) (bridge_readiness_criterion_info)")
    board.add(label_table(
        "Tiêu chí không đạt", failing,
        {"session": "Phiên", "checkpoint": "Mốc", "site": "Điểm cầu", "vi": "Tiêu chí",
         "advice_vi": "Hướng xử lý"},
        mappings={"checkpoint": names(CHECKPOINTS)},
        description="Tiêu chí không đạt trong lần kiểm thử gần nhất của mỗi điểm cầu, "
                    "kèm hướng xử lý."), 12, 9)
    return board

