"""cron/reconcile.rules.yml: valid Prometheus alerting rules over metrics that reconcile really writes.

Where promtool is installed (Debian's `prometheus` package; not installed by `make test`, it is ~19 MB to
download, ~96 MB installed), it checks the file as Prometheus would. Everywhere, the YAML is read and every
metric and label name in every expression is checked against the text that reconcile.metrics renders for
a sample run, so that a renamed metric cannot leave an alert that silently never fires.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from reconcile import config as config_mod
from reconcile import metrics, run
from reconcile.core.applied import Applied
from reconcile.core.changes import Plan
from reconcile.core.model import Fail2banState
from tests.support.cf_emulator import ZONE_ID

RULES = Path(__file__).resolve().parents[2] / "cron" / "reconcile.rules.yml"

# PromQL words that look like names but are not metrics.
KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool"}
KEYWORDS |= {"offset", "inf", "nan", "Inf", "NaN"}
NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"


def written_metrics(tmp_path: Path) -> dict[str, set[str]]:
    """Metric name -> its label names, from what metrics.render() writes for a run with every side read."""
    config = config_mod.from_mapping(
        {"cloudflare": {"zone_ids": [ZONE_ID]}, "policy": {"host_id": "web1"}}, tmp_path / "c.toml"
    )
    outcome = run.Outcome(
        datetime(2026, 11, 21, 10, 0, tzinfo=UTC),
        state=Fail2banState(("sshd",), ()),
        plan=Plan(()),
        applied=Applied(()),
    )
    text = metrics.render(outcome, config, datetime(2026, 11, 21, 10, 0, tzinfo=UTC))
    found: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        labels = found.setdefault(family.name, set())
        for sample in family.samples:
            labels.update(sample.labels)
    return found


def selectors(expr: str) -> list[tuple[str, set[str]]]:
    """(metric name, label names in its matcher) for every series selector of a PromQL expression."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings first: they may hold anything
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range and subquery durations
    found = []
    for match in re.finditer(rf"({NAME})\s*(\{{[^}}]*\}})?\s*(\()?", text):
        name, matcher, call = match.groups()
        if call or name in KEYWORDS:
            continue  # a function (time(), absent(), ...), or an operator word
        labels = set(re.findall(rf"({NAME})\s*(?:=~|!~|!=|=)", matcher or ""))
        found.append((name, labels))
    return found


def rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(RULES.read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def test_the_selector_parser_finds_names_and_labels_and_skips_the_rest():
    expr = 'sum by (action) (rate(reconcile_x{result="a b", action!~"x"}[5m])) > 0 and on(host) time() - y_z'
    assert selectors(expr) == [("reconcile_x", {"result", "action"}), ("y_z", set())]


def test_every_expression_uses_metrics_and_labels_that_reconcile_writes(tmp_path: Path):
    written = written_metrics(tmp_path)
    assert "reconcile_pending_changes" in written  # the sample run did render the families
    checked = 0
    for rule in rules():
        used = selectors(str(rule["expr"]))
        assert used, f"{rule['alert']}: no metric in {rule['expr']!r}"
        for name, labels in used:
            assert name in written, f"{rule['alert']}: {name} is not a metric reconcile writes"
            assert labels <= written[name], f"{rule['alert']}: {name} has no label {labels - written[name]}"
            checked += 1
    assert checked >= 5


def test_the_rules_are_well_formed_alerts():
    """Prometheus's own check where promtool is installed; the structure it would check, everywhere."""
    seen = set()
    for rule in rules():
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}, rule
        assert re.fullmatch(r"[A-Z][A-Za-z0-9]+", rule["alert"]) and rule["alert"] not in seen
        seen.add(rule["alert"])
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        if "for" in rule:
            assert re.fullmatch(r"\d+[smh]", rule["for"])
    promtool = shutil.which("promtool")
    if promtool is not None:
        result = subprocess.run(
            [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"SUCCESS: {len(seen)} rules found" in result.stdout + result.stderr


def test_the_readme_alerts_are_all_there():
    by_name = {rule["alert"]: rule for rule in rules()}
    exprs = " | ".join(str(rule["expr"]) for rule in by_name.values())
    assert "time() - reconcile_last_run_timestamp_seconds > 600" in exprs
    assert "reconcile_last_run_exit_code == 2" in exprs and "reconcile_last_run_exit_code == 3" in exprs
    assert by_name["ReconcilePendingChanges"]["for"] == "30m"
    assert by_name["ReconcileFailing"]["for"] == "10m"
    # Configuration errors and refused plans need a person at once: no `for`.
    assert "for" not in by_name["ReconcileConfigurationError"]
    assert "for" not in by_name["ReconcileUnsafePlanRefused"]
