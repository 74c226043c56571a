"""cron/grafana-dashboard.json: a Grafana 10+ dashboard over metrics and labels that reconcile really writes.

Like tests/unit/test_alert_rules.py: every series selector in every query (and the host variable's) names
a metric that reconcile.metrics renders, with labels it writes, so a renamed metric cannot leave a panel
that silently shows nothing. Grouping and legend labels are checked too; the only labels used that
reconcile does not write are Prometheus's own target labels, in the `on(instance, job)` join that gives
every series reconcile_info's host.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from reconcile import config as config_mod
from reconcile import metrics, run
from reconcile.core.applied import Applied
from reconcile.core.changes import Plan
from reconcile.core.model import Fail2banState
from reconcile.core.render import Stats
from reconcile.enrich.asn import Enrichment
from tests.support.cf_emulator import ZONE_ID
from tests.unit.test_alert_rules import selectors

DASHBOARD = Path(__file__).resolve().parents[2] / "cron" / "grafana-dashboard.json"
TARGET_LABELS = {"instance", "job"}  # added by Prometheus to every scraped series: only joined on
JOINED = "host"  # reconcile_info's label, given to every series by the join


def load() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def written(tmp_path: Path) -> dict[str, set[str]]:
    """Metric name -> label names, as render() writes them for a run with every family present."""
    config = config_mod.from_mapping(
        {"cloudflare": {"zone_ids": [ZONE_ID]}, "policy": {"host_id": "web1"}}, tmp_path / "c.toml"
    )
    moment = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
    outcome = run.Outcome(
        moment,
        state=Fail2banState(("sshd",), ()),
        plan=Plan(()),
        applied=Applied(()),
        stats=Stats(3, 1.5),
        enrichment=Enrichment({}, hits=1, looked_up=1, answered=1, result="ok", warning=None, seconds=0.1),
    )
    found: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(metrics.render(outcome, config, moment)):
        labels = found.setdefault(family.name, set())
        for sample in family.samples:
            labels.update(sample.labels)
    return found


def targets() -> list[tuple[str, str, str]]:
    """(panel title, expr, legend) of every query."""
    return [
        (panel["title"], target["expr"], target.get("legendFormat", ""))
        for panel in load()["panels"]
        for target in panel["targets"]
    ]


def clauses(expr: str, word: str) -> list[set[str]]:
    return [
        {label.strip() for label in found.split(",") if label.strip()}
        for found in re.findall(rf"\b{word}\s*\(([^)]*)\)", expr)
    ]


def test_every_query_uses_metrics_and_labels_that_reconcile_writes(tmp_path: Path) -> None:
    writes = written(tmp_path)
    assert "reconcile_asn_lookups_total" in writes  # the sample run rendered the optional families too
    checked = 0
    for title, expr, legend in targets():
        used = selectors(expr)
        assert used, f"{title}: no metric in {expr!r}"
        available = {JOINED}
        for name, labels in used:
            assert name in writes, f"{title}: {name} is not a metric reconcile writes"
            assert labels <= writes[name], f"{title}: {name} has no label {labels - writes[name]}"
            available |= writes[name]
            checked += 1
        for grouping in clauses(expr, "by"):
            assert grouping <= available, f"{title}: grouped by {grouping - available}"
        for joined in clauses(expr, "on"):
            assert joined == TARGET_LABELS, f"{title}: joined on {joined}"
        for grouping in clauses(expr, "group_left"):
            assert grouping == {JOINED}, f"{title}: group_left{grouping}"
        shown = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend))
        assert shown <= available, f"{title}: the legend shows {shown - available}"
    assert checked >= 12


def test_the_host_variable_reads_a_written_label(tmp_path: Path) -> None:
    writes = written(tmp_path)
    (host,) = [v for v in load()["templating"]["list"] if v["name"] == "host"]
    match = re.fullmatch(r"label_values\((\w+), (\w+)\)", host["definition"])
    assert match and host["query"]["query"] == host["definition"]
    metric, label = match.groups()
    assert metric in writes and label in writes[metric] and label == JOINED


def test_it_loads_in_grafana_10_with_the_datasource_as_a_variable() -> None:
    dashboard = load()
    assert dashboard["schemaVersion"] >= 38  # Grafana 10.0's
    assert re.fullmatch(r"[a-z0-9-]{1,40}", dashboard["uid"]) and dashboard["title"]
    (source,) = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert source["query"] == "prometheus"
    variable = {"type": "prometheus", "uid": f"${{{source['name']}}}"}
    # No data source of the exporting Grafana is left: every panel, query and variable names the variable.
    for panel in dashboard["panels"]:
        assert panel["datasource"] == variable, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == variable, panel["title"]
            assert target["refId"] and target["expr"]
    for templated in dashboard["templating"]["list"]:
        if templated["type"] == "query":
            assert templated["datasource"] == variable
    assert "__inputs" not in dashboard and "id" not in dashboard


def test_the_panels_fit_the_grid_without_overlapping() -> None:
    panels = load()["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    taken: set[tuple[int, int]] = set()
    for panel in panels:
        box = panel["gridPos"]
        assert box["x"] >= 0 and box["w"] > 0 and box["x"] + box["w"] <= 24, panel["title"]
        xs, ys = range(box["x"], box["x"] + box["w"]), range(box["y"], box["y"] + box["h"])
        cells = {(x, y) for x in xs for y in ys}
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells
        assert panel["type"] in {"stat", "timeseries"} and panel["description"]


def test_it_shows_what_the_issue_asks_for() -> None:
    """Bans per jail, rules at the edge by owner, writes per run, requests, 429s, the last successful run,
    over-capacity, ASN lookups: each a panel whose queries read that metric."""
    by_metric: dict[str, set[str]] = {}
    for title, expr, _ in targets():
        for name, _labels in selectors(expr):
            by_metric.setdefault(name, set()).add(title)
    wanted = {
        "reconcile_bans": "jail",
        "reconcile_rules": "owner",
        "reconcile_changes_applied": "result",
        "reconcile_api_requests": None,
        "reconcile_api_rate_limited": None,
        "reconcile_last_run_success": None,
        "reconcile_over_capacity": None,
        "reconcile_asn_lookups_total": "result",
    }
    for metric, label in wanted.items():
        assert metric in by_metric, f"no panel reads {metric}"
        if label is not None:
            grouped = [g for _, expr, _ in targets() if metric in expr for g in clauses(expr, "by")]
            assert any(label in g for g in grouped), f"no panel shows {metric} by {label}"
    last = [expr for title, expr, _ in targets() if title == "Since the last successful run"]
    assert last and "reconcile_last_run_success == 1" in last[0]
