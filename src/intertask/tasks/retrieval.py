"""Sentence retrieval without training (Tatoeba, BUCC 2018): sentence embeddings are the mean-pooled
hidden states of one layer, compared by cosine similarity.

Tatoeba: for every non-English sentence, the nearest English sentence; top-1 accuracy (xx -> en).
BUCC: bitext mining as XTREME does it (after LASER): duplicate sentences embedded once, 4 nearest
neighbours both ways, ratio-margin scores, the best candidate both ways merged greedily, sentences that
occur twice dropped from the id mapping, and precision/recall/F1 of the pairs at or above a score
threshold. The threshold is where F1 against gold pairs is highest (midway to the next candidate), but
never on the gold of the split being scored (that is an oracle F1): as XTREME does, it is chosen on the
language's dev split and used on test; a split without another to learn it from (dev itself, or a task
shipping one split) is cross-fitted: its source sentences cut in two halves (by a hash of their ids),
each half mined with the threshold the other half's gold gives.
"""

from __future__ import annotations

import zlib
from collections import Counter

import numpy as np

from intertask import metrics
from intertask.data.readers import Record
from intertask.data.splits import subsample
from intertask.errors import DataError
from intertask.tasks.base import EncodedSet, Example, ExampleSet, TaskType

NEIGHBOURHOOD = 4  # k of the k-NN means in the margin (XTREME / LASER default)


