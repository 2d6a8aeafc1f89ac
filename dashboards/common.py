"""Shared pieces of the BridgeWatch dashboards: variables, queries, panels, Vietnamese labels.

Everything a NOC operator reads is Vietnamese; the metric and label names stay as the
collector exposes them (alerts/rules/recording.yml and the alert spec are the contract).
Every query goes through ``target()`` so each one carries the ``${datasource}`` reference and
a refId, and every panel through ``Board.add()`` so ids and grid positions are stable.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from grafana_foundation_sdk.builders import bargauge, stat, table, timeseries
from grafana_foundation_sdk.builders import common as common_b
from grafana_foundation_sdk.builders import dashboard as dash_b
from grafana_foundation_sdk.builders import prometheus as prom_b
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.models import common as common_m
from grafana_foundation_sdk.models import dashboard as dash_m
from grafana_foundation_sdk.models import prometheus as prom_m

# The Prometheus data source provisioned by dashboards/provisioning/datasources.yml; the
# dashboards select it by default through their `datasource` variable.
DATASOURCE_UID = "bridgewatch-prometheus"
DATASOURCE_NAME = "BridgeWatch Prometheus"
DS = dash_m.DataSourceRef(type_val="prometheus", uid="${datasource}")
RATE = "$__rate_interval"
TAG = "bridgewatch"
TIMEZONE = "Asia/Ho_Chi_Minh"  # sessions and deadlines read in Vietnam's time, wherever viewed

# The readiness test's default limits (the alert spec's link limits): thresholds sit here.
RTT_LIMIT_S = 0.150
JITTER_LIMIT_S = 0.030
LOSS_LIMIT_RATIO = 0.01
MOS_MIN = 3.6

# Selector matchers for the dashboard variables.
PROVINCE = 'province=~"$province"'
SITE = 'province=~"$province", site=~"$site"'
SESSION = 'province=~"$province", session=~"$session"'

GREEN, YELLOW, ORANGE, RED, DARK_RED = "green", "yellow", "orange", "red", "dark-red"
BLUE, GREY = "blue", "text"

# Vietnamese names of the values the collector exposes as label slugs.
READINESS_STATES: dict[str, tuple[str, str]] = {
    "passed": ("Đạt", GREEN),
    "failed": ("Không đạt", RED),
    "pending": ("Chờ kiểm tra", YELLOW),
    "missed": ("Quá hạn", DARK_RED),
}
CHECKPOINTS: dict[str, str] = {
    "confirm": "Xác nhận tham gia (T-3 ngày)",
    "test-1": "Kiểm thử trước 1 ngày",
    "test-2": "Kiểm thử trước 2 giờ",
    "start": "Sẵn sàng lúc bắt đầu",
}
DEVICE_KINDS: dict[str, str] = {
    "camera": "Camera",
    "microphone": "Micrô",
    "speaker": "Loa",
    "display": "Màn hình",
}
VOLUME_ROLES: dict[str, str] = {
    "recording": "Ổ ghi hình",
    "backup": "Ổ sao lưu",
    "system": "Hệ thống",
    "other": "Khác",
}


def vmap(values: Mapping[str | int, tuple[str, str]]) -> list[dash_m.ValueMapping]:
    """Value mappings {raw: (Vietnamese text, colour)}: slugs and codes read as words."""
    options = {
        str(raw): dash_m.ValueMappingResult(text=text, color=color, index=i)
        for i, (raw, (text, color)) in enumerate(values.items())
    }
    return [dash_m.ValueMap(options=options)]


def names(values: Mapping[str, str]) -> list[dash_m.ValueMapping]:
    """Value mappings that only translate (no colour), e.g. checkpoint slugs."""
    options = {
        raw: dash_m.ValueMappingResult(text=text, index=i)
        for i, (raw, text) in enumerate(values.items())
    }
    return [dash_m.ValueMap(options=options)]


def steps(base: str, *levels: tuple[float, str]) -> dash_b.ThresholdsConfig:
    """Absolute thresholds: `base` colour below the first level, then each (level, colour)."""
    return (
        dash_b.ThresholdsConfig()
        .mode(dash_m.ThresholdsMode.ABSOLUTE)
        .steps(
            [dash_m.Threshold(value=None, color=base)]
            + [dash_m.Threshold(value=v, color=c) for v, c in levels]
        )
    )


def upper_limit(limit: float) -> dash_b.ThresholdsConfig:
    """Green up to a readiness limit, red above it (RTT, jitter, loss)."""
    return steps(GREEN, (limit, RED))


def lower_limit(limit: float) -> dash_b.ThresholdsConfig:
    """Red below a readiness limit, green from it (MOS, ratios to a requirement)."""
    return steps(RED, (limit, GREEN))


# Table cells coloured (background) by their mapping or threshold colour.
BACKGROUND = dash_m.DynamicConfigValue(
    id_val="custom.cellOptions", value={"type": "color-background", "mode": "basic"})

OK_1: dict[str | int, tuple[str, str]] = {1: ("Đạt", GREEN), 0: ("Không đạt", RED)}
YES_NO: dict[str | int, tuple[str, str]] = {1: ("Có", GREEN), 0: ("Không", RED)}


# --- queries -------------------------------------------------------------------------------


def target(
    expr: str, ref: str = "A", legend: str | None = None, *, table_format: bool = False,
    instant: bool = False,
) -> prom_b.Dataquery:
    """One Prometheus query on `${datasource}`; tables and stats ask for the latest value only."""
    q = prom_b.Dataquery().expr(expr).ref_id(ref).datasource(DS)
    if legend is not None:
        q = q.legend_format(legend)
    if table_format:
        q = q.format(prom_m.PromQueryFormat.TABLE)
    if instant or table_format:
        q = q.instant()
    return q


def sel(metric: str, matchers: str, *extra: str) -> str:
    """`metric{matchers, extra...}`: the variables' matchers plus the panel's own."""
    inner = ", ".join([m for m in (matchers, *extra) if m])
    return f"{metric}{{{inner}}}"


def rate(metric: str, matchers: str, *extra: str) -> str:
    """Per-second rate over Grafana's `$__rate_interval` (never a fixed window)."""
    return f"rate({sel(metric, matchers, *extra)}[{RATE}])"


