#!/usr/bin/env python3
"""Check the Terraform under terraform/ against the real provider schemas and its own declarations, offline.

    .venv/bin/python scripts/tf_schema.py [PATH...]      (default: terraform/; exit 1 on findings)

What `terraform validate` would reject, without Terraform, the providers or the network:

- schema (google and google-beta 6.50.0, archive 2.7.1, tls 4.1.0, from the jsii assemblies of the cdktf
  provider packages in .venv-tools, see scripts/tf_provider_schema.py; a provider without such a package
  is a finding): unknown resource and data source types; unknown arguments and block types at every
  nesting level, inside `dynamic` blocks' `content` too;
  arguments written as blocks and blocks as arguments; more than one instance of a block that takes one;
  missing required arguments and blocks; literal values (and a variable's default and the values its
  `contains([...], var.x)` validation allows) outside an enumerated argument's values; lifecycle
  arguments, `ignore_changes` entries; provider blocks' arguments;
- declarations: every `var.x` declared in its module; every `local.x`, `module.x`, `data.t.n` and
  resource `t.n` referenced exists in its module, and each attribute read from a resource or data source
  exists in its schema; instance keys used exactly when `count`/`for_each` is set; every output read
  from `module.x` declared by that module; every argument of a `module` block declared as a variable of
  the module, and every required variable (no default) passed; `count` and `for_each` not both; every
  terraform.tfvars key declared, and every required variable of a root set there; no resource, data
  source, variable, output, module or local declared twice; the arguments of variable and output blocks.

Runs with the project's venv (python-hcl2, pinned in pyproject.toml, parses the HCL, the same parse as
tests/infra; started with another Python, e.g. the tools venv's, it runs itself again with .venv/bin/python)
and reads the provider schemas with the tools venv's python (`--tools-python`, default
.venv-tools/bin/python), which has the provider packages (`make tools`).
"""

from __future__ import annotations

import argparse
import difflib
import functools
import importlib.util
import json
import re
import subprocess
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script rather than imported as scripts.tf_schema
    sys.path.insert(0, str(ROOT))

PROJECT_PYTHON = ROOT / ".venv" / "bin" / "python"
TOOLS_PYTHON = ROOT / ".venv-tools" / "bin" / "python"

from scripts import tf_provider_schema  # noqa: E402

try:
    from scripts.tf_hcl import BLOCK_MARK, BLOCK_OPTIONS, TERRAFORM, HclError, loads, strings
except ImportError:
    # The tools venv's hcl2 is checkov's fork (bc-python-hcl2), not the project's python-hcl2: run again
    # with the project's venv, which asks the tools venv for the schemas.
    elsewhere = Path(sys.prefix).resolve() != PROJECT_PYTHON.parents[1].resolve()
    if __name__ == "__main__" and PROJECT_PYTHON.exists() and elsewhere:
        sys.exit(subprocess.run([str(PROJECT_PYTHON), __file__, *sys.argv[1:]]).returncode)
    raise

Schema = dict[str, Any]

# Terraform's meta-arguments (https://developer.hashicorp.com/terraform/language/meta-arguments): not in
# any provider's schema, allowed in every resource, data source and module block.
RESOURCE_META = {"count", "for_each", "depends_on", "provider", "lifecycle", "provisioner", "connection"}
DATA_META = {"count", "for_each", "depends_on", "provider", "lifecycle"}
MODULE_META = {"source", "version", "count", "for_each", "providers", "depends_on"}
PROVIDER_META = {"alias", "version"}
LIFECYCLE = {"create_before_destroy", "prevent_destroy", "ignore_changes", "replace_triggered_by",
             "precondition", "postcondition"}
DATA_LIFECYCLE = {"precondition", "postcondition"}
CONDITION = {"condition", "error_message"}
DYNAMIC = {"for_each", "iterator", "labels", "content"}
VARIABLE_ARGS = {"description", "type", "default", "sensitive", "nullable", "validation", "ephemeral"}
OUTPUT_ARGS = {"value", "description", "sensitive", "depends_on", "precondition", "ephemeral"}


def _attributes(*names: str, required: Iterable[str] = ()) -> dict[str, Any]:
    return {n: {"required": n in set(required)} for n in names}


