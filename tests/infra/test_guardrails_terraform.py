"""Static checks of the guardrails' infrastructure (terraform/modules/fleet: pubsub.tf, iam.tf, canary.tf):
the security alerts topic, who may publish to it and read it, and the red-team canary's job, identities and
schedule. How the fleet file's `canary` key is read is checked with a real Terraform in
test_canary_settings.py.

The contract: the topic is the runtime's SECURITY_ALERTS_TOPIC and has a subscription; only the step
function and the canary publish; readers are named members with the subscriber role on that
subscription only; the canary runs as its own identity, which may call the model and publish alerts and
nothing else (no Firestore, Cloud Tasks, secrets or agent identities); only the canary invoker may run the
jobs, and it may do nothing else; each scheduler job runs its agent's job through the Cloud Run Admin API
with the invoker's OAuth token; no canary resource exists without canary_image.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from agex.core.guard import SECURITY_ALERTS_TOPIC
from scripts.tf_hcl import blocks, text
from tests.infra.test_terraform import Tf, first, locals_of, refs, resources, variables_of

FLEET = Path("terraform", "modules", "fleet")
MODEL_ROLES = {"roles/aiplatform.user"}
FORBIDDEN_FOR_CANARY = ("datastore", "firestore", "cloudtasks", "secretmanager", "iam.serviceAccount",
                        "run.invoker", "storage", "owner", "editor")


def _one(tf: Tf, rtype: str, name: str) -> dict[str, Any]:
    found = [body for path, n, body in resources(tf, rtype) if n == name and path.parent == FLEET]
    assert len(found) == 1, f"{FLEET}: expected one {rtype}.{name}, found {len(found)}"
    return found[0]


def _grants(tf: Tf) -> list[tuple[Path, str, str, dict[str, Any]]]:
    """(file, type, name, body) of every resource that grants a role to a member."""
    return [(path, rtype, name, body) for path, doc in tf.items() for entry in doc.get("resource", [])
            for rtype, named in entry.items() for name, body in named.items()
            if "role" in body and ("member" in body or "members" in body)]


def _grants_to(tf: Tf, account: str) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(type.name, role, target, body) of every grant whose member is google_service_account.<account>."""
    return [(f"{rtype}.{name}", str(body.get("role")), text({k: v for k, v in body.items()
                                                             if k not in ("member", "members", "role")}), body)
            for _, rtype, name, body in _grants(tf)
            if account in refs(body.get("member") or body.get("members"), "google_service_account")]


# --- the security alerts topic ---------------------------------------------------------------------------


def test_the_topic_is_the_runtimes(tf_files: Tf) -> None:
    topic = _one(tf_files, "google_pubsub_topic", "security_alerts")
    assert topic["name"] == SECURITY_ALERTS_TOPIC, \
        f"the topic is {topic['name']!r}, the runtime publishes to {SECURITY_ALERTS_TOPIC!r}"
    # as the other topics: labelled, messages kept a week for a subscriber that was down
    decisions = _one(tf_files, "google_pubsub_topic", "approval_decisions")
    for key in ("labels", "message_retention_duration", "depends_on"):
        assert topic.get(key) == decisions.get(key), f"security_alerts.{key} differs from the other topics'"


def test_the_topic_has_a_subscription_that_never_expires(tf_files: Tf) -> None:
    subs = [b for _, _, b in resources(tf_files, "google_pubsub_subscription")
            if refs(b.get("topic"), "google_pubsub_topic") == {"security_alerts"}]
    assert subs, "no subscription on agex-security-alerts: a topic without one drops what it receives"
    for sub in subs:
        assert first(sub, "expiration_policy", "ttl") == "", f"{sub['name']}: expires when idle"
        assert sub.get("message_retention_duration") == "604800s"


def test_only_the_step_function_and_the_canary_publish(tf_files: Tf) -> None:
    grants = [(body.get("role"), refs(body.get("member"), "google_service_account"), name)
              for _, rtype, name, body in _grants(tf_files)
              if refs(body.get("topic"), "google_pubsub_topic") == {"security_alerts"}]
    assert {r for r, _, _ in grants} == {"roles/pubsub.publisher"}, grants
    publishers = set().union(*(sas for _, sas, _ in grants))
    assert publishers == {"step", "canary"}, f"publishers of agex-security-alerts: {sorted(publishers)}"
    # the step function publishes as the account it runs as
    step = _one(tf_files, "google_cloudfunctions2_function", "step")
    assert refs(first(step, "service_config", "service_account_email"), "google_service_account") == {"step"}


