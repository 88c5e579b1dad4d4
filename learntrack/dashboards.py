"""LearnTrack's dashboards as code: one list of panels, drawn by Grafana and the API.

Runs in two places:

- at development time, ``python -m learntrack.dashboards`` renders :data:`PANELS`
  into the Grafana dashboard JSON that compose provisions
  (``grafana/dashboards/learntrack.json``, committed; a test regenerates it and
  fails on any difference). The rendering uses Grafana's own dashboards-as-code
  library, ``grafana-foundation-sdk`` (builders for Grafana 11.6, a development
  dependency, imported only here);
- in the API process, :func:`page_spec` hands the same panels to the
  ``/dashboard`` page (``learntrack/api/routers/dashboard.py``), which draws them with
  Plotly for machines without Grafana.

Each panel names the query-service endpoint its data comes from (``url``, with
``{course}``, ``{student}``, ``{from}``, ``{to}``, ``{from_date}``, ``{to_date}``
placeholders), where the rows are in the answer (``rows``) and which fields it
shows. Grafana reads that endpoint through the Infinity data source, except for
fields marked ``live`` (the stream's per-batch metrics, pushed to Grafana Live by
:mod:`learntrack.sinks.pipeline`) and ``prometheus`` (the pipeline totals,
scraped by Prometheus from the API's ``/metrics``). The page always reads the
endpoint, which serves the same numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from learntrack.sinks.pipeline import LIVE_CHANNEL

Kind = Literal["timeseries", "bars", "table", "stat"]
FieldType = Literal["string", "number", "time"]

#: Data sources provisioned by ``grafana/provisioning/datasources/learntrack.yaml``.
API_DATASOURCE = {"type": "yesoreyeram-infinity-datasource", "uid": "learntrack-api"}
PROMETHEUS_DATASOURCE = {"type": "prometheus", "uid": "learntrack-prometheus"}
#: Grafana's built-in data source (Grafana Live measurements).
GRAFANA_DATASOURCE = {"type": "datasource", "uid": "grafana"}

DASHBOARD_UID = "learntrack"
DASHBOARD_TITLE = "LearnTrack"
OUTPUT = Path(__file__).resolve().parents[1] / "grafana/dashboards/learntrack.json"

#: Placeholders of panel URLs, as Grafana writes them (UTC: the dashboard's zone).
GRAFANA_PLACEHOLDERS = {
    "{course}": "${course}",
    "{student}": "${student}",
    "{from}": "${__from:date:iso}",
    "{to}": "${__to:date:iso}",
    "{from_date}": "${__from:date:YYYY-MM-DD}",
    "{to_date}": "${__to:date:YYYY-MM-DD}",
}
_INFINITY_TYPES = {"string": "string", "number": "number", "time": "timestamp"}


@dataclass(frozen=True)
class Field:
    """One value a panel shows: a dotted path inside a row of the answer.

    ``live`` names the same value in the Grafana Live channel, ``prometheus`` the
    PromQL giving it in Grafana (either replaces the Infinity query there).
    """

    path: str
    title: str
    type: FieldType = "string"
    live: str | None = None
    prometheus: str | None = None


@dataclass(frozen=True)
class Panel:
    """One panel: what it asks the API, and how it is drawn.

    Charts plot ``y`` against ``x`` (bars: ``horizontal`` puts the labels on the
    vertical axis), one line per value of ``series`` if given; the other fields are
    shown on hover. Tables show every field, stats every number field.
    """

    key: str
    title: str
    section: str
    kind: Kind
    url: str
    rows: str
    fields: tuple[Field, ...]
    description: str
    x: str | None = None
    y: str | None = None
    series: str | None = None
    horizontal: bool = False
    unit: str | None = None
    width: int = 12
    height: int = 8

    @property
    def source(self) -> Literal["api", "live", "prometheus"]:
        """Where Grafana reads this panel from."""
        if any(f.live for f in self.fields):
            return "live"
        if any(f.prometheus for f in self.fields):
            return "prometheus"
        return "api"


@dataclass(frozen=True)
class Variable:
    """A dashboard variable whose choices come from an API endpoint."""

    name: str
    label: str
    url: str
    rows: str
    field: str


VARIABLES = (
    Variable("course", "Course", "/courses", "courses", "courseId"),
    Variable("student", "Student", "/leaderboard?limit=100", "entries", "studentId"),
)

_AT = Field("at", "Batch finished", "time")
_LEADERS = (
    Field("studentId", "Student"),
    Field("score", "Score", "number"),
    Field("name", "Name"),
)

PANELS: tuple[Panel, ...] = (
    Panel(
        key="events-per-second",
        title="Events per second",
        section="Pipeline (live)",
        kind="timeseries",
        url="/pipeline/metrics?points=120",
        rows="points",
        fields=(_AT, Field("eventsPerSecond", "Events/s", "number", "events_per_s")),
        x="at",
        y="eventsPerSecond",
        unit="short",
        width=9,
        description="Records per second through each micro-batch of the stream.",
    ),
    Panel(
        key="consumer-lag",
        title="Consumer lag",
        section="Pipeline (live)",
        kind="timeseries",
        url="/pipeline/metrics?points=120",
        rows="points",
        fields=(_AT, Field("lag", "Records behind", "number", "lag")),
        x="at",
        y="lag",
        unit="short",
        width=9,
        description="Records left in Kafka after each micro-batch.",
    ),
    Panel(
        key="freshness",
        title="Freshness: produced -> stored (p99)",
        section="Pipeline (live)",
        kind="timeseries",
        url="/pipeline/metrics?points=120",
        rows="points",
        fields=(
            _AT,
            Field("freshnessP99", "Seconds (p99)", "number", "freshness_p99_s"),
        ),
        x="at",
        y="freshnessP99",
        unit="s",
        width=9,
        description="Seconds from an event reaching Kafka to its being written in "
        "every store, p99 over each micro-batch's new events.",
    ),
    Panel(
        key="pipeline-totals",
        title="Pipeline totals",
        section="Pipeline (live)",
        kind="stat",
        url="/pipeline/metrics?points=1",
        rows="totals",
        fields=(
            Field(
                "events",
                "Events",
                "number",
                prometheus="learntrack_stream_events_total",
            ),
            Field(
                "deadLetters",
                "Dead letters",
                "number",
                prometheus="learntrack_stream_dead_letters_total",
            ),
            Field("alerts", "Alerts", "number", prometheus="learntrack_alerts"),
            Field(
                "studentsScored",
                "Students",
                "number",
                prometheus="learntrack_students_scored",
            ),
        ),  # fmt: skip
        width=6,
        description="Since the stream started (Prometheus, scraped from /metrics).",
    ),
    Panel(
        key="top-global",
        title="Top engaged students",
        section="Engagement",
        kind="bars",
        url="/leaderboard?limit=10",
        rows="entries",
        fields=_LEADERS,
        x="studentId",
        y="score",
        horizontal=True,
        width=8,
        description="Highest engagement scores now (decayed), all courses.",
    ),
    Panel(
        key="top-course",
        title="Top engaged students in {course}",
        section="Engagement",
        kind="bars",
        url="/leaderboard?course={course}&limit=10",
        rows="entries",
        fields=_LEADERS,
        x="studentId",
        y="score",
        horizontal=True,
        width=8,
        description="Highest engagement scores in the chosen course.",
    ),
    Panel(
        key="score-distribution",
        title="Engagement score distribution",
        section="Engagement",
        kind="bars",
        url="/engagement/distribution?bins=10",
        rows="bins",
        fields=(Field("label", "Score"), Field("students", "Students", "number")),
        x="label",
        y="students",
        width=8,
        description="Students per score range (10 equal bins up to the top score).",
    ),
    Panel(
        key="latest-alerts",
        title="Latest multi-region alerts",
        section="Alerts",
        kind="table",
        url="/alerts?limit=20",
        rows="alerts",
        fields=(
            Field("timestamp", "Time", "time"),
            Field("studentId", "Student"),
            Field("kind", "Kind"),
            Field("regions", "Regions"),
            Field("gapSeconds", "Gap (s)", "number"),
        ),
        width=14,
        height=10,
        description="Two regions within the detection window, newest first.",
    ),
    Panel(
        key="alerts-per-hour",
        title="Alerts per hour",
        section="Alerts",
        kind="bars",
        url="/alerts/hourly?from={from}&to={to}",
        rows="hours",
        fields=(Field("hour", "Hour", "time"), Field("alerts", "Alerts", "number")),
        x="hour",
        y="alerts",
        width=10,
        height=10,
        description="Alerts by the hour of their events (UTC), over the time range.",
    ),
    Panel(
        key="course-daily",
        title="Daily course engagement",
        section="Courses",
        kind="timeseries",
        url="/courses/engagement?from={from_date}&to={to_date}",
        rows="days",
        fields=(
            Field("date", "Day", "time"),
            Field("courseId", "Course"),
            Field("count", "Events", "number"),
        ),
        x="date",
        y="count",
        series="courseId",
        unit="short",
        width=24,
        height=9,
        description="Events per course and day (the nightly batch, from Cassandra).",
    ),
    Panel(
        key="student-profile",
        title="Profile of {student}",
        section="Student",
        kind="table",
        url="/students/{student}",
        rows="",
        fields=(
            Field("studentId", "Student"),
            Field("name", "Name"),
            Field("email", "Email"),
            Field("speciality", "Speciality"),
            Field("studentLevel", "Level"),
            Field("progress", "Progress (%)", "number"),
            Field("activity.total", "Events", "number"),
            Field("activity.lastAt", "Last active", "time"),
            Field("activity.lastRegion", "Last region"),
        ),
        width=8,
        height=10,
        description="The chosen student's profile and activity summary.",
    ),
    Panel(
        key="student-score",
        title="Engagement of {student}",
        section="Student",
        kind="stat",
        url="/students/{student}/engagement",
        rows="",
        fields=(
            Field("score", "Score", "number"),
            Field("rank", "Rank", "number"),
            Field("recent.lastHour", "Last hour", "number"),
            Field("recent.lastDay", "Last 24 h", "number"),
            Field("totalEvents", "Events", "number"),
            Field("alerts", "Alerts", "number"),
        ),
        width=4,
        height=10,
        description="Score now, global rank, recent events and alerts.",
    ),
    Panel(
        key="student-activities",
        title="Latest 20 activities of {student}",
        section="Student",
        kind="table",
        url="/students/{student}/activities?limit=20",
        rows="activities",
        fields=(
            Field("timestamp", "Time", "time"),
            Field("courseId", "Course"),
            Field("action", "Action"),
            Field("region", "Region"),
            Field("device", "Device"),
            Field("score", "Quiz score", "number"),
        ),
        width=12,
        height=10,
        description="Newest first, by event time.",
    ),
)


def page_spec() -> dict[str, Any]:
    """The panels and variables as JSON for the ``/dashboard`` page."""
    sections = list(dict.fromkeys(p.section for p in PANELS))
    return {
        "title": DASHBOARD_TITLE,
        "sections": sections,
        "variables": [asdict(v) for v in VARIABLES],
        "panels": [{**asdict(p), "source": p.source} for p in PANELS],
    }


# -- Grafana -------------------------------------------------------------------------
def grafana_url(url: str) -> str:
    """A panel URL with Grafana's variables in place of the placeholders."""
    for placeholder, grafana in GRAFANA_PLACEHOLDERS.items():
        url = url.replace(placeholder, grafana)
    return url