# Terraform's built-in provider (terraform.io/builtin/terraform), which no package ships.
BUILTIN: Schema = {
    "provider": "terraform", "version": "builtin", "provider_config": {"attributes": {}, "blocks": {}},
    "resource": {"terraform_data": {"attributes": _attributes("input", "triggers_replace"), "blocks": {},
                                    "computed": ["id", "input", "output", "triggersreplace"]}},
    "data": {"terraform_remote_state": {
        "attributes": _attributes("backend", "config", "defaults", "workspace", required=["backend"]),
        "blocks": {}, "computed": ["backend", "config", "defaults", "outputs", "workspace"]}},
}


class SchemaUnavailable(Exception):
    pass


def load_schemas(tools_python: Path | None = None) -> dict[str, Schema]:
    """Provider type -> schema: those of tf_provider_schema.PACKAGES (from the tools venv) and terraform's
    built-in provider."""
    if importlib.util.find_spec(tf_provider_schema.PACKAGES["google"]) is not None:
        files, missing = tf_provider_schema.ensure_cache()
    else:
        python = tools_python or TOOLS_PYTHON
        if not Path(python).exists():
            raise SchemaUnavailable(f"{python} does not exist: run `make tools` (the provider schemas are in "
                                    "the tools venv, from requirements-tools.txt)")
        done = subprocess.run([str(python), str(Path(tf_provider_schema.__file__))], capture_output=True,
                              text=True, timeout=300)
        if done.returncode != 0:
            raise SchemaUnavailable(f"reading the provider schemas with {python} failed:\n{done.stderr}")
        answer = json.loads(done.stdout)
        files, missing = {k: Path(v) for k, v in answer["files"].items()}, answer["missing"]
    if missing:
        raise SchemaUnavailable(f"not installed in the tools venv: {', '.join(missing)}: run `make tools`")
    schemas = {provider: json.loads(path.read_text()) for provider, path in files.items()}
    schemas["terraform"] = BUILTIN
    return schemas


# --- the configuration ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    path: Path
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.where}: {self.message}" if self.where else f"{self.path}: {self.message}"


@dataclass
class Block:
    path: Path    # the file, relative to the checked tree's parent (terraform/modules/fleet/iam.tf)
    labels: tuple[str, ...]
    body: dict[str, Any]


@dataclass
class Module:
    """One directory of .tf files: a root or a module."""
    directory: Path
    variables: dict[str, Block] = field(default_factory=dict)
    locals: dict[str, Block] = field(default_factory=dict)
    outputs: dict[str, Block] = field(default_factory=dict)
    calls: dict[str, Block] = field(default_factory=dict)
    resources: dict[tuple[str, str], Block] = field(default_factory=dict)
    data: dict[tuple[str, str], Block] = field(default_factory=dict)
    providers: list[Block] = field(default_factory=list)
    other: list[Block] = field(default_factory=list)   # terraform, moved, import, check, ...
    required_providers: dict[str, str] = field(default_factory=dict)   # local name -> provider type
    tfvars: dict[Path, dict[str, Any]] = field(default_factory=dict)

    def provider_type(self, local_name: str) -> str:
        return self.required_providers.get(local_name, local_name)