def test_subscribers_are_named_members_with_the_subscriber_role_on_the_subscription(tf_files: Tf) -> None:
    grants = [(name, body) for _, rtype, name, body in _grants(tf_files)
              if "var.security_alert_subscribers" in text(body)]
    assert len(grants) == 1, f"expected one grant to var.security_alert_subscribers, found {grants}"
    ((name, body),) = grants
    assert body["role"] == "roles/pubsub.subscriber"
    assert refs(body.get("subscription"), "google_pubsub_subscription") == {"security_alerts"}, \
        f"{name}: subscribers must be granted on the security alerts subscription, not the topic or project"
    assert "var.security_alert_subscribers" in text(body.get("for_each")) and body.get("member") == "${each.value}"
    variable = variables_of(tf_files, FLEET)["security_alert_subscribers"]
    condition = text(variable.get("validation"))
    assert "var.security_alert_subscribers" in condition and "serviceAccount" in condition, \
        "security_alert_subscribers must refuse members that are not named identities"
    assert "allUsers" not in condition and "allAuthenticatedUsers" not in condition


def test_the_topic_name_is_an_output(tf_files: Tf) -> None:
    for directory in (FLEET, Path("terraform", "environments", "dev"), Path("terraform", "environments", "prod")):
        outputs = {k: v for path, doc in tf_files.items() if path.parent == directory
                   for entry in doc.get("output", []) for k, v in entry.items()}
        assert "security_alerts_topic" in outputs, f"{directory}: no output security_alerts_topic"
    value = {k: v for path, doc in tf_files.items() if path.parent == FLEET
             for entry in doc.get("output", []) for k, v in entry.items()}["security_alerts_topic"]["value"]
    assert value == "${google_pubsub_topic.security_alerts.name}"


# --- the canary's identities ---------------------------------------------------------------------------


def test_the_canary_has_the_step_functions_model_access_and_nothing_else(tf_files: Tf) -> None:
    grants = _grants_to(tf_files, "canary")
    roles = {role for _, role, _, _ in grants}
    assert roles == MODEL_ROLES | {"roles/pubsub.publisher"}, f"the canary's roles: {sorted(roles)}"
    forbidden = [f"{address}: {role}" for address, role, _, _ in grants
                 if any(word in role for word in FORBIDDEN_FOR_CANARY)]
    assert not forbidden, "the canary may not touch Firestore, Cloud Tasks, secrets or identities:\n" + \
        "\n".join(forbidden)
    publish = [target for _, role, target, _ in grants if role == "roles/pubsub.publisher"]
    assert publish and all("google_pubsub_topic.security_alerts." in t for t in publish), publish
    step_roles = {b["role"] for _, n, b in resources(tf_files, "google_project_iam_member") if n == "step"}
    step_roles |= set(re.findall(r'"(roles/[^"]+)"', text(_one(tf_files, "google_project_iam_member", "step")
                                                           .get("for_each"))))
    assert step_roles >= MODEL_ROLES, f"the step function's model access is no longer {MODEL_ROLES}: {step_roles}"


def test_the_canary_reads_no_secret_and_acts_as_no_one(tf_files: Tf) -> None:
    for account in ("canary", "canary_invoker"):
        for address, role, _, _ in _grants_to(tf_files, account):
            assert "secret" not in address and "service_account_iam" not in address, f"{address} grants {account} {role}"
    job = _one(tf_files, "google_cloud_run_v2_job", "canary")
    assert "value_source" not in text(job) and "secret" not in text(job.get("template")), \
        "the canary job mounts or reads a secret"
    env = locals_of(tf_files, FLEET)["canary_env"]
    for setting in ("AGEX_DECISION", "AGEX_STEP_SERVICE_ACCOUNT", "AGEX_DEV_TOKENS", "AGEX_TENANTS"):
        assert setting not in text(env), f"the canary's environment has {setting}: it needs only the model's settings"
    assert '"AGEX_PROJECT"' in env and '"AGEX_VERTEX"' in env and "AGEX_FLEET_FILE" in env


def test_the_canary_runs_as_its_own_account(tf_files: Tf) -> None:
    accounts = {b["account_id"]: n for _, n, b in resources(tf_files, "google_service_account") if "account_id" in b}
    assert accounts.get("agex-canary") == "canary" and accounts.get("agex-canary-invoker") == "canary_invoker"
    job = _one(tf_files, "google_cloud_run_v2_job", "canary")
    assert refs(first(job, "template", "template", "service_account"), "google_service_account") == {"canary"}
    functions = {next(iter(refs(first(b, "service_config", "service_account_email"), "google_service_account")))
                 for _, _, b in resources(tf_files, "google_cloudfunctions2_function")}
    assert not functions & {"canary", "canary_invoker"}, "a function runs as a canary identity"