def grafana_title(title: str) -> str:
    """A panel title with ``$variable`` in place of ``{variable}``."""
    return title.replace("{course}", "$course").replace("{student}", "$student")


def infinity_query(url: str, rows: str, fields: tuple[Field, ...]) -> dict[str, Any]:
    """An Infinity target reading ``url`` of the query service as a table."""
    return {
        "refId": "A",
        "datasource": API_DATASOURCE,
        "type": "json",
        "source": "url",
        "parser": "backend",
        "format": "table",
        "url": grafana_url(url),
        "url_options": {"method": "GET", "data": ""},
        "root_selector": rows,
        "columns": [
            {"selector": f.path, "text": f.title, "type": _INFINITY_TYPES[f.type]}
            for f in fields
        ],
    }


def panel_targets(panel: Panel) -> list[dict[str, Any]]:
    """The Grafana queries of ``panel`` (one per Prometheus field, else one)."""
    if panel.source == "live":
        live = [f.live for f in panel.fields if f.live]
        return [
            {
                "refId": "A",
                "datasource": GRAFANA_DATASOURCE,
                "queryType": "measurements",
                "channel": LIVE_CHANNEL,
                "filter": {"fields": ["time", *live]},
            }
        ]
    if panel.source == "prometheus":
        return [
            {
                "refId": chr(ord("A") + i),
                "datasource": PROMETHEUS_DATASOURCE,
                "expr": f.prometheus,
                "legendFormat": f.title,
                "instant": True,
            }
            for i, f in enumerate(x for x in panel.fields if x.prometheus)
        ]
    return [infinity_query(panel.url, panel.rows, panel.fields)]


