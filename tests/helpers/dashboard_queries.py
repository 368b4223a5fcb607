"""Read the PromQL out of the Grafana dashboards in k8s/dashboards/, ready for Prometheus.

`panel_queries(path)` lists (panel title, expr) for every query target; `prometheus_expr(expr)`
replaces Grafana's built-in interval variables so the expression runs against a plain
Prometheus; `metric_names(expr)` lists the series names an expression selects.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

DASHBOARD_DIR = Path(__file__).resolve().parents[2] / "k8s" / "dashboards"
DATASOURCE_UID = "${datasource}"

# Grafana computes these per panel; fixed values are what a test against a 1s-scrape
# Prometheus needs (a rate window must hold at least two scrapes).
GRAFANA_DEFAULTS = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__range": "5m",
}

_PROMQL_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
    "and", "or", "unless", "offset", "inf", "nan",
}


def dashboard_paths() -> list[Path]:
    return sorted(DASHBOARD_DIR.glob("*.json"))


def panels(path: Path) -> list[dict]:
    """Every panel, including those nested in collapsed rows."""
    found: list[dict] = []
    for panel in json.loads(path.read_text())["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def panel_queries(path: Path) -> list[tuple[str, str]]:
    return [
        (panel["title"], target["expr"])
        for panel in panels(path)
        for target in panel.get("targets", [])
        if "expr" in target
    ]


def prometheus_expr(expr: str, **overrides: str) -> str:
    """Substitute Grafana's `$__rate_interval`-style variables; fail on any other variable."""
    values = {**GRAFANA_DEFAULTS, **overrides}

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in values:
            raise KeyError(f"unsupported Grafana variable ${name} in {expr!r}")
        return values[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", replace, expr)


def metric_names(expr: str) -> set[str]:
    """Series names selected by `expr`: identifiers that are not functions, keywords, label
    names in matchers or grouping clauses, durations, or string contents."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', prometheus_expr(expr))
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range and subquery durations
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][\w:]*)(\s*\()?", text):
        name, is_call = match.group(1), match.group(2)
        if not is_call and name.lower() not in _PROMQL_KEYWORDS:
            names.add(name)
    return names