def tag(expr: str, label: str, value: str) -> str:
    """Add a constant label, to tell the parts of a union (one table query) apart."""
    return f'label_replace({expr}, "{label}", "{value}", "", "")'


def translate(expr: str, src: str, dst: str, words: Mapping[str, str]) -> str:
    """Copy label `src` to `dst`, replacing known slugs with Vietnamese words."""
    out = f'label_replace({expr}, "{dst}", "$1", "{src}", "(.*)")'
    for slug, word in words.items():
        out = f'label_replace({out}, "{dst}", "{word}", "{src}", "{slug}")'
    return out


def union(parts: Sequence[str]) -> str:
    """`a or b or c`, one part a line, each in parentheses."""
    return "\n  or\n".join(f"({p})" for p in parts)


# --- panels --------------------------------------------------------------------------------


@dataclass
class Column:
    """One column of a table panel: a Vietnamese header, its query and how to show it."""

    name: str
    expr: str
    unit: str | None = None
    mappings: list[dash_m.ValueMapping] | None = None
    thresholds: dash_b.ThresholdsConfig | None = None
    coloured: bool = False  # colour the cell background by mapping/threshold
    decimals: int | None = None


def column_props(col: Column) -> list[dash_m.DynamicConfigValue]:
    """The field overrides that give a column its unit, mappings and colours."""
    props: list[dash_m.DynamicConfigValue] = []
    if col.unit is not None:
        props.append(dash_m.DynamicConfigValue(id_val="unit", value=col.unit))
    if col.decimals is not None:
        props.append(dash_m.DynamicConfigValue(id_val="decimals", value=col.decimals))
    if col.mappings is not None:
        props.append(dash_m.DynamicConfigValue(id_val="mappings", value=col.mappings))
    if col.thresholds is not None:
        props.append(dash_m.DynamicConfigValue(id_val="thresholds", value=col.thresholds.build()))
    if col.coloured:
        props.append(BACKGROUND)
    return props


def transform(kind: str, options: object) -> dash_m.DataTransformerConfig:
    """A Grafana transformation step (by its id) with its options."""
    return dash_m.DataTransformerConfig(id_val=kind, options=options)