def _body(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _labelled(entries: Any, depth: int) -> Iterator[tuple[tuple[str, ...], dict[str, Any]]]:
    """(labels, body) of `kind "l1" "l2" {}` entries as python-hcl2 gives them: {l1: {l2: body}}."""
    for entry in entries if isinstance(entries, list) else [entries]:
        if depth == 0:
            yield (), _body(entry)
            continue
        for label, inner in _body(entry).items():
            if label != BLOCK_MARK:
                for labels, body in _labelled(inner, depth - 1):
                    yield (label, *labels), body


@functools.lru_cache(maxsize=512)
def _parse(source: str) -> dict[str, Any]:
    # Memoized by content: the tests check many copies of the tree that differ in one file. Nothing below
    # modifies a parsed document.
    return loads(source, BLOCK_OPTIONS)


def load_modules(tree: Path) -> tuple[dict[Path, Module], list[Finding]]:
    base = tree.parent
    modules: dict[Path, Module] = {}
    findings = []
    for path in sorted(p for p in tree.rglob("*") if p.suffix in (".tf", ".tfvars") and p.is_file()
                       and not any(part.startswith(".terraform") for part in p.relative_to(tree).parts[:-1])):
        rel = path.relative_to(base)
        module = modules.setdefault(path.parent, Module(path.parent.relative_to(base)))
        try:
            doc = _parse(path.read_text())
        except HclError as e:
            findings.append(Finding(rel, "", f"does not parse as HCL: {e.__cause__}"))
            continue
        if path.suffix == ".tfvars":
            module.tfvars[rel] = doc
            continue
        for kind, entries in doc.items():
            depth = {"resource": 2, "data": 2, "variable": 1, "output": 1, "module": 1, "provider": 1}.get(kind, 0)
            for labels, body in _labelled(entries, depth):
                block = Block(rel, labels, body)
                by_kind: dict[str, dict[Any, Block]] = {
                    "resource": module.resources, "data": module.data, "variable": module.variables,
                    "output": module.outputs, "module": module.calls}
                named = by_kind.get(kind)
                if named is not None:
                    key: Any = labels if depth == 2 else labels[0]
                    if key in named:
                        findings.append(Finding(rel, f"{kind} {' '.join(labels)}", "declared twice in "
                                                f"{module.directory} (also in {named[key].path.name})"))
                    named[key] = block
                elif kind == "provider":
                    module.providers.append(block)
                elif kind == "locals":
                    for name in body:
                        if name in module.locals:
                            findings.append(Finding(rel, f"local.{name}", f"declared twice in {module.directory} "
                                                    f"(also in {module.locals[name].path.name})"))
                        elif name != BLOCK_MARK:
                            module.locals[name] = block
                else:
                    module.other.append(Block(rel, (kind,), body))
                    if kind == "terraform":
                        for required in _blocks(body, "required_providers"):
                            for name, spec in required.items():
                                source = _body(spec).get("source") if name != BLOCK_MARK else None
                                if isinstance(source, str):
                                    module.required_providers[name] = source.rsplit("/", 1)[-1]
    return modules, findings


def _blocks(body: dict[str, Any], key: str) -> list[dict[str, Any]]:
    value = body.get(key)
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _is_block(value: Any) -> bool:
    return (isinstance(value, list) and bool(value)
            and all(isinstance(v, dict) and v.get(BLOCK_MARK) for v in value))


def _suggest(name: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.75)
    return f' (did you mean "{close[0]}"?)' if close else ""


# --- schema ----------------------------------------------------------------------------------------------


@dataclass
class _Context:
    module: Module
    path: Path
    address: str
    findings: list[Finding]

    def add(self, where: str, message: str) -> None:
        self.findings.append(Finding(self.path, ".".join(p for p in (self.address, where) if p), message))


def _allowed_values(ctx: _Context, value: Any) -> list[tuple[str, str]]:
    """(value, where it comes from) of the literal strings an argument can take: a literal, or a variable's
    default and the values its validation admits."""
    if isinstance(value, str) and "${" not in value:
        return [(value, "")]
    variable = re.fullmatch(r"\$\{var\.([A-Za-z_][\w-]*)\}", value) if isinstance(value, str) else None
    block = ctx.module.variables.get(variable.group(1)) if variable else None
    if variable is None or block is None:
        return []
    name = variable.group(1)
    out = []
    default = block.body.get("default")
    if isinstance(default, str) and "${" not in default:
        out.append((default, f" (default of variable {name})"))
    for validation in _blocks(block.body, "validation"):
        condition = str(validation.get("condition"))
        listed = re.search(rf"contains\(\[([^\]]*)\],\s*var\.{re.escape(name)}\)", condition)
        if listed:
            origin = f" (admitted by variable {name}'s validation)"
            out += [(v, origin) for v in re.findall(r'"([^"]*)"', listed[1])]
    return out


def _check_body(ctx: _Context, schema: Schema, body: dict[str, Any], where: str,
                meta: frozenset[str] | set[str] = frozenset(), kind: str = "resource") -> None:
    attributes, nested = schema["attributes"], schema["blocks"]
    dynamic: set[str] = set()
    for key, value in body.items():
        if key == BLOCK_MARK or key in meta:
            continue
        if key == "dynamic" and isinstance(value, list) and all(isinstance(v, dict) for v in value):
            for labels, dyn in _labelled(value, 1):
                dynamic.add(labels[0])
                _check_dynamic(ctx, schema, labels[0], dyn, where)
        elif key in attributes:
            if _is_block(value):
                ctx.add(where, f'"{key}" is an argument, not a block: write {key} = ...')
                continue
            enum = attributes[key].get("enum")
            for literal, origin in _allowed_values(ctx, value) if enum else []:
                if literal and literal not in enum:
                    ctx.add(where, f'{key} = "{literal}"{origin}: not one of {", ".join(enum)}')
        elif key in nested:
            if not _is_block(value):
                ctx.add(where, f'"{key}" is a block, not an argument: write {key} {{ ... }}')
                continue
            if nested[key]["max_one"] and len(value) > 1:
                ctx.add(where, f'{len(value)} "{key}" blocks: at most one is allowed')
            for instance in value:
                _check_body(ctx, nested[key]["block"], instance, ".".join(p for p in (where, key) if p))
        elif _is_block(value):
            ctx.add(where, f'unsupported block type "{key}"{_suggest(key, nested)}')
        else:
            ctx.add(where, f'unsupported argument "{key}"{_suggest(key, attributes)}')
    for name, attribute in attributes.items():
        if attribute["required"] and name not in body:
            ctx.add(where, f'missing required argument "{name}"')
    for name, block in nested.items():
        if block["required"] and name not in body and name not in dynamic:
            ctx.add(where, f'missing required block "{name}"')
    if "lifecycle" in meta:
        for lifecycle in _blocks(body, "lifecycle"):
            _check_lifecycle(ctx, schema, lifecycle, kind)


def _check_dynamic(ctx: _Context, schema: Schema, label: str, dyn: dict[str, Any], where: str) -> None:
    here = ".".join(p for p in (where, f'dynamic "{label}"') if p)
    for key in dyn:
        if key not in DYNAMIC and key != BLOCK_MARK:
            ctx.add(here, f'unsupported argument "{key}" in a dynamic block '
                          "(for_each, iterator, labels, content)")
    if "for_each" not in dyn:
        ctx.add(here, 'missing required argument "for_each"')
    contents = _blocks(dyn, "content")
    if len(contents) != 1:
        ctx.add(here, f"a dynamic block needs exactly one content block, not {len(contents)}")
    if label in schema["attributes"]:
        ctx.add(here, f'"{label}" is an argument: dynamic blocks generate blocks only')
    elif label not in schema["blocks"]:
        ctx.add(here, f'unsupported block type "{label}"{_suggest(label, schema["blocks"])}')
    else:
        for content in contents:
            _check_body(ctx, schema["blocks"][label]["block"], content, f"{here}.content")


def _check_lifecycle(ctx: _Context, schema: Schema, lifecycle: dict[str, Any], kind: str) -> None:
    allowed = LIFECYCLE if kind == "resource" else DATA_LIFECYCLE
    for key, value in lifecycle.items():
        if key == BLOCK_MARK:
            continue
        if key not in allowed:
            ctx.add("lifecycle", f"unsupported argument \"{key}\" in a {kind}'s lifecycle"
                                 f"{_suggest(key, allowed)}")
        elif key in ("precondition", "postcondition"):
            for condition in value if isinstance(value, list) else []:
                for name in set(condition) - CONDITION - {BLOCK_MARK}:
                    ctx.add(f"lifecycle.{key}", f'unsupported argument "{name}"')
                for name in CONDITION - set(condition):
                    ctx.add(f"lifecycle.{key}", f'missing required argument "{name}"')
        elif key == "ignore_changes" and value != "all":
            for entry in value if isinstance(value, list) else [value]:
                first = re.match(r"(?:\$\{)?([A-Za-z_][\w-]*)", str(entry))
                if first and first[1] not in schema["attributes"] and first[1] not in schema["blocks"]:
                    ctx.add("lifecycle.ignore_changes", f'"{first[1]}" is not an argument of this {kind}')


def _provider_of(module: Module, rtype: str, body: dict[str, Any]) -> str:
    meta = body.get("provider")
    # without a provider argument, Terraform takes the provider whose local name is the type's first word
    local = re.sub(r"^\$\{|\}$", "", meta).split(".")[0] if isinstance(meta, str) else rtype.split("_", 1)[0]
    return module.provider_type(local)


def check_schema(module: Module, schemas: dict[str, Schema]) -> list[Finding]:
    findings: list[Finding] = []
    for kind, declared, meta in (("resource", module.resources, RESOURCE_META),
                                 ("data", module.data, DATA_META)):
        for (rtype, name), block in declared.items():
            address = f"{'data.' if kind == 'data' else ''}{rtype}.{name}"
            ctx = _Context(module, block.path, address, findings)
            provider = _provider_of(module, rtype, block.body)
            schema = schemas.get(provider, {}).get(kind, {}).get(rtype)
            if "count" in block.body and "for_each" in block.body:
                ctx.add("", "count and for_each cannot both be set")
            if schema is not None:
                _check_body(ctx, schema, block.body, "", meta, kind)
                continue
            noun = "resource type" if kind == "resource" else "data source"
            if provider not in schemas:
                ctx.add("", f'unknown {noun} "{rtype}": no schema for provider "{provider}"')
                continue
            elsewhere = [p for p, s in schemas.items() if rtype in s.get(kind, {})]
            hint = (f" (provider {elsewhere[0]} has it: set provider = {elsewhere[0]})" if elsewhere
                    else _suggest(rtype, schemas[provider][kind]))
            ctx.add("", f'unknown {noun} "{rtype}" in provider {provider} '
                        f'{schemas[provider]["version"]}{hint}')
    for block in module.providers:
        provider = module.provider_type(block.labels[0])
        ctx = _Context(module, block.path, f'provider "{block.labels[0]}"', findings)
        if provider in schemas:
            _check_body(ctx, schemas[provider]["provider_config"], block.body, "", PROVIDER_META, "provider")
        else:
            ctx.add("", f'no schema for provider "{provider}"')
    return findings


# --- references and declarations -------------------------------------------------------------------------


def expressions(template: str) -> list[str]:
    """The expression parts of a value as python-hcl2 serializes it (a template: literal text with ${...}
    and %{...} parts), with the text of string literals inside them blanked out, nested templates' own
    expressions listed too."""
    out: list[str] = []
    n = len(template)

    def literal(i: int, quoted: bool) -> int:
        while i < n:
            if quoted and template[i] == "\\":
                i += 2
            elif quoted and template[i] == '"':
                return i + 1
            elif template.startswith(("$${", "%%{"), i):
                i += 3
            elif template.startswith(("${", "%{"), i):
                i = expression(i + 2)
            else:
                i += 1
        return i

    def expression(i: int) -> int:
        depth, parts = 0, []
        while i < n:
            c = template[i]
            if c == '"':
                parts.append('""')
                i = literal(i + 1, True)
                continue
            if c == "{":
                depth += 1
            elif c == "}":
                if depth == 0:
                    break
                depth -= 1
            parts.append(c)
            i += 1
        out.append("".join(parts))
        return i + 1

    literal(0, False)
    return out


_ROOT = re.compile(r"(?<![\w.\-])([A-Za-z_][\w-]*)")
_STEP = re.compile(r"\.([A-Za-z_][\w-]*)|\.(\*)|\.(\d+)|\[")


def traversals(expression: str) -> Iterator[tuple[str, list[tuple[str, str]]]]:
    """(root, steps) of each reference in an expression; steps are ("attr", name), ("index", text) or
    ("splat", "*"): `google_x.a[each.key].email` -> ("google_x", [attr a, index each.key, attr email])."""
    i = 0
    while True:
        m = _ROOT.search(expression, i)
        if m is None:
            return
        i = m.end()
        if expression[i:i + 1] == "(":
            continue  # a function call
        steps: list[tuple[str, str]] = []
        while True:
            s = _STEP.match(expression, i)
            if s is None:
                break
            if s[0] == "[":
                depth, j = 1, i + 1
                while j < len(expression) and depth:
                    depth += {"[": 1, "]": -1}.get(expression[j], 0)
                    j += 1
                inner = expression[i + 1:j - 1].strip()
                steps.append(("splat", "*") if inner == "*" else ("index", inner))
                # the index expression holds references of its own (google_x.a[var.k])
                yield from traversals(inner)
                i = j
            else:
                steps.append(("attr", s[1]) if s[1] else ("splat", "*") if s[2] else ("index", s[3]))
                i = s.end()
        yield m[1], steps


def _reference_strings(module: Module) -> Iterator[tuple[Block, str]]:
    """Every string of the module that can hold references, with its block."""
    for block in [*module.resources.values(), *module.data.values(), *module.outputs.values(),
                  *module.calls.values(), *module.providers, *module.other]:
        body = dict(block.body)
        for lifecycle in _blocks(body, "lifecycle"):
            # ignore_changes names the block's own arguments, not references
            body["lifecycle"] = [{k: v for k, v in lifecycle.items() if k != "ignore_changes"}]
        if block.labels in (("terraform",), ("moved",), ("removed",)):
            continue  # settings, and addresses of resources that are gone
        for s in strings(body):
            yield block, s
    for block in {id(b): b for b in module.locals.values()}.values():
        for s in strings(block.body):
            yield block, s
    for block in module.variables.values():
        for validation in _blocks(block.body, "validation"):
            for s in strings(validation):
                yield block, s


def _instance_steps(kind: str, declared: Block, steps: list[tuple[str, str]], address: str,
                    add: Any) -> list[tuple[str, str]]:
    """The steps after the instance key; reports a key missing on a counted block, or present on a single one."""
    repeated = "count" in declared.body or "for_each" in declared.body
    if steps and steps[0][0] == "attr" and repeated:
        add(f'{address} has {"count" if "count" in declared.body else "for_each"}: '
            f"index it ({address}[...].{steps[0][1]}) to read .{steps[0][1]}")
    if steps and steps[0][0] == "index" and not repeated:
        add(f"{address} has neither count nor for_each: it takes no instance key [{steps[0][1]}]")
    while steps and steps[0][0] in ("index", "splat"):
        steps = steps[1:]
    return steps


def check_references(module: Module, modules: dict[Path, Module], tree: Path,
                     schemas: dict[str, Schema]) -> list[Finding]:
    findings: set[Finding] = set()
    resource_types = {t for s in schemas.values() for t in s.get("resource", {})}
    prefixes = tuple(f"{p}_" for p in schemas)
    for block, s in _reference_strings(module):
        if "${" not in s and "%{" not in s:
            continue
        where = ".".join(block.labels)

        def add(message: str, block: Block = block, where: str = where) -> None:
            findings.add(Finding(block.path, where, message))

        for expression in expressions(s):
            for root, steps in traversals(expression):
                names = [v for k, v in steps if k == "attr"]
                if root == "var" and names:
                    if names[0] not in module.variables:
                        add(f'var.{names[0]}: no variable "{names[0]}" in {module.directory}'
                            f"{_suggest(names[0], module.variables)}")
                elif root == "local" and names:
                    if names[0] not in module.locals:
                        add(f'local.{names[0]}: no local "{names[0]}" in {module.directory}'
                            f"{_suggest(names[0], module.locals)}")
                elif root == "module" and steps and steps[0][0] == "attr":
                    _check_module_reference(module, modules, tree, steps, add)
                elif root == "data" and len(steps) >= 2 and steps[0][0] == steps[1][0] == "attr":
                    _check_resource_reference(module, schemas, "data", steps[0][1], steps[1][1], steps[2:], add)
                elif (root in resource_types or root.startswith(prefixes)) and steps and steps[0][0] == "attr":
                    _check_resource_reference(module, schemas, "resource", root, steps[0][1], steps[1:], add)
    return sorted(findings, key=str)


def _check_module_reference(module: Module, modules: dict[Path, Module], tree: Path,
                            steps: list[tuple[str, str]], add: Any) -> None:
    name = steps[0][1]
    call = module.calls.get(name)
    if call is None:
        add(f'module.{name}: no module "{name}" in {module.directory}{_suggest(name, module.calls)}')
        return
    rest = _instance_steps("module", call, steps[1:], f"module.{name}", add)
    target = _called_module(module, call, modules, tree)
    if target is not None and rest and rest[0][0] == "attr" and rest[0][1] not in target.outputs:
        add(f'module.{name}.{rest[0][1]}: module {target.directory} has no output "{rest[0][1]}"'
            f"{_suggest(rest[0][1], target.outputs)}")


def _check_resource_reference(module: Module, schemas: dict[str, Schema], kind: str, rtype: str, name: str,
                              steps: list[tuple[str, str]], add: Any) -> None:
    declared = (module.data if kind == "data" else module.resources).get((rtype, name))
    address = f"{'data.' if kind == 'data' else ''}{rtype}.{name}"
    if declared is None:
        known = [f"{t}.{n}" for t, n in (module.data if kind == "data" else module.resources)]
        add(f"{address}: not declared in {module.directory}{_suggest(f'{rtype}.{name}', known)}")
        return
    rest = _instance_steps(kind, declared, steps, address, add)
    schema = schemas.get(_provider_of(module, rtype, declared.body), {}).get(kind, {}).get(rtype)
    if schema is not None and rest and rest[0][0] == "attr":
        attribute = rest[0][1]
        if tf_provider_schema.normalize(attribute) not in schema["computed"]:
            add(f'{address}.{attribute}: {rtype} has no attribute "{attribute}"')


def _called_module(module: Module, call: Block, modules: dict[Path, Module], tree: Path) -> Module | None:
    source = call.body.get("source")
    if not isinstance(source, str) or not source.startswith(("./", "../")):
        return None  # a registry or remote module: not checked here
    return modules.get((tree.parent / module.directory / source).resolve())


def check_declarations(module: Module, modules: dict[Path, Module], tree: Path) -> list[Finding]:
    findings = []
    for kind, declared, allowed, required in (("variable", module.variables, VARIABLE_ARGS, set()),
                                              ("output", module.outputs, OUTPUT_ARGS, {"value"})):
        for name, block in declared.items():
            for arg in block.body:
                if arg not in allowed and arg != BLOCK_MARK:
                    findings.append(Finding(block.path, f"{kind} {name}", f'unsupported argument "{arg}"'
                                                                         f"{_suggest(arg, allowed)}"))
            findings += [Finding(block.path, f"{kind} {name}", f'missing required argument "{arg}"')
                         for arg in sorted(required - set(block.body))]
    for name, call in module.calls.items():
        where = f"module.{name}"
        if "count" in call.body and "for_each" in call.body:
            findings.append(Finding(call.path, where, "count and for_each cannot both be set"))
        source = call.body.get("source")
        target = _called_module(module, call, modules, tree)
        if target is None:
            if isinstance(source, str) and source.startswith(("./", "../")):
                findings.append(Finding(call.path, where, f'source "{source}": no module there'))
            continue
        for arg in call.body:
            if arg not in MODULE_META and arg != BLOCK_MARK and arg not in target.variables:
                findings.append(Finding(call.path, where, f'module {target.directory} has no variable "{arg}"'
                                                          f"{_suggest(arg, target.variables)}"))
        for var, block in target.variables.items():
            if "default" not in block.body and var not in call.body:
                findings.append(Finding(call.path, where, f'missing required variable "{var}" of module '
                                                          f"{target.directory} (it has no default)"))
    for path, tfvars in module.tfvars.items():
        for key in tfvars:
            if key not in module.variables:
                findings.append(Finding(path, "", f'"{key}" is not a variable of {module.directory}'
                                                  f"{_suggest(key, module.variables)}"))
        if path.name == "terraform.tfvars":
            for var, block in module.variables.items():
                if "default" not in block.body and var not in tfvars:
                    findings.append(Finding(path, "", f'required variable "{var}" (no default) is not set'))
    return findings


def check(tree: Path = TERRAFORM, schemas: dict[str, Schema] | None = None) -> list[Finding]:
    """Every finding for the Terraform under tree (terraform/: its modules and environments)."""
    schemas = schemas if schemas is not None else load_schemas()
    modules, findings = load_modules(tree.resolve())
    tree = tree.resolve()
    for module in modules.values():
        findings += check_schema(module, schemas)
        findings += check_references(module, modules, tree, schemas)
        findings += check_declarations(module, modules, tree)
    return findings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tools-python", type=Path, help=f"python with the provider packages ({TOOLS_PYTHON})")
    parser.add_argument("paths", nargs="*", type=Path, default=[TERRAFORM])
    args = parser.parse_args(argv)
    try:
        schemas = load_schemas(args.tools_python)
    except SchemaUnavailable as e:
        print(f"tf_schema: {e}", file=sys.stderr)
        return 2
    findings = [f for path in args.paths for f in check(path, schemas)]
    for finding in findings:
        print(finding)
    sys.stdout.flush()
    versions = ", ".join(f"{p} {s['version']}" for p, s in sorted(schemas.items()) if p != "terraform")
    print(f"tf_schema: {len(findings)} finding(s) against {versions}", file=sys.stderr)
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
