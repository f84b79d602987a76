"""Batches that keep padding low: length-grouped training batches, token-budget evaluation batches,
and padding of ragged rows into tensors."""

from __future__ import annotations

import numpy as np
import torch

IGNORE_INDEX = -100  # padded positions of per-token targets (the loss ignores them)


def length_grouped_batches(
    lengths: np.ndarray, batch_size: int, rng: np.random.Generator, *, window: int
) -> list[np.ndarray]:
    """Shuffled batches of similar length: shuffle, sort within windows of `window` batches, shuffle
    batches.

    With batch 16 and PAWS-X pairs (mean 63 tokens, max ~128) windows of 50 batches leave 2 % padding,
    of 8 batches 8 %; every epoch still sees a different order. Smaller windows mix lengths within a
    batch more (see BENCHMARKS.md for what that did to accuracy on SST-2).
    """
    order = rng.permutation(len(lengths))
    window = batch_size * window
    batches = []
    for start in range(0, len(order), window):
        chunk = order[start : start + window]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def shuffled_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    order = rng.permutation(len(lengths))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def token_budget_batches(lengths: np.ndarray, max_tokens: int) -> list[np.ndarray]:
    """Length-sorted batches whose padded size (rows x longest row) stays within max_tokens."""
    order = np.argsort(-lengths, kind="stable")
    batches, current, longest = [], [], 0
    for i in order:
        longest_if_added = max(longest, int(lengths[i]))
        if current and longest_if_added * (len(current) + 1) > max_tokens:
            batches.append(np.array(current))
            current, longest_if_added = [], int(lengths[i])
        current.append(i)
        longest = longest_if_added
    if current:
        batches.append(np.array(current))
    return batches


def pad(arrays: list[np.ndarray], fill: int) -> torch.Tensor:
    """1-d rows -> (batch, longest); 2-d rows (choices x tokens) -> (batch, choices, longest)."""
    width = max(a.shape[-1] for a in arrays)
    out = np.full((len(arrays), *arrays[0].shape[:-1], width), fill, dtype=np.int64)
    for r, a in enumerate(arrays):
        out[r, ..., : a.shape[-1]] = a
    return torch.from_numpy(out)


def collate(encoded, rows: np.ndarray, pad_id: int, with_targets: bool = True) -> dict[str, torch.Tensor]:
    """Model inputs (and targets) of the chosen rows; attention_mask marks real tokens."""
    batch = {
        name: pad([values[i] for i in rows], pad_id if name == "input_ids" else 0)
        for name, values in encoded.inputs.items()
    }
    if "attention_mask" not in batch:
        mask = [np.ones(len(encoded.inputs["input_ids"][i]), np.int64) for i in rows]
        batch["attention_mask"] = pad(mask, 0)
    if with_targets:
        for name, target in encoded.targets.items():
            if isinstance(target, np.ndarray):
                batch[name] = torch.from_numpy(target[rows])
            else:
                batch[name] = pad([target[i] for i in rows], IGNORE_INDEX)
    return batch
