#!/usr/bin/env python3
"""The Terraform providers' schemas, offline, from the jsii assemblies of their prebuilt cdktf bindings.

    .venv-tools/bin/python scripts/tf_provider_schema.py     cache each provider's schema; print {provider: file}

The PyPI packages cdktf-cdktf-provider-google, -google-beta, -archive and -tls (pinned in
requirements-tools.txt, installed into .venv-tools by `make tools`) are generated from the providers' own schemas
(`terraform providers schema -json`): each ships its jsii assembly (`_jsii/*.jsii.tgz`, file `package/.jsii`),
which describes every resource and data source as a class with a `...Config` struct, every nested block as
a struct, and marks the required properties (not `optional`). This module turns that into a compact schema
and caches it as JSON beside the package's venv (reading the 100 MB assembly takes seconds; the cache
milliseconds). Standard library only, so that it runs in the tools venv, where the packages are; the checker
(scripts/tf_schema.py) runs it there and reads the cache.

What the assembly carries, and so the schema: resource and data source types; each block's arguments
(attributes) and nested block types at every level, which are required, which blocks take at most one
instance; and, in the documentation text, the enumerated values of Magic Modules' enum fields ("Possible
values: [...]"). What it does not carry: ConflictsWith, ExactlyOneOf, AtLeastOneOf, RequiredWith,
validation functions other than those enums, MinItems/MaxItems beyond "at most one", deprecations, and
which computed attributes live inside nested blocks.

jsii names properties in camelCase and renames some (`build` -> `buildAttribute`, `geth_details` ->
`fetchhDetails`, `hugepage_size_1g` -> `hugepageSize1G`), so names are not converted back: each property's
documentation links to the Terraform Registry with the HCL name as anchor (`...#service_config
Cloudfunctions2Function#service_config`), and that anchor is the name used.

Schema format (per provider): {"provider", "version", "assembly", "provider_config": BLOCK,
"resource": {type: BLOCK}, "data": {type: BLOCK}} with BLOCK = {"attributes": {name: {"required": bool,
"enum": [values] or absent}}, "blocks": {name: {"required": bool, "max_one": bool, "block": BLOCK}},
"computed": [attribute names, lower case without underscores]} ("computed" on resources and data sources
only: every attribute that can be referenced, computed or not, as jsii getters name them).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import re
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

# Bump when the extracted format or its rules change, so that stale caches are not read.
FORMAT = 1

# Local provider name (as in required_providers) -> the Python package of its prebuilt cdktf bindings.
PACKAGES = {
    "google": "cdktf_cdktf_provider_google",
    "google-beta": "cdktf_cdktf_provider_google_beta",
    "archive": "cdktf_cdktf_provider_archive",
    "tls": "cdktf_cdktf_provider_tls",
}

_ANCHOR = re.compile(r"#([A-Za-z0-9_]+) [A-Za-z0-9]+#\1\}")
_REGISTRY_LINK = re.compile(
    r"registry\.terraform\.io/providers/[\w-]+/([\w-]+)/([\w.-]+)/docs(?:/(resources|data-sources)/\w+)?"
    r" ([\w-]+)\}")
_POSSIBLE_VALUES = re.compile(r"Possible values: \[((?:\s*\"[^\"]*\"\s*,?)*)\]")

Schema = dict[str, Any]


def normalize(name: str) -> str:
    """The form in which HCL names (`output_md5`) and jsii getters (`outputMd5`) compare equal."""
    return name.replace("_", "").lower()


def _doc_text(docs: dict[str, Any]) -> str:
    # TSDoc sometimes files part of a description (and the Registry link) under a custom tag.
    parts = [docs.get("summary", ""), docs.get("remarks", ""), docs.get("returns", "")]
    parts += [str(v) for v in (docs.get("custom") or {}).values()]
    return "\n".join(parts)


def _hcl_name(prop: dict[str, Any]) -> str:
    anchors = _ANCHOR.findall(_doc_text(prop.get("docs", {})))
    if anchors:
        return anchors[-1]
    # A handful of properties lose their link to mangled docs; camelCase back to snake_case is right for
    # them (plain words), though not in general (digits, renames): hence the anchors first.
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", prop["name"]).lower()


class _Assembly:
    def __init__(self, assembly: dict[str, Any]) -> None:
        self.types: dict[str, Any] = assembly["types"]
        self.name = f"{assembly['name']}@{assembly['version']}"
        self._blocks: dict[str, Schema] = {}

    def _struct(self, jsii_type: dict[str, Any]) -> tuple[str, bool] | None:
        """(struct fqn, at most one) when the property is a nested block: a struct, or a list of structs."""
        fqn = jsii_type.get("fqn")
        if fqn is not None:
            target = self.types.get(fqn)
            return (fqn, True) if target is not None and target.get("datatype") else None
        for member in (jsii_type.get("union") or {}).get("types", []):
            element = (member.get("collection") or {}).get("elementtype")
            found = self._struct(element) if element else None
            if found:
                return found[0], False
        return None

    def block(self, fqn: str) -> Schema:
        if fqn not in self._blocks:
            attributes: dict[str, Any] = {}
            blocks: dict[str, Any] = {}
            for prop in self.types[fqn].get("properties", []):
                name, required = _hcl_name(prop), not prop.get("optional", False)
                struct = self._struct(prop["type"])
                if struct:
                    blocks[name] = {"required": required, "max_one": struct[1], "block": self.block(struct[0])}
                    continue
                attribute: dict[str, Any] = {"required": required}
                if prop["type"].get("primitive") == "string":
                    values = _POSSIBLE_VALUES.search(_doc_text(prop.get("docs", {})))
                    if values:
                        attribute["enum"] = re.findall(r"\"([^\"]*)\"", values.group(1))
                attributes[name] = attribute
            self._blocks[fqn] = {"attributes": attributes, "blocks": blocks}
        return self._blocks[fqn]

    def config_of(self, cls: dict[str, Any]) -> Schema:
        params = {p["name"]: p for p in (cls.get("initializer") or {}).get("parameters", [])}
        return self.block(params["config"]["type"]["fqn"])

    def schema(self) -> Schema:
        out: Schema = {"assembly": self.name, "resource": {}, "data": {}}
        for cls in self.types.values():
            base = cls.get("base")
            if base not in ("cdktf.TerraformResource", "cdktf.TerraformDataSource", "cdktf.TerraformProvider"):
                continue
            link = _REGISTRY_LINK.search(cls.get("docs", {}).get("summary", ""))
            if link is None:
                raise ValueError(f"{self.name}: {cls['fqn']}: no Terraform Registry link in its summary")
            provider, version, _, type_name = link.groups()
            config = dict(self.config_of(cls))
            if base == "cdktf.TerraformProvider":
                out.update(provider=provider, version=version, provider_config=config)
                continue
            names = {p["name"] for p in cls.get("properties", []) if not p.get("static")}
            # cdktf adds a `fooInput` getter beside each configurable `foo`: not an attribute
            getters = {normalize(n) for n in names if not (n.endswith("Input") and n[:-5] in names)}
            config["computed"] = sorted(getters | {normalize(n) for n in config["attributes"]}
                                        | {normalize(n) for n in config["blocks"]})
            out["resource" if base == "cdktf.TerraformResource" else "data"][type_name] = config
        if "provider" not in out:
            raise ValueError(f"{self.name}: no provider class")
        return out


def read_assembly(tgz: Path) -> dict[str, Any]:
    with tarfile.open(tgz, "r:gz") as archive:
        for member in archive:
            if member.name == "package/.jsii":
                handle = archive.extractfile(member)
                assert handle is not None
                return json.load(handle)
    raise ValueError(f"{tgz}: no package/.jsii")


def extract(tgz: Path) -> Schema:
    return _Assembly(read_assembly(tgz)).schema()


def assembly_path(package: str) -> Path | None:
    """The jsii tarball of an installed cdktf provider package, found without importing it (which would start
    the jsii runtime, a Node.js process)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    tarballs = sorted(Path(next(iter(spec.submodule_search_locations)), "_jsii").glob("*.jsii.tgz"))
    return tarballs[0] if tarballs else None


