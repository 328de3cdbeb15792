"""The Cloud Build files: well-formed, pinned public images, scripts that exist, declared substitutions, no
secrets."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from tests.infra.conftest import ROOT

FILES = ["cloudbuild.yaml", "cloudbuild-pr.yaml"]

# https://cloud.google.com/build/docs/configuring-builds/substitute-variable-values#using_default_substitutions
BUILTIN_SUBSTITUTIONS = {
    "PROJECT_ID", "PROJECT_NUMBER", "BUILD_ID", "LOCATION", "COMMIT_SHA", "SHORT_SHA", "REVISION_ID",
    "BRANCH_NAME", "TAG_NAME", "REPO_NAME", "REPO_FULL_NAME", "TRIGGER_NAME", "TRIGGER_BUILD_CONFIG_PATH",
    "SERVICE_ACCOUNT_EMAIL", "SERVICE_ACCOUNT", "_HEAD_BRANCH", "_BASE_BRANCH", "_HEAD_REPO_URL", "_PR_NUMBER",
}
TERRAFORM_IMAGE = re.compile(r"hashicorp/terraform:\d+\.\d+\.\d+")
PUBLIC_IMAGES = [
    re.compile(r"gcr\.io/cloud-builders/[\w.-]+(:[\w.-]+)?"),
    re.compile(r"gcr\.io/google\.com/cloudsdktool/[\w.-]+:[\w.-]+"),
    TERRAFORM_IMAGE,
    re.compile(r"python:3\.11[\w.-]*"),
]
SECRET_PATTERNS = [
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"AIza[0-9A-Za-z_-]{35}"),                      # Google API key
    re.compile(r"ya29\.[0-9A-Za-z_-]{20,}"),                   # OAuth access token
    re.compile(r"eyJ[0-9A-Za-z_-]{10,}\.[0-9A-Za-z_-]{10,}"),  # a JWT
    re.compile(r"\"private_key\"|\"client_secret\""),           # a service account key or OAuth client
    re.compile(r"gh[pousr]_[0-9A-Za-z]{30,}"),                  # GitHub token
    re.compile(r"AKIA[0-9A-Z]{16}"),                            # AWS key id
    re.compile(r"(?i)\b(password|passwd|secret|token|api[_-]?key)\s*[:=]\s*['\"]?[0-9A-Za-z+/_-]{12,}"),
]


def load(name: str) -> dict[str, Any]:
    path = ROOT / name
    assert path.exists(), f"{name} is missing"
    config = yaml.safe_load(path.read_text())
    assert isinstance(config, dict) and isinstance(config.get("steps"), list) and config["steps"], \
        f"{name}: no steps"
    return config


def images_built_in_repo(config: dict[str, Any]) -> set[str]:
    """Images a `docker build -t IMAGE` step of this build makes (from a Dockerfile in the repository)."""
    built = set()
    for step in config["steps"]:
        args = [str(a) for a in step.get("args", [])]
        if "build" in args and "-t" in args:
            built.add(args[args.index("-t") + 1])
    return built


@pytest.mark.parametrize("name", FILES)
def test_steps_have_name_and_unique_id(name: str) -> None:
    steps = load(name)["steps"]
    missing = [i for i, s in enumerate(steps) if not s.get("name") or not s.get("id")]
    assert not missing, f"{name}: steps {missing} lack a name or an id"
    ids = [s["id"] for s in steps]
    assert len(ids) == len(set(ids)), f"{name}: duplicate step ids {ids}"
    for s in steps:
        for dep in s.get("waitFor", []):
            assert dep == "-" or dep in ids[:ids.index(s["id"])], f"{name}: {s['id']} waits for unknown {dep!r}"


@pytest.mark.parametrize("name", FILES)
def test_images_are_pinned_public_builders_or_built_here(name: str) -> None:
    config = load(name)
    built = images_built_in_repo(config)
    wrong = [s["name"] for s in config["steps"]
             if s["name"] not in built and not any(p.fullmatch(s["name"]) for p in PUBLIC_IMAGES)]
    assert not wrong, f"{name}: images neither public builders nor built here: {wrong}"
    for s in config["steps"]:
        if s["name"].startswith("hashicorp/terraform"):
            assert TERRAFORM_IMAGE.fullmatch(s["name"]), f"{name}: terraform image not pinned: {s['name']}"
        if "cloudsdktool" in s["name"]:
            assert re.search(r":\d+\.\d+\.\d+", s["name"]), f"{name}: Cloud SDK image not pinned: {s['name']}"


def _step_text(step: dict[str, Any]) -> str:
    return "\n".join(str(x) for x in [step.get("entrypoint", ""), *step.get("args", []), step.get("script", "")])


@pytest.mark.parametrize("name", FILES)
def test_scripts_and_files_it_uses_exist(name: str) -> None:
    config = load(name)
    text = "\n".join(_step_text(s) for s in config["steps"])
    paths = set(re.findall(r"(?<![\w./$-])((?:scripts|terraform|tests|examples|shared|functions)/[\w./-]*\w)", text))
    # files handed to pip (-r FILE) and python (python FILE.py), wherever they are
    paths |= set(re.findall(r"(?:^|\s)-r\s+([\w./-]+)", text))
    paths |= set(re.findall(r"python3?\s+([\w./-]+\.py)\b", text))
    missing = sorted(p for p in paths if "$" not in p and "*" not in p and not (ROOT / p).exists())
    assert not missing, f"{name} uses files that are not in the repository: {missing}"
    # terraform -chdir / cd into environments that exist
    for env in re.findall(r"terraform/environments/\$\{?_?(\w+)", text):
        assert env in ("STAGE", "env") or (ROOT / "terraform" / "environments" / env).is_dir()


def _substitutions_used(config: dict[str, Any]) -> set[str]:
    text = yaml.safe_dump(config["steps"]) + yaml.safe_dump(config.get("options", {}))
    text = text.replace("$$", "")  # $$ is a literal $ for the shell
    return set(re.findall(r"\$\{?([A-Z_][A-Z0-9_]*)", text))


@pytest.mark.parametrize("name", FILES)
def test_substitutions_are_declared(name: str) -> None:
    config = load(name)
    declared = set(config.get("substitutions", {}))
    undeclared = sorted(_substitutions_used(config) - declared - BUILTIN_SUBSTITUTIONS)
    assert not undeclared, f"{name}: substitutions used but not declared: {undeclared}"
    assert all(k.startswith("_") for k in declared), f"{name}: user substitutions must start with _"
    for required in ("_PROJECT_ID_DEV", "_PROJECT_ID_PROD", "_REGION", "_STATE_BUCKET"):
        assert required in declared, f"{name}: {required} is not declared"


@pytest.mark.parametrize("name", FILES)
def test_no_secrets(name: str) -> None:
    text = (ROOT / name).read_text()
    found = [p.pattern for p in SECRET_PATTERNS if p.search(text)]
    assert not found, f"{name} looks like it holds a secret ({found})"
    config = load(name)
    assert "secretEnv" not in yaml.safe_dump(config) and "availableSecrets" not in config, \
        f"{name}: no secrets are needed; keep them out of the build"


def test_pr_build_checks_everything() -> None:
    text = "\n".join(_step_text(s) + "\n" + s["name"] for s in load("cloudbuild-pr.yaml")["steps"])
    for needle in ("requirements.lock", "ruff", "mypy", "tests/unit", "tests/api", "tests/e2e", "fmt", "-check",
                   "init -backend=false", "validate", "terraform plan", "-emulators"):
        assert needle in text, f"cloudbuild-pr.yaml does not run {needle!r}"
    assert "terraform apply" not in text, "pull requests must not apply"


def test_main_build_deploys_dev_then_prod_after_approval() -> None:
    config = load("cloudbuild.yaml")
    text = "\n".join(_step_text(s) for s in config["steps"])
    for needle in ("terraform apply", "print-identity-token --audiences", "agex run support", "--wait",
                   "gcloud builds triggers run", "gcloud storage cp"):
        assert needle in text, f"cloudbuild.yaml does not run {needle!r}"
    assert config["substitutions"]["_STAGE"] == "dev", "the default stage must be dev (prod needs the approval trigger)"
    assert "approvalRequired" in (ROOT / "cloudbuild.yaml").read_text() or \
        "Require approval" in (ROOT / "cloudbuild.yaml").read_text()