def pivot_table(
    title: str, expr: str, *, row: str, column: str, row_header: str,
    columns: Mapping[str, str], value: str = "Value", description: str = "",
) -> table.Panel:
    """A table from ONE instant query regrouped by Grafana's "grouping to matrix": one row per
    value of label `row`, one column per value of label `column` (`columns` orders and names
    them {raw value: header}), cells from field `value` (the sample, or another label)."""
    corner = f"{row}\\{column}"
    return (
        base_table(title, description)
        .with_target(target(expr, table_format=True))
        .with_transformation(transform("groupingToMatrix", {
            "columnField": column, "rowField": row, "valueField": value,
            "emptyValue": "null"}))
        .with_transformation(transform("organize", {
            "excludeByName": {},
            "indexByName": {corner: 0, **{raw: i + 1 for i, raw in enumerate(columns)}},
            "renameByName": {corner: row_header, **columns}}))
    )


def matrix_table(
    title: str, row_label: str, row_header: str, columns: Sequence[Column], *,
    wrap: Callable[[str], str] | None = None, description: str = "", sort_desc: str | None = None,
    row_mappings: list[dash_m.ValueMapping] | None = None,
) -> table.Panel:
    """A table of several measures from ONE instant query: each column's series carry
    `field="<header>"` and are regrouped into one row per `row_label`. One query keeps the
    table whole when a column has no data for this bridge (e.g. nothing expected)."""
    expr = union([tag(c.expr, "field", c.name) for c in columns])
    if wrap is not None:
        expr = wrap(expr)
    panel = pivot_table(title, expr, row=row_label, column="field", row_header=row_header,
                        columns={c.name: c.name for c in columns}, description=description)
    for col in columns:
        props = column_props(col)
        if props:
            panel = panel.override_by_name(col.name, props)
    if row_mappings is not None:
        panel = panel.override_by_name(row_header, [
            dash_m.DynamicConfigValue(id_val="mappings", value=row_mappings)])
    if sort_desc is not None:
        panel = panel.sort_by([common_b.TableSortByFieldState().display_name(sort_desc).desc(True)])
    return panel


def merged_table(
    title: str, keys: Mapping[str, str], columns: Sequence[Column], *, description: str = "",
    sort_by: str | None = None, key_mappings: Mapping[str, list[dash_m.ValueMapping]] | None = None,
) -> table.Panel:
    """A table from several instant queries with the same labels (`keys`), merged into one
    row per label set; used where the key columns (e.g. a session's title) are text."""
    refs = [chr(ord("A") + i) for i in range(len(columns))]
    panel = base_table(title, description)
    for ref, col in zip(refs, columns, strict=True):
        panel = panel.with_target(target(col.expr, ref, table_format=True))
    keep = [*keys, *(f"Value #{r}" for r in refs)]
    rename = {**keys, **{f"Value #{r}": c.name for r, c in zip(refs, columns, strict=True)}}
    panel = (
        panel.with_transformation(transform("merge", {}))
        .with_transformation(transform("filterFieldsByName", {"include": {"names": keep}}))
        .with_transformation(transform("organize", {
            "excludeByName": {}, "indexByName": {k: i for i, k in enumerate(keep)},
            "renameByName": rename}))
    )
    for col in columns:
        props = column_props(col)
        if props:
            panel = panel.override_by_name(col.name, props)
    for key, mappings in (key_mappings or {}).items():
        panel = panel.override_by_name(keys[key], [
            dash_m.DynamicConfigValue(id_val="mappings", value=mappings)])
    if sort_by is not None:
        panel = panel.sort_by([common_b.TableSortByFieldState().display_name(sort_by)])
    return panel


def label_table(
    title: str, expr: str, columns: Mapping[str, str], *, description: str = "",
    mappings: Mapping[str, list[dash_m.ValueMapping]] | None = None,
    coloured: Sequence[str] = (), sort_by: str | None = None,
) -> table.Panel:
    """A table of the labels of one instant query (e.g. ALERTS, failing criteria): only the
    listed labels are kept, renamed {label: Vietnamese header}, in that order."""
    panel = (
        base_table(title, description)
        .with_target(target(expr, table_format=True))
        .with_transformation(transform("filterFieldsByName",
                                        {"include": {"names": list(columns)}}))
        .with_transformation(transform("organize", {
            "excludeByName": {}, "indexByName": {k: i for i, k in enumerate(columns)},
            "renameByName": dict(columns)}))
    )
    for label, maps in (mappings or {}).items():
        props = [dash_m.DynamicConfigValue(id_val="mappings", value=maps)]
        if label in coloured:
            props.append(dash_m.DynamicConfigValue(
                id_val="custom.cellOptions", value={"type": "color-text"}))
        panel = panel.override_by_name(columns[label], props)
    if sort_by is not None:
        panel = panel.sort_by([common_b.TableSortByFieldState().display_name(sort_by)])
    return panel