def panel_datasource(panel: Panel) -> dict[str, str]:
    """The data source a panel's queries use."""
    return {
        "live": GRAFANA_DATASOURCE,
        "prometheus": PROMETHEUS_DATASOURCE,
        "api": API_DATASOURCE,
    }[panel.source]


def grafana_dashboard() -> dict[str, Any]:
    """The Grafana dashboard of :data:`PANELS`, as the JSON compose provisions."""
    from grafana_foundation_sdk.builders import dashboard as gd
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models.dashboard import (
        DashboardCursorSync,
        DataSourceRef,
        GridPos,
        VariableRefresh,
    )

    board = (
        gd.Dashboard(DASHBOARD_TITLE)
        .uid(DASHBOARD_UID)
        .description(
            "Generated by learntrack/dashboards.py (python -m learntrack.dashboards); "
            "do not edit by hand. The same panels: /dashboard of the query service."
        )
        .tags(["learntrack"])
        .timezone("utc")
        .time("now-7d", "now")
        .refresh("10s")
        .readonly()
        .tooltip(DashboardCursorSync.CROSSHAIR)
    )
    api = DataSourceRef(type_val=API_DATASOURCE["type"], uid=API_DATASOURCE["uid"])
    for variable in VARIABLES:
        board = board.with_variable(
            gd.QueryVariable(variable.name)
            .label(variable.label)
            .datasource(api)
            .query(variable_query(variable))
            .refresh(VariableRefresh.ON_DASHBOARD_LOAD)
        )
    y = 0
    panel_id = 1
    for section in dict.fromkeys(p.section for p in PANELS):
        board = board.with_row(
            gd.Row(_SECTION_TITLES.get(section, section))
            .id(panel_id)
            .grid_pos(GridPos(h=1, w=24, x=0, y=y))
        )
        panel_id += 1
        y += 1
        x = row_height = 0
        for panel in (p for p in PANELS if p.section == section):
            if x + panel.width > GRID_WIDTH:
                y, x, row_height = y + row_height, 0, 0
            pos = GridPos(h=panel.height, w=panel.width, x=x, y=y)
            board = board.with_panel(_grafana_panel(panel, panel_id, pos))
            panel_id += 1
            x += panel.width
            row_height = max(row_height, panel.height)
        y += row_height
    encoded: dict[str, Any] = json.loads(json.dumps(board.build(), cls=JSONEncoder))
    return encoded


