"""Multi-task sampling weights (jiant's samplers) and checkpoint selection."""

import pytest
import torch

from intertask.config import SamplingConfig
from intertask.training import TrainPart, clip_gradients, sampling_weights, selection_score

SIZES = {"small": 1000, "large": 9000}


@pytest.mark.parametrize(
    "sampling, expected",
    [
        (SamplingConfig(strategy="proportional"), {"small": 0.1, "large": 0.9}),
        (SamplingConfig(strategy="uniform"), {"small": 0.5, "large": 0.5}),
        (
            SamplingConfig(strategy="temperature", temperature=2.0),
            {"small": 0.25, "large": 0.75},
        ),  # sqrt: 31.6 : 94.9
        (SamplingConfig(strategy="temperature", temperature=1.0), {"small": 0.1, "large": 0.9}),
        (SamplingConfig(strategy="proportional", examples_cap=2000), {"small": 1 / 3, "large": 2 / 3}),
    ],
)
def test_sampling_weights(sampling, expected):
    weights = sampling_weights(SIZES, sampling)
    assert weights == pytest.approx(expected, abs=1e-9)
    assert sum(weights.values()) == pytest.approx(1.0)


def _part(name, metric):
    return TrainPart(name, None, None, None, None, None, metric)


def test_selection_on_a_named_task_or_the_mean():
    parts = [_part("xnli", "accuracy"), _part("tydiqa", "f1"), _part("udpos", "f1")]
    dev = {"xnli": {"accuracy": 0.6}, "tydiqa": {"f1": 0.3, "exact_match": 0.1}, "udpos": {"f1": 0.9}}
    assert selection_score(dev, parts, None) == pytest.approx(0.6)  # (0.6 + 0.3 + 0.9) / 3
    assert selection_score(dev, parts, "tydiqa") == pytest.approx(0.3)


def test_clipping_sparse_gradients_matches_torch_on_their_dense_form():
    torch.manual_seed(0)
    rows = torch.tensor([[1, 3, 3, 7]])
    values = torch.randn(4, 5)
    dense_grad = torch.zeros(10, 5).index_add_(0, rows[0], values)  # row 3 appears twice: summed
    bias_grad = torch.randn(5) * 4

    def params(sparse: bool) -> list[torch.nn.Parameter]:
        weight, bias = torch.nn.Parameter(torch.zeros(10, 5)), torch.nn.Parameter(torch.zeros(5))
        weight.grad = (
            torch.sparse_coo_tensor(rows, values, (10, 5), check_invariants=True)
            if sparse
            else dense_grad.clone()
        )
        bias.grad = bias_grad.clone()
        return [weight, bias]

    reference, ours = params(sparse=False), params(sparse=True)
    expected = torch.nn.utils.clip_grad_norm_(reference, 0.5)
    total = float(clip_gradients(ours, 0.5))
    assert total == pytest.approx(float(expected), rel=1e-6) and total > 0.5  # it did clip
    assert torch.allclose(ours[0].grad.to_dense(), reference[0].grad, atol=1e-7)
    assert torch.allclose(ours[1].grad, reference[1].grad, atol=1e-7)
    small = params(sparse=True)
    assert float(clip_gradients(small, 1e6)) == pytest.approx(
        float(dense_grad.norm().hypot(bias_grad.norm()))
    )
    assert torch.allclose(small[0].grad.to_dense(), dense_grad)  # under the limit: untouched


@pytest.mark.parametrize("total, ratio", [(100, 0.1), (37, 0.06), (64, 0.0), (88, 0.1)])
def test_the_schedule_is_the_hugging_face_trainers(tmp_path, total, ratio):
    """Learning rate of every step equals the HF Trainer's for the same warm-up ratio (its
    `warmup_steps` < 1 is a ratio, rounded up); the peak comes after the warm-up, not one step early."""
    from transformers import Trainer, TrainingArguments

    from intertask.training import _schedule, warmup_steps

    def rates(scheduler, optimizer):
        out = []
        for _ in range(total):
            out.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        return out

    model = torch.nn.Linear(2, 2)
    ours = torch.optim.AdamW(model.parameters(), lr=5e-5)
    mine = rates(_schedule(ours, total, ratio), ours)
    args = TrainingArguments(
        output_dir=str(tmp_path), learning_rate=5e-5, warmup_steps=ratio, report_to=[], use_cpu=True
    )
    trainer = Trainer(model=model, args=args)
    trainer.create_optimizer_and_scheduler(num_training_steps=total)
    theirs = rates(trainer.lr_scheduler, trainer.optimizer)
    assert mine == pytest.approx(theirs, rel=1e-12, abs=0)
    warm = warmup_steps(total, ratio)
    assert warm == args.get_warmup_steps(total)
    assert mine[0] == (0.0 if warm else 5e-5)
    assert max(mine) == pytest.approx(5e-5) and mine.index(max(mine)) == warm