def base_table(title: str, description: str = "") -> table.Panel:
    """A table panel with the house defaults (header, no footer, small cells)."""
    panel = table.Panel().title(title).datasource(DS).show_header(True).cell_height(
        common_m.TableCellHeight.SM).footer(common_b.TableFooterOptions().show(False))
    if description:
        panel = panel.description(description)
    return panel


def stat_panel(
    title: str, targets: Sequence[prom_b.Dataquery], *, unit: str | None = None,
    thresholds: dash_b.ThresholdsConfig | None = None,
    mappings: list[dash_m.ValueMapping] | None = None, description: str = "",
    text_mode: common_m.BigValueTextMode = common_m.BigValueTextMode.AUTO,
    color_mode: common_m.BigValueColorMode = common_m.BigValueColorMode.VALUE,
    decimals: int | None = None, no_value: str | None = None,
) -> stat.Panel:
    """A stat of the latest value of each series (instant queries)."""
    panel = (
        stat.Panel().title(title).datasource(DS)
        .targets([*targets])
        .reduce_options(common_b.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .graph_mode(common_m.BigValueGraphMode.NONE)
        .color_mode(color_mode)
        .text_mode(text_mode)
        .justify_mode(common_m.BigValueJustifyMode.AUTO)
        .orientation(common_m.VizOrientation.AUTO)
        .thresholds(thresholds or steps(GREEN))
    )
    if unit is not None:
        panel = panel.unit(unit)
    if mappings is not None:
        panel = panel.mappings(mappings)
    if description:
        panel = panel.description(description)
    if decimals is not None:
        panel = panel.decimals(decimals)
    if no_value is not None:
        panel = panel.no_value(no_value)
    return panel


def bar_panel(
    title: str, targets: Sequence[prom_b.Dataquery], *, unit: str,
    thresholds: dash_b.ThresholdsConfig, description: str = "", max_value: float | None = None,
) -> bargauge.Panel:
    """Horizontal bars of the latest values against thresholds (e.g. measured / required)."""
    panel = (
        bargauge.Panel().title(title).datasource(DS).targets([*targets])
        .reduce_options(common_b.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .orientation(common_m.VizOrientation.HORIZONTAL)
        .display_mode(common_m.BarGaugeDisplayMode.GRADIENT)
        .unit(unit).min(0).thresholds(thresholds)
    )
    if max_value is not None:
        panel = panel.max(max_value)
    if description:
        panel = panel.description(description)
    return panel


def ts_panel(
    title: str, targets: Sequence[prom_b.Dataquery], *, unit: str,
    thresholds: dash_b.ThresholdsConfig | None = None, description: str = "",
    min_value: float | None = None, max_value: float | None = None,
) -> timeseries.Panel:
    """A time series; a readiness limit, when given, is drawn as a dashed line."""
    panel = (
        timeseries.Panel().title(title).datasource(DS).targets([*targets]).unit(unit)
        .line_width(1).fill_opacity(10).show_points(common_m.VisibilityMode.NEVER)
        .span_nulls(False)
        .legend(common_b.VizLegendOptions().show_legend(True)
                .display_mode(common_m.LegendDisplayMode.TABLE)
                .placement(common_m.LegendPlacement.BOTTOM).calcs(["lastNotNull", "max"]))
        .tooltip(common_b.VizTooltipOptions().mode(common_m.TooltipDisplayMode.MULTI)
                 .sort(common_m.SortOrder.DESCENDING))
    )
    if thresholds is not None:
        panel = panel.thresholds(thresholds).thresholds_style(
            common_b.GraphThresholdsStyleConfig().mode(common_m.GraphTresholdsStyleMode.DASHED))
    if min_value is not None:
        panel = panel.min(min_value)
    if max_value is not None:
        panel = panel.max(max_value)
    if description:
        panel = panel.description(description)
    return panel


# --- dashboards ----------------------------------------------------------------------------


def datasource_variable() -> dash_b.DatasourceVariable:
    """`$datasource`: any Prometheus, the provisioned one selected by default."""
    return (
        dash_b.DatasourceVariable("datasource").label("Nguồn dữ liệu").type("prometheus")
        .current(dash_m.VariableOption(selected=True, text=DATASOURCE_NAME, value=DATASOURCE_UID))
    )


def query_variable(name: str, label: str, query: str, *, multi: bool) -> dash_b.QueryVariable:
    """A variable from `label_values(...)`; multi ones include "Tất cả" as `.*`."""
    var = (
        dash_b.QueryVariable(name).label(label).datasource(DS).query(query)
        .refresh(dash_m.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dash_m.VariableSort.ALPHABETICAL_ASC)
    )
    if multi:
        var = var.multi(True).include_all(True).all_value(".*")
    return var


def province_variable() -> dash_b.QueryVariable:
    """`$province`: the push CLI presets it per province folder."""
    return query_variable("province", "Tỉnh", "label_values(bridge_site_info, province)",
                          multi=True)


def site_variable() -> dash_b.QueryVariable:
    """`$site`: one bridge of the selected provinces."""
    return query_variable("site", "Điểm cầu",
                          'label_values(bridge_site_info{province=~"$province"}, site)',
                          multi=False)


def session_variable() -> dash_b.QueryVariable:
    """`$session`: the sessions the collector still exposes (not over yet)."""
    return query_variable("session", "Phiên tiếp công dân",
                          "label_values(bridge_session_info, session)", multi=True)


@dataclass
class Board:
    """A dashboard under construction: numbers panels and rows in order (stable ids)."""

    uid: str
    title: str
    description: str
    variables: Sequence[Builder[dash_m.VariableModel]]
    alerts: str  # the ALERTS selector shown as annotations on the time series
    _next_id: int = field(default=1, init=False)
    _line: int = field(default=0, init=False)  # columns used on the current grid line
    _builder: dash_b.Dashboard = field(init=False)

    def __post_init__(self) -> None:
        self._builder = (
            dash_b.Dashboard(self.title).uid(self.uid).description(self.description)
            .tags([TAG]).timezone(TIMEZONE).time("now-6h", "now").refresh("30s")
            .tooltip(dash_m.DashboardCursorSync.CROSSHAIR).editable()
            .variables(list(self.variables))
            .annotation(dash_b.AnnotationQuery().name("Cảnh báo đang báo").datasource(DS)
                        .enable(True).icon_color("red").expr(self.alerts))
            .link(dash_b.DashboardLink("Các bảng BridgeWatch")
                  .type(dash_m.DashboardLinkType.DASHBOARDS).tags([TAG]).as_dropdown(True)
                  .include_vars(True).keep_time(True))
        )

    def _take_id(self) -> int:
        """Panel ids in build order: regenerating gives the same ids (stable links)."""
        n = self._next_id
        self._next_id += 1
        return n

    def row(self, title: str) -> Board:
        """Start a section (an open row; the panels after it belong to it)."""
        if self._line:
            raise ValueError(f"{self.uid}: line before row {title!r} is {self._line}/24 wide")
        self._builder = self._builder.with_row(dash_b.Row(title).id(self._take_id()))
        return self

    def add(self, panel: Builder[dash_m.Panel], w: int, h: int) -> Board:
        """Place a panel `w` columns wide and `h` units high; lines must fill 24 columns
        exactly (the builder wraps only after a full line), so the grid stays tidy."""
        if self._line + w > 24:
            raise ValueError(f"{self.uid}: panel overflows its line ({self._line} + {w} > 24)")
        self._line = (self._line + w) % 24
        # The builders' panel classes all offer id/span/height.
        placed = panel.id(self._take_id()).span(w).height(h)  # type: ignore[attr-defined]
        self._builder = self._builder.with_panel(placed)
        return self

    def build(self) -> dash_m.Dashboard:
        """The finished dashboard model (every line full)."""
        if self._line:
            raise ValueError(f"{self.uid}: last line is {self._line}/24 wide")
        return self._builder.build()