GRID_WIDTH = 24
_SECTION_TITLES = {"Student": "Student $student"}


def variable_query(variable: Variable) -> dict[str, Any]:
    """The Infinity variable query listing a variable's choices."""
    query = infinity_query(
        variable.url, variable.rows, (Field(variable.field, variable.label),)
    )
    query["refId"] = "variable"
    return {"queryType": "infinity", "infinityQuery": query, "query": ""}


def _grafana_panel(panel: Panel, panel_id: int, pos: Any) -> Any:
    """One Grafana panel built with the foundation SDK's builders."""
    from grafana_foundation_sdk.builders import barchart, stat, table, timeseries
    from grafana_foundation_sdk.models.common import (
        GraphDrawStyle,
        TableCellHeight,
        VizOrientation,
    )
    from grafana_foundation_sdk.models.dashboard import DataSourceRef

    x = _field(panel, panel.x) if panel.x else None
    builder: Any
    if panel.kind == "timeseries" or (x is not None and x.type == "time"):
        style = (
            GraphDrawStyle.LINE if panel.kind == "timeseries" else GraphDrawStyle.BARS
        )
        builder = timeseries.Panel().draw_style(style).fill_opacity(20)
    elif panel.kind == "bars" and x is not None:
        builder = barchart.Panel().x_field(x.title)
        if panel.horizontal:
            builder = builder.orientation(VizOrientation.HORIZONTAL)
    elif panel.kind == "stat":
        builder = stat.Panel()
    else:
        builder = table.Panel().cell_height(TableCellHeight.SM)
    source = panel_datasource(panel)
    builder = (
        builder.id(panel_id)
        .title(grafana_title(panel.title))
        .description(panel.description)
        .datasource(DataSourceRef(type_val=source["type"], uid=source["uid"]))
        .grid_pos(pos)
    )
    if panel.unit:
        builder = builder.unit(panel.unit)
    for target in panel_targets(panel):
        builder = builder.with_target(_target(target))
    if panel.series and panel.source == "api":
        builder = builder.with_transformation(_long_to_multi())
    return builder


def _field(panel: Panel, path: str) -> Field:
    return next(f for f in panel.fields if f.path == path)


def _long_to_multi() -> Any:
    """Grafana's "prepare time series" transformation: one series per course."""
    from grafana_foundation_sdk.models.dashboard import DataTransformerConfig

    return DataTransformerConfig(
        id_val="prepareTimeSeries", options={"format": "multi"}
    )


def _target(body: dict[str, Any]) -> Any:
    """A builder of a query the SDK has no builder for (Infinity, Grafana Live)."""
    from grafana_foundation_sdk.cog import builder as cogbuilder
    from grafana_foundation_sdk.cog import variants as cogvariants

    class Query(cogvariants.Dataquery):
        def to_json(self) -> dict[str, Any]:
            return body

    class Built(cogbuilder.Builder[cogvariants.Dataquery]):
        def build(self) -> cogvariants.Dataquery:
            return Query()

    return Built()


def render() -> str:
    """The dashboard JSON exactly as committed (sorted keys, 2-space indent)."""
    return json.dumps(grafana_dashboard(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write (or with ``--check``, compare) ``grafana/dashboards/learntrack.json``."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--out", type=Path, default=OUTPUT)
    parser.add_argument("--check", action="store_true", help="fail if out of date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.exists() else ""
        if current != text:
            sys.stderr.write(f"{args.out} is out of date: run python -m {__name__}\n")
            return 1
        return 0
    args.out.write_text(text, encoding="utf-8")
    sys.stdout.write(f"wrote {args.out} ({len(PANELS)} panels)\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
