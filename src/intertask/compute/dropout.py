"""Dropout on CPU with a cheaper random mask: the largest cost of a training step after the products.

torch's CPU dropout draws one Bernoulli sample per element (about 7 ns each on 2 cores: 13-20 % of an
e5-small training step, BENCHMARKS.md). Here an element is kept when 16 random bits exceed p x 65536;
the bits come four to an int64 from torch's generator (a quarter of its calls), so the keep rate is
1 - p with p rounded to a multiple of 1/65536 (0.1 -> 0.100006), and a seed gives the same masks on
every run. Forward and backward are one multiply each, as in torch's.

`fast_dropout(model)` swaps it in for the steps of a CPU training epoch, and swaps torch's back for
everything else (dev evaluation, saving, inference): every `nn.Dropout` of the model, and, for models
that use transformers' attention interface (BERT, RoBERTa, XLM-R, ELECTRA), the attention-probability
dropout, through an attention function that computes exactly transformers' eager attention with this
dropout. Models with their own attention code (XLNet, DeBERTa) keep torch's attention dropout.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

ATTENTION = "intertask_cpu"  # the attention implementation registered with transformers
_BITS = 16


def keep_mask(shape: torch.Size, p: float) -> torch.Tensor:
    """A boolean mask, True with probability 1 - round(p * 65536) / 65536 per element."""
    n = shape.numel()
    words = torch.randint(-(2**63), 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64)
    bits = words.view(torch.int16)[:n].view(shape)  # uniform over -32768 .. 32767
    return bits >= -(2 ** (_BITS - 1)) + round(p * 2**_BITS)


class _Dropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float) -> torch.Tensor:
        keep = keep_mask(x.shape, p)
        ctx.save_for_backward(keep)
        ctx.scale = 1.0 / (1.0 - p)
        return x * keep * ctx.scale

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (keep,) = ctx.saved_tensors
        return grad * keep * ctx.scale, None


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout with the cheaper mask (torch's own off CPU, for p outside (0, 1) and in eval)."""
    if not training or p <= 0.0 or p >= 1.0 or x.device.type != "cpu":
        return torch.nn.functional.dropout(x, p, training)
    return _Dropout.apply(x, p)


class FastDropout(torch.nn.Module):
    """nn.Dropout with the cheaper mask."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)


def _attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers' eager attention (scores, additive mask, softmax, dropout, weighted values), with
    this module's dropout on the attention probabilities."""
    scaling = query.size(-1) ** -0.5 if scaling is None else scaling
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask
    probs = torch.nn.functional.softmax(scores, dim=-1)
    probs = _module_dropout(probs, dropout, module.training)
    return torch.matmul(probs, value).transpose(1, 2).contiguous(), probs


_module_dropout = dropout  # the name `dropout` is the attention functions' argument


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, eager_mask

    if ATTENTION not in AttentionInterface._global_mapping:
        AttentionInterface.register(ATTENTION, _attention)
        ALL_MASK_ATTENTION_FUNCTIONS.register(ATTENTION, eager_mask)


@contextmanager
def fast_dropout(model: torch.nn.Module, enabled: bool = True) -> Iterator[None]:
    """Within the block, `model`'s dropout uses the cheaper mask; afterwards the model is as before."""
    if not enabled:
        yield
        return
    swapped = []
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is torch.nn.Dropout and child.p > 0:
                setattr(parent, name, FastDropout(child.p).train(child.training))
                swapped.append((parent, name, child))
    attention = [  # models whose attention goes through transformers' AttentionInterface
        m
        for m in model.modules()
        if hasattr(m, "set_attn_implementation")
        and getattr(m, "_can_set_attn_implementation", lambda: False)()
    ]
    previous = []
    for m in attention:
        implementation = getattr(m.config, "_attn_implementation", None)
        if implementation in ("sdpa", "eager"):
            _register()
            previous.append((m, implementation))
            m.set_attn_implementation(ATTENTION)
    try:
        yield
    finally:
        for parent, name, child in swapped:
            setattr(parent, name, child)
        for m, implementation in previous:
            m.set_attn_implementation(implementation)
