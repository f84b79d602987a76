"""Extractive QA on SQuAD v1.1 JSON (SQuAD, XQuAD, MLQA, TyDiQA-GoldP).

A context longer than max_length is read in overlapping windows (stride `doc_stride` tokens). Training
targets are the first gold answer's token span in the window that contains it whole, else the [CLS]
position. Decoding takes the `n_best` start and end logits of every window, keeps spans inside the
context of at most `max_answer_length` tokens, and maps the best-scoring one back to the original
context's characters.

With `no_answer` (SQuAD v2.0) a question without answers trains every window to [CLS]; a question
gets "no answer" when the smallest [CLS] score over its windows (start + end logit at position 0, as
Hugging Face's run_squad takes it) beats its best span's score by more than `null_threshold`. Scores
follow the official v2.0 script: gold answers that normalise to nothing are dropped, an empty list is
the answer "", and F1 against "" is 1 only for "". The training stage chooses the threshold on its dev
set with the script's best-threshold search and saves it beside the model (NULL_THRESHOLDS); an
evaluation of that model uses it, `null_threshold` being the fallback.
"""

from __future__ import annotations

import numpy as np

from intertask import metrics
from intertask.data.readers import Record
from intertask.errors import DataError
from intertask.tasks.base import EncodedSet, Example, ExampleSet, TaskType

MAX_QUESTION_SHARE = 0.5  # a question may use at most half of max_length; longer ones are cut
NULL_THRESHOLDS = "null_thresholds.json"  # beside a trained model: task -> the null threshold chosen on dev