def test_only_the_invoker_may_run_the_canary_jobs_and_it_may_do_nothing_else(tf_files: Tf) -> None:
    invokers = [(n, b) for _, n, b in resources(tf_files, "google_cloud_run_v2_job_iam_member")]
    assert invokers, "no google_cloud_run_v2_job_iam_member"
    for name, body in invokers:
        assert body["role"] == "roles/run.invoker", f"{name}: {body['role']}"
        assert refs(body.get("name"), "google_cloud_run_v2_job") == {"canary"}, f"{name}: {body.get('name')}"
        assert refs(body.get("member"), "google_service_account") == {"canary_invoker"}, f"{name}: {body['member']}"
        assert body.get("for_each") == "${local.canaries}"
    assert {a for a, _, _, _ in _grants_to(tf_files, "canary_invoker")} == \
        {f"google_cloud_run_v2_job_iam_member.{n}" for n, _ in invokers}
    for rtype in ("google_cloud_run_v2_job_iam_binding", "google_cloud_run_v2_job_iam_policy"):
        assert not resources(tf_files, rtype), f"{rtype}: use one iam_member per invoker"


# --- the canary job and its schedule ---------------------------------------------------------------------


def test_no_canary_resource_without_an_image(tf_files: Tf) -> None:
    canaries = locals_of(tf_files, FLEET)["canaries"]
    assert re.fullmatch(r'\$\{\{for agent, canary in module\.canary_settings\.enabled : agent => canary '
                        r'if var\.canary_image != ""\}\}', canaries), canaries
    assert variables_of(tf_files, FLEET)["canary_image"].get("default") == ""
    for rtype in ("google_cloud_run_v2_job", "google_cloud_run_v2_job_iam_member", "google_cloud_scheduler_job"):
        assert _one(tf_files, rtype, "canary" if rtype != "google_cloud_run_v2_job_iam_member"
                    else "canary_invoker").get("for_each") == "${local.canaries}", rtype
    for name in ("canary", "canary_invoker"):
        assert _one(tf_files, "google_service_account", name).get("count") == "${local.canary_on ? 1 : 0}"


def test_the_job_runs_the_red_team_command_against_the_live_model(tf_files: Tf) -> None:
    job = _one(tf_files, "google_cloud_run_v2_job", "canary")
    (container,) = first(job, "template", "template", "containers")
    assert container["image"] == "${var.canary_image}"
    assert container["command"] == ["agex"]
    assert container["args"] == ["redteam", "${each.key}", "--cases", "${var.canary.cases}", "--model", "live",
                                 "--max-attack-success", "${tostring(each.value.max_attack_success)}", "--publish"]
    assert first(job, "template", "template", "max_retries") == 0, "a failed canary is retried (and billed) again"
    assert job.get("deletion_protection") is False, "disabling a canary would fail the apply"


def test_the_scheduler_runs_the_agents_job_through_the_admin_api(tf_files: Tf) -> None:
    schedule = _one(tf_files, "google_cloud_scheduler_job", "canary")
    assert schedule["schedule"] == "${each.value.schedule}"
    (target,) = blocks(schedule, "http_target")
    assert target["http_method"] == "POST"
    assert target["uri"] == ("https://run.googleapis.com/v2/projects/${var.project}/locations/${var.region}/jobs/"
                             "${google_cloud_run_v2_job.canary[each.key].name}:run")
    assert not blocks(target, "oidc_token"), "the Admin API takes an OAuth access token, not an ID token"
    (oauth,) = blocks(target, "oauth_token")
    assert refs(oauth["service_account_email"], "google_service_account") == {"canary_invoker"}
    assert oauth.get("scope") == "https://www.googleapis.com/auth/cloud-platform"
    # the job and its invoker grant exist before the first tick
    assert "${google_cloud_run_v2_job_iam_member.canary_invoker}" in schedule.get("depends_on", [])


def test_bad_canary_keys_stop_the_plan_before_any_job(tf_files: Tf) -> None:
    checks = _one(tf_files, "terraform_data", "fleet_checks")
    conditions = [first(p, "condition") for lc in blocks(checks, "lifecycle") for p in blocks(lc, "precondition")]
    assert "${length(module.canary_settings.problems) == 0}" in conditions, conditions
    job = _one(tf_files, "google_cloud_run_v2_job", "canary")
    assert "${terraform_data.fleet_checks}" in job.get("depends_on", [])
