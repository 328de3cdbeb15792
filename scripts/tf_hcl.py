"""Reading the Terraform under terraform/ with python-hcl2: shared by the infrastructure tests
(tests/infra) and the schema checker (scripts/tf_schema.py), so that both see the same parse."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hcl2
from hcl2 import SerializationOptions

ROOT = Path(__file__).resolve().parents[1]
TERRAFORM = ROOT / "terraform"

# Plain Python values: blocks are lists of dicts, labels and string literals without their quotes,
# expressions (and strings with interpolations) as text, e.g. "${google_service_account.step.email}" or
# "serviceAccount:${google_service_account.agent.email}".
HCL_OPTIONS = SerializationOptions(with_comments=False, explicit_blocks=False, strip_string_quotes=True,
                                   preserve_heredocs=False)
# The same, with each block's body marked `"__is_block__": True`: tells `labels = {...}` (an argument
# whose value is a map) and `x = [{...}]` from blocks, which the schema checks need.
BLOCK_OPTIONS = SerializationOptions(with_comments=False, explicit_blocks=True, strip_string_quotes=True,
                                     preserve_heredocs=False)
BLOCK_MARK = "__is_block__"


class HclError(Exception):
    pass


def loads(source: str, options: SerializationOptions = HCL_OPTIONS) -> dict[str, Any]:
    try:
        return hcl2.loads(source, serialization_options=options)
    except Exception as e:  # the parser raises lark's and its own errors
        raise HclError(f"does not parse as HCL: {e}") from e


def load(path: Path, options: SerializationOptions = HCL_OPTIONS) -> dict[str, Any]:
    try:
        return loads(path.read_text(), options)
    except HclError as e:
        raise HclError(f"{path} {e}") from e.__cause__


def terraform_paths(pattern: str, root: Path = TERRAFORM) -> list[Path]:
    """Files under root matching pattern, except Terraform's own working directories (.terraform)."""
    return sorted(p for p in root.rglob(pattern)
                  if not any(part.startswith(".terraform") for part in p.relative_to(root).parts[:-1]))


def blocks(body: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """The nested blocks `key { ... }` of a body (python-hcl2 gives a list of dicts; tolerate one dict)."""
    value = body.get(key)
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, dict)]
    return []


def strings(value: Any) -> Iterator[str]:
    """Every string in a parsed value, dict keys (labels, attribute names) included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            if k == BLOCK_MARK:
                continue
            yield str(k)
            yield from strings(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from strings(v)


def text(value: Any) -> str:
    return "\n".join(strings(value))
