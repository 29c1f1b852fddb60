"""The Grafana dashboard (deploy/grafana/voxline.json) asks only for metrics `/metrics` has."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tests.server.conftest import EnvFactory
from tests.telemetry.conftest import scrape

DASHBOARD = Path(__file__).parents[2] / "deploy" / "grafana" / "voxline.json"


def expressions(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["expr"]] if isinstance(node.get("expr"), str) else []
        return found + [e for value in node.values() for e in expressions(value)]
    if isinstance(node, list):
        return [e for value in node for e in expressions(value)]
    return []


async def test_every_panel_queries_an_exported_metric(make_env: EnvFactory) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    queried = {
        re.sub(r"_(bucket|count|sum)$", "", name)
        for expr in expressions(dashboard)
        for name in re.findall(r"\bvoxline_[a-z_]+", expr)
    }
    assert len(queried) > 20
    async with make_env() as env:
        text = await scrape(env.twilio.base)
    exported = set(re.findall(r"^# TYPE (voxline_\w+) ", text, flags=re.MULTILINE))
    assert queried <= exported, sorted(queried - exported)
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
