"""Token tagging (UD-POS, NER): one tag per word, predicted on the word's first sub-token.

Words are tokenized with `is_split_into_words`; a sentence longer than max_length is cut into windows
of whole words, so every word gets exactly one prediction. SentencePiece vocabularies (XLM-R, e5) put a
bare "▁" piece before many Chinese and Japanese words ("喜欢" -> "▁", "喜欢"); the label goes on the
word's first piece that has characters, not on that bare marker.
"""

from __future__ import annotations

import numpy as np

from intertask import metrics
from intertask.data.readers import Record
from intertask.errors import DataError
from intertask.tasks.base import EncodedSet, Example, ExampleSet, TaskType

IGNORE = -100  # loss ignore index for sub-tokens after the first and special tokens


class TaggingTask(TaskType):
    version = 2  # 2: the label skips a bare "▁" piece
    kind = metrics.TAGS
    head = "token_classification"

    def model_kwargs(self) -> dict:
        return self.label_kwargs()

    def example(self, uid: int, record: Record) -> Example:
        spec = self.spec
        self.require_fields(record, (spec.text_fields[0], spec.label_field))
        tokens, tags = record.fields[spec.text_fields[0]], record.fields[spec.label_field]
        if len(tokens) != len(tags):
            raise DataError.at(
                record.file,
                record.where,
                "tokens and tags differ in number",
                (len(tokens), len(tags)),
                "one tag per token",
            )
        return Example(uid, tuple(tokens), tuple(self.label_index(t, record) for t in tags))

    def _windows(self, words: tuple[str, ...], word_ids: list, max_length: int) -> list[tuple[int, int]]:
        """Word ranges whose sub-tokens (plus 2 specials) fit max_length, cut at word boundaries."""
        counts = np.bincount([w for w in word_ids if w is not None], minlength=len(words))
        windows, start, used = [], 0, 0
        for i, count in enumerate(counts):
            if used and used + count > max_length - 2:
                windows.append((start, i))
                start, used = i, 0
            used += count
        windows.append((start, len(words)))
        return windows

    def encode(self, data: ExampleSet, tokenizer, max_length: int) -> EncodedSet:
        words = [list(e.texts) for e in data.examples]
        full = tokenizer(words, is_split_into_words=True, truncation=False) if words else None
        bare = {i for i in tokenizer.convert_tokens_to_ids(["▁"]) if i != tokenizer.unk_token_id}
        ids, types, labels, word_index, uids = [], [], [], [], []
        for i, example in enumerate(data.examples):
            pieces = [(full, i, 0)]  # (encoding, row in it, index of its first word)
            if len(full["input_ids"][i]) > max_length:
                pieces = [
                    (
                        tokenizer(
                            [words[i][start:end]],
                            is_split_into_words=True,
                            truncation=True,
                            max_length=max_length,
                        ),
                        0,
                        start,
                    )
                    for start, end in self._windows(example.texts, full.word_ids(i), max_length)
                ]
            for enc, row, offset in pieces:
                positions = self._first_subtokens(enc.word_ids(row), enc["input_ids"][row], offset, bare)
                ids.append(np.asarray(enc["input_ids"][row], np.int32))
                if "token_type_ids" in enc:
                    types.append(np.asarray(enc["token_type_ids"][row], np.int32))
                labels.append(np.array([example.label[w] if w >= 0 else IGNORE for w in positions], np.int64))
                word_index.append(positions)
                uids.append(example.uid)
        inputs = {"input_ids": ids, **({"token_type_ids": types} if types else {})}
        return EncodedSet(inputs, {"labels": labels}, np.array(uids, np.int64), {"word_index": word_index})

    @staticmethod
    def _first_subtokens(word_ids: list, input_ids: list[int], offset: int, bare: set[int]) -> np.ndarray:
        """Per token: the index of the word it starts (shifted by offset), or -1. A word starts on its
        first piece that is not a bare "▁" (when it has such a piece)."""
        out = np.full(len(word_ids), -1, np.int64)
        pieces: dict[int, list[int]] = {}
        for t, w in enumerate(word_ids):
            if w is not None:
                pieces.setdefault(w, []).append(t)
        for w, positions in pieces.items():
            real = [t for t in positions if input_ids[t] not in bare]
            out[(real or positions)[0]] = w + offset
        return out

    def outputs(self, output, rows, encoded) -> list[np.ndarray]:
        best = output.logits.argmax(-1).cpu().numpy()
        return [best[r, : len(encoded.inputs["input_ids"][i])] for r, i in enumerate(rows)]

    def decode(self, outputs, encoded, data) -> list:
        by_uid = {e.uid: np.zeros(len(e.texts), np.int64) for e in data.examples}
        for out, uid, positions in zip(outputs, encoded.uids, encoded.meta["word_index"], strict=True):
            mask = positions >= 0
            by_uid[int(uid)][positions[mask]] = out[mask]
        return [by_uid[e.uid] for e in data.examples]

    def constant_predictions(self, train: ExampleSet, data: ExampleSet) -> list:
        tags = [t for e in train.examples for t in e.label]
        common = int(np.argmax(np.bincount(tags, minlength=len(self.spec.labels))))
        return [np.full(len(e.texts), common, np.int64) for e in data.examples]

    def metric_inputs(self, predictions, data) -> tuple:
        tags = self.spec.labels
        pred = [[tags[i] for i in p] for p in predictions]
        gold = [[tags[i] for i in e.label] for e in data.examples]
        return pred, gold, {}

    def show(self, prediction) -> str:
        return " ".join(self.spec.labels[i] for i in prediction)

    def show_gold(self, example: Example) -> str:
        return self.show(example.label)
