"""The dashboard and alert policies of terraform/modules/fleet/monitoring.tf agree with what the runtime
exports (agex.obs.metrics): every ``workload.googleapis.com`` metric they read is an instrument of the
runtime, every label they filter or group by is an attribute of that instrument, latency histograms are
read as distributions (percentiles) and counters as sums; the dashboard template renders to a laid-out
dashboard; each alert policy notifies var.alert_channels, says what to do, and takes its threshold from a
validated variable; the drift alert watches the runtime's drift alerts topic."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from agex.core.metrics import DRIFT_ALERTS_TOPIC
from agex.obs import metrics
from scripts.tf_hcl import blocks
from tests.infra.conftest import ROOT

FLEET = Path("terraform/modules/fleet")
TEMPLATE = ROOT / FLEET / "dashboard.json.tftpl"
PREFIX = f"{metrics.METRIC_PREFIX}/"
NEW_POLICIES = {"model_error_rate": "model_error_rate_threshold", "model_latency": "model_latency_threshold_seconds",
                "cost_burn_rate": "cost_burn_usd_per_hour", "drift_alerts": None}

Tf = dict[Path, dict[str, Any]]


def resource(tf: Tf, rtype: str, name: str) -> dict[str, Any]:
    for path, doc in tf.items():
        if path.parent != FLEET:
            continue
        for entry in doc.get("resource", []):
            if name in (entry.get(rtype) or {}):
                return dict(entry[rtype][name])
    pytest.fail(f'resource "{rtype}" "{name}" is missing from {FLEET}')


def local(tf: Tf, name: str) -> Any:
    for path, doc in tf.items():
        if path.parent == FLEET:
            for entry in doc.get("locals", []):
                if name in entry:
                    return entry[name]
    pytest.fail(f"local.{name} is missing from {FLEET}")


def variable(tf: Tf, name: str) -> dict[str, Any]:
    for path, doc in tf.items():
        if path.parent == FLEET:
            for entry in doc.get("variable", []):
                if name in entry:
                    return dict(entry[name])
    pytest.fail(f"variable {name} is missing from {FLEET}")


def resolve(tf: Tf, expression: str) -> str:
    """A filter as Cloud Monitoring gets it: the module's metric filters and the topic's name filled in."""
    names = local(tf, "otel_metric_names")
    template = re.search(r'=> "(.*)"\}\}$', local(tf, "otel_metric")).group(1)  # type: ignore[union-attr]
    for name in names:
        expression = expression.replace(f'${{local.otel_metric["{name}"]}}',
                                        template.replace("${name}", name).replace('\\"', '"'))
    topic = resource(tf, "google_pubsub_topic", "drift_alerts")["name"]
    expression = expression.replace("${google_pubsub_topic.drift_alerts.name}", topic)
    assert "${" not in expression, f"unresolved reference in {expression!r}"
    return expression


def metric_of(filter_: str) -> str:
    found = re.findall(r'metric\.type="([^"]+)"', filter_)
    assert len(found) == 1, f"a filter names one metric type: {filter_!r}"
    return found[0]


def labels_in(text: str) -> set[str]:
    return set(re.findall(r'metric\.labels?\."?([A-Za-z_]+)"?', text))


def check_query(filter_: str, aligner: str, reducer: str, group_by: list[str], where: str) -> None:
    metric = metric_of(filter_)
    if not metric.startswith(PREFIX):
        return
    name = metric.removeprefix(PREFIX)
    assert name in metrics.ATTRIBUTES, f"{where}: {metric} is not a metric the runtime exports"
    assert 'resource.type="generic_task"' in filter_, f"{where}: the runtime's metrics are on generic_task"
    used = labels_in(filter_) | labels_in(" ".join(group_by))
    assert used <= set(metrics.ATTRIBUTES[name]), f"{where}: {name} has no label(s) {used - set(metrics.ATTRIBUTES[name])}"
    # cumulative points: ALIGN_DELTA turns them into per-period values; a histogram reads as percentiles
    assert aligner == "ALIGN_DELTA", f"{where}: {aligner} on the cumulative {name}"
    if name in metrics.HISTOGRAMS:
        assert reducer.startswith("REDUCE_PERCENTILE_"), f"{where}: {name} is a distribution, not {reducer}"
    else:
        assert reducer == "REDUCE_SUM", f"{where}: {name} is a counter, sum it, not {reducer}"


# --- the dashboard ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dashboard(tf_files: Tf) -> dict[str, Any]:
    """The dashboard as Terraform renders it: templatefile() with the variables monitoring.tf passes."""
    call = resource(tf_files, "google_monitoring_dashboard", "agex")["dashboard_json"]
    assert call.startswith('${templatefile("${path.module}/dashboard.json.tftpl", {'), call
    passed = set(re.findall(r"(\w+) = ", call))
    text = TEMPLATE.read_text()
    assert "%{" not in text and "$${" not in text
    used = set(re.findall(r"\$\{(\w+)\}", text))
    assert used == passed, f"the template uses {sorted(used)}, monitoring.tf passes {sorted(passed)}"
    values = {"display_name": "agex runtime", "runs_finished_metric": "agex_runs_finished",
              "drift_alerts_topic": DRIFT_ALERTS_TOPIC}
    rendered = re.sub(r"\$\{(\w+)\}", lambda m: values[m.group(1)], text)
    return dict(json.loads(rendered))


def widgets(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [t["widget"] for t in dashboard["mosaicLayout"]["tiles"]]


def test_the_dashboard_reads_only_what_the_runtime_exports(dashboard: dict[str, Any]) -> None:
    read = set()
    for widget in widgets(dashboard):
        for data in widget.get("xyChart", {}).get("dataSets", []):
            query = data["timeSeriesQuery"]["timeSeriesFilter"]
            aggregation = query["aggregation"]
            check_query(query["filter"], aggregation["perSeriesAligner"], aggregation["crossSeriesReducer"],
                        aggregation.get("groupByFields", []), widget["title"])
            read.add(metric_of(query["filter"]))
    # every instrument is on the dashboard, and the run outcomes and drift alerts beside them
    assert {PREFIX + name for name in metrics.ATTRIBUTES} <= read
    assert "logging.googleapis.com/user/agex_runs_finished" in read
    assert "pubsub.googleapis.com/topic/send_message_operation_count" in read


def test_the_dashboard_tiles_fit_and_do_not_overlap(dashboard: dict[str, Any]) -> None:
    layout = dashboard["mosaicLayout"]
    cells: set[tuple[int, int]] = set()
    for tile in layout["tiles"]:
        x, y, w, h = (tile.get(k, 0) for k in ("xPos", "yPos", "width", "height"))
        assert w > 0 and h > 0 and x + w <= layout["columns"] <= 48, tile["widget"]["title"]
        mine = {(i, j) for i in range(x, x + w) for j in range(y, y + h)}
        assert not cells & mine, f"{tile['widget']['title']} overlaps another tile"
        cells |= mine
    assert all(w.get("title") for w in widgets(dashboard))


def test_the_drift_widget_watches_the_drift_alerts_topic(dashboard: dict[str, Any]) -> None:
    filters = [d["timeSeriesQuery"]["timeSeriesFilter"]["filter"] for w in widgets(dashboard)
               for d in w.get("xyChart", {}).get("dataSets", [])]
    assert any(f'resource.label."topic_id"="{DRIFT_ALERTS_TOPIC}"' in f for f in filters)


# --- the alert policies ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(NEW_POLICIES))
def test_each_alert_policy_reads_what_the_runtime_exports(tf_files: Tf, name: str) -> None:
    policy = resource(tf_files, "google_monitoring_alert_policy", name)
    for condition in blocks(policy, "conditions"):
        for threshold in blocks(condition, "condition_threshold"):
            for filter_key, aggregation_key in (("filter", "aggregations"),
                                                ("denominator_filter", "denominator_aggregations")):
                if filter_key not in threshold:
                    continue
                (aggregation,) = blocks(threshold, aggregation_key)
                check_query(resolve(tf_files, threshold[filter_key]), aggregation["per_series_aligner"],
                            aggregation.get("cross_series_reducer", ""), aggregation.get("group_by_fields", []),
                            f"{name}.{filter_key}")
            if "denominator_filter" in threshold:  # a ratio compares like with like
                (numerator,), (denominator,) = (blocks(threshold, "aggregations"),
                                                blocks(threshold, "denominator_aggregations"))
                assert numerator == denominator
                assert metric_of(resolve(tf_files, threshold["filter"])) == metric_of(
                    resolve(tf_files, threshold["denominator_filter"]))


@pytest.mark.parametrize(("name", "threshold"), sorted(NEW_POLICIES.items()))
def test_each_alert_policy_notifies_and_says_what_to_do(tf_files: Tf, name: str, threshold: str | None) -> None:
    policy = resource(tf_files, "google_monitoring_alert_policy", name)
    assert policy["notification_channels"] == "${var.alert_channels}"
    assert policy["display_name"].startswith("agex: ")
    (documentation,) = blocks(policy, "documentation")
    assert documentation["mime_type"] == "text/markdown" and len(documentation["content"]) > 80
    (condition,) = blocks(policy, "conditions")
    (limit,) = blocks(condition, "condition_threshold")
    if threshold is None:
        return
    assert limit["threshold_value"] == f"${{var.{threshold}}}"
    declared = variable(tf_files, threshold)
    assert declared["type"] in ("number", "${number}") and declared.get("nullable") is False
    assert blocks(declared, "validation") and isinstance(declared["default"], int | float)


def test_the_drift_alert_counts_messages_on_the_runtimes_topic(tf_files: Tf) -> None:
    topic = resource(tf_files, "google_pubsub_topic", "drift_alerts")
    assert topic["name"] == DRIFT_ALERTS_TOPIC
    policy = resource(tf_files, "google_monitoring_alert_policy", "drift_alerts")
    (condition,) = blocks(policy, "conditions")
    (limit,) = blocks(condition, "condition_threshold")
    filter_ = resolve(tf_files, limit["filter"])
    assert f'resource.label."topic_id"="{DRIFT_ALERTS_TOPIC}"' in filter_
    assert metric_of(filter_) == "pubsub.googleapis.com/topic/send_message_operation_count"
    assert limit["comparison"] == "COMPARISON_GT" and limit["threshold_value"] == 0


def test_the_module_lists_every_instrument(tf_files: Tf) -> None:
    assert sorted(local(tf_files, "otel_metric_names")) == sorted(metrics.ATTRIBUTES)