def default_cache_dir() -> Path:
    # Beside the installed packages (a rebuilt venv starts afresh), else in the temporary directory.
    return Path(sys.prefix) / "agex-tf-schema"


def cached(provider: str, tgz: Path, cache_dir: Path) -> Path:
    """The cache file of one provider's schema, extracted first if it is missing or stale."""
    stat = tgz.stat()
    name = re.sub(r"[^\w.-]", "_", tgz.name.removesuffix(".jsii.tgz"))
    target = cache_dir / f"{provider}-{name}-{stat.st_size}-{stat.st_mtime_ns}-v{FORMAT}.json"
    if target.exists():
        return target
    schema = extract(tgz)
    cache_dir.mkdir(parents=True, exist_ok=True)
    # atomic: two test runs may extract at once
    fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=f".{provider}-", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(schema, f, separators=(",", ":"))
    os.chmod(tmp, 0o644)
    os.replace(tmp, target)
    return target


def ensure_cache(cache_dir: Path | None = None) -> tuple[dict[str, Path], list[str]]:
    """({provider: cache file}, [missing packages]) for the providers whose packages this interpreter has."""
    directory = cache_dir or default_cache_dir()
    with contextlib.suppress(OSError):
        directory.mkdir(parents=True, exist_ok=True)
    if not os.access(directory, os.W_OK):
        directory = Path(tempfile.gettempdir()) / "agex-tf-schema"
    files, missing = {}, []
    for provider, package in PACKAGES.items():
        tgz = assembly_path(package)
        if tgz is None:
            missing.append(package)
        else:
            files[provider] = cached(provider, tgz, directory)
    return files, missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, help=f"default: {default_cache_dir()}")
    args = parser.parse_args(argv)
    files, missing = ensure_cache(args.cache_dir)
    json.dump({"files": {k: str(v) for k, v in files.items()}, "missing": missing}, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
