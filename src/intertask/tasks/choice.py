"""Multiple choice (HellaSwag, COPA, CosmosQA style): a context and N candidate endings, one correct.

Each example is one row of shape (choices, tokens): the context paired with every choice, scored by
AutoModelForMultipleChoice (softmax over the choices).
"""

from __future__ import annotations

import numpy as np

from intertask import metrics
from intertask.data.readers import Record
from intertask.errors import DataError
from intertask.tasks.base import EncodedSet, Example, ExampleSet, TaskType


class MultipleChoiceTask(TaskType):
    kind = metrics.SINGLE
    head = "multiple_choice"

    def head_signature(self) -> tuple:
        return (self.head,)

    def example(self, uid: int, record: Record) -> Example:
        """The context (its text_fields joined by context_separator: CosmosQA's context + question, a
        story's four sentences), the choices (a list field, or one field each), and the label (an
        index, or a name among `labels`: 'A'..'E')."""
        spec = self.spec
        choice_names = (spec.choices_field,) if spec.choices_field else spec.choice_fields
        self.require_fields(record, (*spec.text_fields, *choice_names, spec.label_field))
        choices = (
            record.fields[spec.choices_field]
            if spec.choices_field
            else [record.fields[f] for f in spec.choice_fields]
        )
        if not isinstance(choices, list) or len(choices) < 2:
            raise DataError.at(
                record.file,
                record.where,
                f"field {spec.choices_field!r} is not a list of choices",
                choices,
                "a list of at least two strings",
            )
        raw = str(record.fields[spec.label_field]).strip()
        label = (
            spec.labels.index(raw)
            if spec.labels and raw in spec.labels
            else int(raw)
            if raw.isdigit()
            else -1
        )
        if not 0 <= label < len(choices):
            raise DataError.at(
                record.file,
                record.where,
                "label is not the index of a choice",
                raw,
                f"0..{len(choices) - 1}" + (f" or one of {list(spec.labels)}" if spec.labels else ""),
            )
        context = spec.context_separator.join(str(record.fields[f]) for f in spec.text_fields)
        return Example(uid, (context, *map(str, choices)), label)

    def examples(self, records: list[Record]) -> list[Example]:
        out = super().examples(records)
        counts = {len(e.texts) - 1 for e in out}
        if len(counts) > 1:
            first = next(r for r, e in zip(records, out, strict=True) if len(e.texts) != len(out[0].texts))
            raise DataError.at(
                first.file,
                first.where,
                "examples differ in their number of choices",
                sorted(counts),
                "the same number of choices in every example of a task",
            )
        return out

    def encode(self, data: ExampleSet, tokenizer, max_length: int) -> EncodedSet:
        inputs: dict[str, list[np.ndarray]] = {"input_ids": [], "attention_mask": []}
        for example in data.examples:
            context, choices = example.texts[0], list(example.texts[1:])
            enc = tokenizer([context] * len(choices), choices, truncation=True, max_length=max_length)
            width = max(len(ids) for ids in enc["input_ids"])
            for name in ("input_ids", "attention_mask", "token_type_ids"):
                if name not in enc:
                    continue
                fill = tokenizer.pad_token_id if name == "input_ids" else 0
                block = np.full((len(choices), width), fill, np.int32)
                for c, values in enumerate(enc[name]):
                    block[c, : len(values)] = values
                inputs.setdefault(name, []).append(block)
        labels = np.array([e.label for e in data.examples], np.int64)
        return EncodedSet(inputs, {"labels": labels}, data.uids)

    def outputs(self, output, rows, encoded) -> list[np.ndarray]:
        logits = output.logits.float().cpu().numpy()
        return [logits[r, : encoded.inputs["input_ids"][i].shape[0]] for r, i in enumerate(rows)]

    def decode(self, outputs, encoded, data) -> list:
        return [int(np.argmax(o)) for o in outputs]

    def constant_predictions(self, train: ExampleSet, data: ExampleSet) -> list:
        return [int(np.argmax(np.bincount([e.label for e in train.examples])))] * len(data)

    def metric_inputs(self, predictions, data) -> tuple:
        gold = np.array([e.label for e in data.examples], np.int64)
        return np.asarray(predictions, np.int64), gold, {}

    def show_gold(self, example: Example) -> str:
        return str(example.label)
