"""Evaluation metrics behind one contract: ``score = evaluator(logits, y, mask)``."""
from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import Tensor

Evaluator = Callable[[Tensor, Tensor, Tensor], float]


def accuracy(logits: Tensor, y: Tensor, mask: Tensor) -> float:
    """Fraction of ``mask`` nodes whose arg-max class equals ``y``."""
    if int(mask.sum()) == 0:
        return float("nan")
    return float((logits[mask].argmax(-1) == y[mask]).float().mean())


def mean_ranks(scores: Tensor) -> Tensor:
    """1-based rank of each entry within its column of ``scores`` ``[n, T]``; equal entries share
    the mean of their ranks. Float64, same shape."""
    values, order = torch.sort(scores, dim=0, stable=True)
    n = values.size(0)
    position = torch.arange(1, n + 1, dtype=torch.float64).unsqueeze(1).expand_as(values)
    changes = values[1:] != values[:-1]
    starts = torch.cat([torch.ones_like(changes[:1]), changes])
    ends = torch.cat([changes, torch.ones_like(changes[:1])])
    first = torch.where(starts, position, 0.0).cummax(0).values
    last = torch.where(ends, position, n + 1.0).flip(0).cummin(0).values.flip(0)
    return torch.empty(values.shape, dtype=torch.float64).scatter_(0, order, (first + last) / 2)


def rocauc(logits: Tensor, y: Tensor, mask: Tensor) -> float:
    """Mean over tasks of the ROC-AUC of ``logits[:, t]`` against 0/1 ``y[:, t]`` on ``mask`` nodes.

    Rank form (Mann-Whitney), :math:`\\mathrm{AUC} = (\\sum_{i \\in +} r_i - n_+(n_+ + 1)/2) / (n_+ n_-)`;
    tasks with a single class on ``mask`` are skipped, as in the OGB Evaluator. Equal scores share
    their mean rank (a tied positive-negative pair counts one half, as in the OGB Evaluator), so the
    value does not depend on how a sort orders them.
    """
    scores, target = logits[mask].double(), y[mask].double()
    ranks = mean_ranks(scores)
    positives = target.sum(0)
    negatives = target.size(0) - positives
    valid = (positives > 0) & (negatives > 0)
    if not bool(valid.any()):
        return float("nan")
    auc = ((ranks * target).sum(0) - positives * (positives + 1) / 2) / (positives * negatives).clamp_min(1)
    return float(auc[valid].mean())


EVALUATORS: dict[str, Evaluator] = {"accuracy": accuracy, "rocauc": rocauc}


def ogb_evaluator(name: str) -> Evaluator:
    """The official ``ogb.nodeproppred.Evaluator`` of data set ``name`` behind our contract.

    Accuracy data sets get arg-max predictions ``[n, 1]``; ROC-AUC data sets (ogbn-proteins)
    get the raw logits ``[n, T]`` as scores, with ``y`` the ``[n, T]`` 0/1 targets.
    """
    from ogb.nodeproppred import Evaluator as OGBEvaluator

    official = OGBEvaluator(name)

    def score(logits: Tensor, y: Tensor, mask: Tensor) -> float:
        if int(mask.sum()) == 0:
            return float("nan")
        y_true, y_pred = y[mask], logits[mask]
        if official.eval_metric == "acc":
            y_true, y_pred = y_true.view(-1, 1), y_pred.argmax(-1, keepdim=True)
        return float(official.eval({"y_true": y_true, "y_pred": y_pred})[official.eval_metric])

    return score


@functools.lru_cache(maxsize=None)
def get_evaluator(metric: str) -> Evaluator:
    """``"accuracy"`` or ``"ogb:<ogb data set name>"`` -> ``score(logits, y, mask)``."""
    if metric.startswith("ogb:"):
        return ogb_evaluator(metric[len("ogb:"):])
    try:
        return EVALUATORS[metric]
    except KeyError:
        raise ValueError(f"unknown metric {metric!r}; choose from {sorted(EVALUATORS)} or ogb:<name>") from None


def mean_std(values: list[float]) -> dict[str, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    t = torch.tensor(values, dtype=torch.float64)
    return {"mean": float(t.mean()), "std": float(t.std()) if t.numel() > 1 else 0.0, "n": int(t.numel())}