class QATask(TaskType):
    kind = metrics.SPANS
    head = "question_answering"

    def head_signature(self) -> tuple:
        return (self.head,)  # any extractive QA head answers any extractive QA task

    def example(self, uid: int, record: Record) -> Example:
        self.require_fields(record, ("question", "context", "answers", "answer_starts"))
        f = record.fields
        answers = tuple(zip(f["answers"], (int(s) for s in f["answer_starts"]), strict=True))
        return Example(uid, (f["question"], f["context"]), answers, key=str(f.get("id", uid)))

    def examples(self, records: list[Record]) -> list[Example]:
        out = super().examples(records)
        if out and not self.spec.no_answer and not any(text for e in out for text, _ in e.label):
            raise DataError.at(
                records[0].file,
                "",
                "no gold answers: every answer text is empty (a release with its labels stripped?)",
                f"{len(out)} questions",
                "answer texts to score against",
            )
        return out

    def _questions(self, data: ExampleSet, tokenizer, max_length: int) -> tuple[list[str], int]:
        """Questions cut to half of max_length, and the window overlap that fits beside the longest.

        The context room of a window is max_length - question - the tokenizer's special tokens. The
        overlap is the declared doc_stride, but at most half that room, so a window always moves on by
        at least half its room: with max_length 384 and 40-token questions the declared 128 is kept;
        with max_length 128 it becomes about 40 (not "room - 1", which would move by one token).
        """
        limit = int(max_length * MAX_QUESTION_SHARE)
        questions = [e.texts[0] for e in data.examples]
        enc = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True)
        cut = [
            q if len(offsets) <= limit else q[: offsets[limit - 1][1]]
            for q, offsets in zip(questions, enc["offset_mapping"], strict=True)
        ]
        longest = max(min(len(o), limit) for o in enc["offset_mapping"])
        room = max_length - longest - tokenizer.num_special_tokens_to_add(pair=True)
        return cut, max(1, min(self.spec.doc_stride, room // 2))

    def encode(self, data: ExampleSet, tokenizer, max_length: int) -> EncodedSet:
        if not data.examples:
            return EncodedSet(
                {"input_ids": []},
                {"start_positions": np.zeros(0, np.int64), "end_positions": np.zeros(0, np.int64)},
                np.zeros(0, np.int64),
                {"offsets": []},
            )
        questions, stride = self._questions(data, tokenizer, max_length)
        enc = tokenizer(
            questions,
            [e.texts[1] for e in data.examples],
            truncation="only_second",
            max_length=max_length,
            stride=stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
        )
        owner = enc["overflow_to_sample_mapping"]
        offsets, starts, ends = [], [], []
        for row in range(len(enc["input_ids"])):
            sequence = enc.sequence_ids(row)
            spans = np.array(
                [
                    o if s == 1 else (-1, -1)
                    for o, s in zip(enc["offset_mapping"][row], sequence, strict=True)
                ],
                np.int64,
            )
            offsets.append(spans)
            start, end = self._target(spans, data.examples[owner[row]])
            starts.append(start)
            ends.append(end)
        inputs = {
            k: [np.asarray(v, np.int32) for v in enc[k]] for k in ("input_ids", "token_type_ids") if k in enc
        }
        uids = np.array([data.examples[i].uid for i in owner], np.int64)
        targets = {"start_positions": np.array(starts, np.int64), "end_positions": np.array(ends, np.int64)}
        return EncodedSet(inputs, targets, uids, {"offsets": offsets})

    @staticmethod
    def _target(spans: np.ndarray, example: Example) -> tuple[int, int]:
        """Token span of the first answer if this window holds it whole, else (0, 0) = [CLS]."""
        if not example.label:
            return 0, 0
        text, char_start = example.label[0]
        char_end = char_start + len(text)
        inside = np.flatnonzero(spans[:, 0] >= 0)
        if not len(inside) or spans[inside[0], 0] > char_start or spans[inside[-1], 1] < char_end:
            return 0, 0
        start = inside[spans[inside, 0] <= char_start][-1]
        end = inside[spans[inside, 1] >= char_end][0]
        return int(start), int(end)

    def outputs(self, output, rows, encoded) -> list[np.ndarray]:
        start = output.start_logits.float().cpu().numpy()
        end = output.end_logits.float().cpu().numpy()
        return [
            np.stack(
                [
                    start[r, : len(encoded.inputs["input_ids"][i])],
                    end[r, : len(encoded.inputs["input_ids"][i])],
                ]
            )
            for r, i in enumerate(rows)
        ]

    def _best_span(self, logits: np.ndarray, spans: np.ndarray) -> tuple[float, int, int] | None:
        n = self.spec.n_best
        valid = spans[:, 0] >= 0
        best = None
        for s in np.argsort(-logits[0])[:n]:
            for e in np.argsort(-logits[1])[:n]:
                if not (valid[s] and valid[e]) or e < s or e - s + 1 > self.spec.max_answer_length:
                    continue
                score = float(logits[0][s] + logits[1][e])
                if best is None or score > best[0]:
                    best = (score, int(spans[s, 0]), int(spans[e, 1]))
        return best

    def spans_and_margins(self, outputs, encoded, data) -> tuple[list[str], np.ndarray]:
        """Each question's best span ("" when no window has one) and its null margin: the smallest
        [CLS] score over its windows minus the best span's score (+inf without a span)."""
        best: dict[int, tuple[float, int, int]] = {}
        null: dict[int, float] = {}
        for logits, uid, spans in zip(outputs, encoded.uids, encoded.meta["offsets"], strict=True):
            uid = int(uid)
            candidate = self._best_span(logits, spans)
            if candidate and (uid not in best or candidate[0] > best[uid][0]):
                best[uid] = candidate
            null[uid] = min(null.get(uid, np.inf), float(logits[0][0] + logits[1][0]))
        texts = [e.texts[1][best[e.uid][1] : best[e.uid][2]] if e.uid in best else "" for e in data.examples]
        margins = np.array([null[e.uid] - best[e.uid][0] if e.uid in best else np.inf for e in data.examples])
        return texts, margins

    def decode(self, outputs, encoded, data) -> list:
        texts, margins = self.spans_and_margins(outputs, encoded, data)
        if not self.spec.no_answer:
            return texts
        return ["" if m > self.spec.null_threshold else t for t, m in zip(texts, margins, strict=True)]

    def best_null_threshold(self, texts: list[str], margins: np.ndarray, data: ExampleSet) -> float:
        """The null threshold with the best F1 on `data` (dev), as the SQuAD v2.0 script's best-threshold
        search: start from "no answer" everywhere, give questions their span in order of rising margin,
        keep the margin after which the summed F1 was highest (0 if "no answer" everywhere is best)."""
        _, gold, options = self.metric_inputs(texts, data)
        f1 = metrics.example_stats(metrics.SPANS, texts, gold, **options)["f1"]
        answerable = np.array([metrics.has_answer(g) for g in gold])
        score = best = float((~answerable).sum())  # every question "no answer"
        threshold = 0.0
        for i in np.argsort(margins, kind="stable"):
            if not np.isfinite(margins[i]):
                break
            score += f1[i] if answerable[i] else -1.0 if texts[i] else 0.0
            if score > best:
                best, threshold = score, float(margins[i])
        return threshold

    def metric_inputs(self, predictions, data) -> tuple:
        gold = [[text for text, _ in e.label] for e in data.examples]
        normalization = self.spec.normalization
        if self.spec.no_answer:
            normalization = "squad_v2"
            gold = [[t for t in g if metrics.normalize_answer(t, normalization)] or [""] for g in gold]
        return list(predictions), gold, {"normalization": normalization, "language": data.language}

    def show_gold(self, example: Example) -> str:
        return " | ".join(text for text, _ in example.label)
