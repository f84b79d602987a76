"""Multi-task sampling weights (jiant's samplers) and checkpoint selection."""

import pytest
import torch

from intertask.compute.training import TrainPart, clip_gradients, sampling_weights, selection_score
from intertask.config import SamplingConfig

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

    from intertask.compute.training import _schedule, warmup_steps

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


def test_gradient_accumulation_over_k_steps_equals_one_step_of_k_times_the_batch(tiny_model, tmp_path):
    """One optimizer step over 32 PAWS-X pairs on the tiny model (dropout off, fp32): as 4 accumulated
    micro-batches of 8 and as one batch of 32 it gives the same weights, to float tolerance; and an
    epoch counts optimizer steps of batch_size x gradient_accumulation_steps examples."""
    import shutil

    from transformers import AutoConfig

    from intertask.compute.encoding import encode
    from intertask.compute.modeling import HeadSpec, build_models, load_tokenizer
    from intertask.compute.training import train
    from intertask.config import SplitFractions, TrainingConfig
    from intertask.data import data_root
    from intertask.tasks import builtin_catalog
    from intertask.tasks.examples import load_examples
    from intertask.tasks.types import task_type

    folder = tmp_path / "no-dropout"
    shutil.copytree(tiny_model, folder)
    config = AutoConfig.from_pretrained(folder)
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0
    config.save_pretrained(folder)
    spec = builtin_catalog().spec("pawsx")
    task, tokenizer = task_type(spec), load_tokenizer(str(folder))

    def examples(split, n):
        return load_examples(
            spec, "en", split, root=data_root(), fractions=SplitFractions().as_dict(), seed=3, max_examples=n
        )

    train_set, dev_set = examples("train", 32), examples("dev", 8)
    head = HeadSpec("pawsx", task.head, task.model_kwargs(), task.head_signature())

    def run(batch_size, accumulate, epochs=1):
        model = build_models(str(folder), [head], seed=3)["pawsx"]
        start = {n: p.detach().clone() for n, p in model.named_parameters()}
        part = TrainPart(
            "pawsx",
            task,
            model,
            encode(task, train_set, tokenizer, 64, None),
            encode(task, dev_set, tokenizer, 64, None),
            dev_set,
            "accuracy",
        )
        settings = TrainingConfig(
            epochs=epochs,
            batch_size=batch_size,
            gradient_accumulation_steps=accumulate,
            learning_rate=1e-3,
            warmup_ratio=0.0,
            precision="fp32",
            group_by_length=False,
            checkpoints=False,
        )
        result = train([part], settings, seed=3, pad_id=tokenizer.pad_token_id, sampling=SamplingConfig())
        return result, start, {n: p.detach().clone() for n, p in model.named_parameters()}

    whole, start, one_batch = run(32, 1)
    accumulated, _, four_micro = run(8, 4)
    assert whole.steps == accumulated.steps == 1
    assert accumulated.batches_per_task == {"pawsx": 4}
    assert max(float((one_batch[n] - start[n]).abs().max()) for n in start) > 1e-4  # the step moved
    for name in start:
        torch.testing.assert_close(four_micro[name], one_batch[name], rtol=1e-4, atol=1e-6, msg=name)
    two_epochs, _, _ = run(8, 2, epochs=2)
    assert two_epochs.steps == 2 * 2  # ceil(32 / (8 x 2)) optimizer steps per epoch