class RetrievalTask(TaskType):
    head = "none"
    trainable = False

    @property
    def mining(self) -> bool:
        return self.spec.format == "bucc"

    @property
    def kind(self) -> str:  # type: ignore[override]
        return metrics.BITEXT if self.mining else metrics.SINGLE

    def head_signature(self) -> tuple:
        return ("none",)

    def examples(self, records: list[Record]) -> list[Example]:
        """One example per sentence; a source's label lists its gold target ids."""
        gold: dict[str, list[str]] = {}
        for r in records:
            if r.fields["side"] == "gold":
                gold.setdefault(r.fields["source_id"], []).append(r.fields["target_id"])
        sentences = [r for r in records if r.fields["side"] != "gold"]
        if not any(r.fields["side"] == "source" for r in sentences) or not gold:
            where = records[0].file if records else "<no records>"
            raise DataError.at(
                where, "", "no source sentences or no gold pairs", expected="a retrieval test set"
            )
        return [
            Example(
                uid,
                (r.fields["text"],),
                (r.fields["side"], tuple(gold.get(r.fields["id"], ())))
                if r.fields["side"] == "source"
                else ("target", ()),
                key=r.fields["id"],
            )
            for uid, r in enumerate(sentences)
        ]

    def choose(self, examples: tuple[Example, ...], k: int | None, seed: int) -> np.ndarray:
        """k source sentences (seeded), their gold targets, and the same share of the other targets."""
        sources = [i for i, e in enumerate(examples) if e.label[0] == "source"]
        if k is None or k >= len(sources):
            return np.arange(len(examples))
        chosen = np.sort(np.array(sources)[subsample(np.arange(len(sources)), k, seed)])
        wanted = {t for i in chosen for t in examples[i].label[1]}
        targets = np.array([i for i, e in enumerate(examples) if e.label[0] == "target"])
        gold = np.array([i for i in targets if examples[i].key in wanted], dtype=np.int64)
        others = np.setdiff1d(targets, gold)
        extra = others[subsample(np.arange(len(others)), round(len(others) * k / len(sources)), seed)]
        return np.sort(np.concatenate([chosen, gold, extra]))

    def encode(self, data: ExampleSet, tokenizer, max_length: int, prefix: str = "") -> EncodedSet:
        enc = tokenizer([prefix + e.texts[0] for e in data.examples], truncation=True, max_length=max_length)
        inputs = {
            k: [np.asarray(v, np.int32) for v in enc[k]] for k in ("input_ids", "token_type_ids") if k in enc
        }
        return EncodedSet(inputs, {}, data.uids)

    def embed(
        self, encoder, encoded: EncodedSet, *, layer: int, pad_id: int, batch_tokens: int, precision=None
    ) -> np.ndarray:
        """Unit-length mean-pooled hidden states of `layer` (-1 = last, 0 = embeddings) per row, the
        encoder run in `precision` (a hardware.Precision; None: fp32)."""
        import torch  # here, not at the top: the task catalog is read by processes that train nothing

        from intertask.compute.batching import collate, token_budget_batches
        from intertask.compute.hardware import FP32

        precision = precision or FP32

        encoder.eval()
        device = next(encoder.parameters()).device
        out = np.zeros((len(encoded), encoder.config.hidden_size), np.float32)
        with torch.inference_mode():
            for rows in token_budget_batches(encoded.lengths, batch_tokens):
                batch = {
                    k: v.to(device) for k, v in collate(encoded, rows, pad_id, with_targets=False).items()
                }
                with precision.autocast(device.type):
                    hidden = encoder(**batch, output_hidden_states=True).hidden_states[layer].float()
                mask = batch["attention_mask"].unsqueeze(-1).float()
                pooled = (hidden * mask).sum(1) / mask.sum(1)
                out[rows] = torch.nn.functional.normalize(pooled, dim=-1).cpu().numpy()
        return out

    def score_embeddings(
        self, embeddings: np.ndarray, data: ExampleSet, names: tuple[str, ...], threshold: float | None = None
    ):
        """(metrics, the retrieved target id of each source sentence or the mined pairs, per-example
        statistics over the source sentences (metrics.example_stats, with their "uid")). Mining uses
        `threshold` (chosen on another split: `mining_threshold`), else cross-fits one on `data`."""
        sources = [i for i, e in enumerate(data.examples) if e.label[0] == "source"]
        targets = [i for i, e in enumerate(data.examples) if e.label[0] == "target"]
        if self.mining:
            return self._mine(embeddings, data, sources, names, threshold)
        similarity = embeddings[sources] @ embeddings[targets].T
        retrieved = [data.examples[targets[j]].key for j in similarity.argmax(axis=1)]
        hits = np.array([key in data.examples[i].label[1] for key, i in zip(retrieved, sources, strict=True)])
        pred, gold = hits.astype(np.int64), np.ones(len(hits), np.int64)
        values = metrics.score(self.kind, names, pred, gold)
        stats = metrics.example_stats(self.kind, pred, gold)
        return values, retrieved, {"uid": data.uids[sources], **stats}

    def mining_threshold(self, embeddings: np.ndarray, data: ExampleSet) -> float:
        """The threshold with the best F1 on `data`'s own gold pairs: for use on another split."""
        scored, gold = self._scored(embeddings, data)
        return best_threshold(scored, gold)

    def _scored(self, embeddings, data) -> tuple[dict[tuple[str, str], float], set[tuple[str, str]]]:
        """Every mined candidate pair with its margin score, and the gold pairs."""
        sources = [i for i, e in enumerate(data.examples) if e.label[0] == "source"]
        targets = [i for i, e in enumerate(data.examples) if e.label[0] == "target"]
        src = _Side([data.examples[i] for i in sources], embeddings[sources])
        trg = _Side([data.examples[i] for i in targets], embeddings[targets])
        scored: dict[tuple[str, str], float] = {}
        for score, i, j in mine_candidates(src.vectors, trg.vectors):
            if src.ids[i] is not None and trg.ids[j] is not None:
                key = (src.ids[i], trg.ids[j])
                scored[key] = max(score, scored.get(key, score))
        return scored, {(e.key, t) for e in src.examples for t in e.label[1]}

    def _mine(self, embeddings, data, sources, names, threshold):
        src = _Side([data.examples[i] for i in sources], embeddings[sources])
        scored, gold = self._scored(embeddings, data)
        if threshold is None:
            mined = cross_fitted(scored, gold)
        else:
            mined = {pair for pair, score in scored.items() if score >= threshold}
        values = metrics.score(self.kind, names, mined, gold)
        stats = metrics.example_stats(self.kind, mined, gold, sources=[e.key for e in src.examples])
        uids = np.array([e.uid for e in src.examples], np.int64)
        return values, sorted(f"{s}\t{t}" for s, t in mined), {"uid": uids, **stats}

    def decode(self, outputs, encoded, data) -> list:
        raise NotImplementedError("retrieval is scored from embeddings (score_embeddings)")

    def score(self, predictions, data, names) -> dict[str, float]:
        raise NotImplementedError("retrieval is scored from embeddings (score_embeddings)")


