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
the answer "", and F1 against "" is 1 only for "".
"""

from __future__ import annotations

import numpy as np

from intertask import metrics
from intertask.data.readers import Record
from intertask.errors import DataError
from intertask.tasks.base import EncodedSet, Example, ExampleSet, TaskType

MAX_QUESTION_SHARE = 0.5  # a question may use at most half of max_length; longer ones are cut


class QATask(TaskType):
    kind = metrics.SPANS
    head = "question_answering"

    def head_signature(self) -> tuple:
        return (self.head,)  # any extractive QA head answers any extractive QA task

    def example(self, uid: int, record: Record) -> Example:
        self.require_fields(record, ("question", "context", "answers", "answer_starts"))
        f = record.fields
        answers = tuple(zip(f["answers"], (int(s) for s in f["answer_starts"]), strict=True))
        return Example(uid, (f["question"], f["context"]), answers, key=str(f["id"]))

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

    def decode(self, outputs, encoded, data) -> list:
        best: dict[int, tuple[float, int, int]] = {}
        null: dict[int, float] = {}
        for logits, uid, spans in zip(outputs, encoded.uids, encoded.meta["offsets"], strict=True):
            uid = int(uid)
            candidate = self._best_span(logits, spans)
            if candidate and (uid not in best or candidate[0] > best[uid][0]):
                best[uid] = candidate
            null[uid] = min(null.get(uid, np.inf), float(logits[0][0] + logits[1][0]))
        answers = []
        for e in data.examples:
            if e.uid not in best or (
                self.spec.no_answer and null[e.uid] - best[e.uid][0] > self.spec.null_threshold
            ):
                answers.append("")
            else:
                answers.append(e.texts[1][best[e.uid][1] : best[e.uid][2]])
        return answers

    def metric_inputs(self, predictions, data) -> tuple:
        gold = [[text for text, _ in e.label] for e in data.examples]
        normalization = self.spec.normalization
        if self.spec.no_answer:
            normalization = "squad_v2"
            gold = [[t for t in g if metrics.normalize_answer(t, normalization)] or [""] for g in gold]
        return list(predictions), gold, {"normalization": normalization, "language": data.language}

    def show_gold(self, example: Example) -> str:
        return " | ".join(text for text, _ in example.label)