class _Side:
    """One side of a mining problem: unique sentences, their vectors, and an id per unique sentence
    (None when the sentence occurs more than once: its id is ambiguous, as XTREME drops it)."""

    def __init__(self, examples: list[Example], vectors: np.ndarray):
        self.examples = examples
        texts = [e.texts[0].strip() for e in examples]
        counts = Counter(texts)
        first: dict[str, int] = {}
        for i, text in enumerate(texts):
            first.setdefault(text, i)
        order = sorted(first.values())
        self.vectors = vectors[order]
        self.ids = [examples[i].key if counts[texts[i]] == 1 else None for i in order]


def _knn_mean(x: np.ndarray, y: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """For each row of x: the mean cosine of its k nearest rows of y, and their indices."""
    sims = x @ y.T
    k = min(k, y.shape[0])
    idx = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    return np.take_along_axis(sims, idx, axis=1).mean(axis=1), idx


def mine_candidates(x: np.ndarray, y: np.ndarray, k: int = NEIGHBOURHOOD) -> list[tuple[float, int, int]]:
    """(margin score, x index, y index) of the pairs kept by max-retrieval with the ratio margin."""
    x_mean, x_nn = _knn_mean(x, y, k)
    y_mean, y_nn = _knn_mean(y, x, k)

    def best(a, b, nn, a_mean, b_mean):
        # ratio margin: cos(a, b) / ((mean_k(a) + mean_k(b)) / 2), over a's k candidates
        scores = np.einsum("id,ikd->ik", a, b[nn]) / ((a_mean[:, None] + b_mean[nn]) / 2)
        choice = scores.argmax(axis=1)
        return scores[np.arange(len(a)), choice], nn[np.arange(len(a)), choice]

    fwd_score, fwd_best = best(x, y, x_nn, x_mean, y_mean)
    bwd_score, bwd_best = best(y, x, y_nn, y_mean, x_mean)
    pairs = [(float(s), i, int(j)) for i, (s, j) in enumerate(zip(fwd_score, fwd_best, strict=True))]
    pairs += [(float(s), int(i), j) for j, (s, i) in enumerate(zip(bwd_score, bwd_best, strict=True))]
    kept, used_x, used_y = [], set(), set()
    for score, i, j in sorted(pairs, key=lambda p: -p[0]):
        if i not in used_x and j not in used_y:
            used_x.add(i)
            used_y.add(j)
            if score > 0:
                kept.append((score, i, j))
    return kept


def cross_fitted(scored: dict[tuple[str, str], float], gold: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """Pairs mined without looking at their own gold: the source sentences in two halves (by a hash of
    the source id), each half's candidates kept at the threshold the other half's gold gives."""

    def half(source: str) -> int:
        return zlib.crc32(source.encode()) % 2

    mined = set()
    for side in (0, 1):
        fit = {p: v for p, v in scored.items() if half(p[0]) != side}
        threshold = best_threshold(fit, {p for p in gold if half(p[0]) != side})
        mined |= {p for p, v in scored.items() if half(p[0]) == side and v >= threshold}
    return mined


def best_threshold(scored: dict[tuple[str, str], float], gold: set[tuple[str, str]]) -> float:
    """The score threshold with the best F1 against `gold`: midway between the last candidate taken
    and the next (or that candidate's score when it is the last)."""
    ranked = sorted(scored.items(), key=lambda item: -item[1])
    threshold, best_f1, correct = 0.0, 0.0, 0
    for n, (pair, score) in enumerate(ranked, start=1):
        correct += pair in gold
        if correct:
            precision, recall = correct / n, correct / len(gold)
            f1 = 2 * precision * recall / (precision + recall)
            if f1 > best_f1:
                following = ranked[n][1] if n < len(ranked) else score
                best_f1, threshold = f1, (score + following) / 2
    return threshold
