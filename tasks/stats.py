"""The statistics train, evaluate and the gate share: the gate metrics over per-item outcomes, and the one
paired bootstrap (`scipy.stats.bootstrap`).

A metrics.json carries one outcome per test item (classifier: gold and predicted class; NER: the
sentence's strict-IOB2 entity tp / fp / fn). Resampling items with replacement and re-scoring gives
the confidence interval of a model's gate metric (train, evaluate), and, resampling the same items for
two models, the interval of challenger minus champion (the gate).

numpy and scipy only: runs in both environments.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from tasks.vocab import CLASS_LABELS, Model

Statistic = Callable[..., np.ndarray]


def outcomes(task: Model | str, items: Sequence[Mapping | object]) -> tuple[np.ndarray, ...]:
    """The per-item outcomes as arrays: (gold, pred) for the classifier, (tp, fp, fn) for NER."""
    keys = ("gold", "pred") if Model(task) is Model.classifier else ("tp", "fp", "fn")
    get = (lambda it, k: it[k]) if items and isinstance(items[0], Mapping) else getattr
    return tuple(np.array([get(it, k) for it in items], dtype=np.int64) for k in keys)


# The two metrics below are numpy twins of scikit-learn's f1_score and seqeval's micro-F1, on purpose:
# they score all bootstrap resamples in one vectorised call (scikit-learn takes ~1.5 ms per resample,
# ~6 s for a 2000-resample paired gate). tests/test_stats_equivalence.py checks them against both.
def per_class_f1(gold: np.ndarray, pred: np.ndarray, labels: Sequence[int] = CLASS_LABELS) -> np.ndarray:
    """F1 per label (last axis) of (n,) or (resamples, n) outcomes; 0 where a label is absent from both."""
    out = []
    for c in labels:
        g, p = gold == c, pred == c
        tp = (g & p).sum(-1)
        denom = g.sum(-1) + p.sum(-1)
        out.append(np.divide(2 * tp, denom, out=np.zeros(np.shape(denom), float), where=denom > 0))
    return np.stack(out, axis=-1)


def entity_f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """Micro-F1 of summed entity counts along the last axis: 2tp / (2tp + fp + fn), 0 when empty."""
    tp, fp, fn = tp.sum(-1), fp.sum(-1), fn.sum(-1)
    denom = 2 * tp + fp + fn
    return np.divide(2 * tp, denom, out=np.zeros(np.shape(denom), float), where=denom > 0)


def gate_metric(
    task: Model | str, *arrays: np.ndarray, labels: Sequence[int] = CLASS_LABELS, axis: int = -1
) -> np.ndarray:
    """The gate metric of `outcomes(task, ...)` along the last axis: macro-F1 or strict entity micro-F1."""
    if axis != -1:
        arrays = tuple(np.moveaxis(a, axis, -1) for a in arrays)
    if Model(task) is Model.classifier:
        return per_class_f1(*arrays, labels=labels).mean(-1)
    return entity_f1(*arrays)


@dataclass(frozen=True)
class Interval:
    """A percentile bootstrap confidence interval of `observed`, with its resampling settings."""

    observed: float
    low: float
    high: float
    confidence: float
    resamples: int
    seed: int
    distribution: np.ndarray = field(repr=False, compare=False)

    def to_dict(self) -> dict[str, float | int]:
        """The JSON-able summary (without the distribution)."""
        return {
            "low": self.low,
            "high": self.high,
            "confidence": self.confidence,
            "resamples": self.resamples,
            "seed": self.seed,
        }


def paired_bootstrap(
    statistic: Statistic,
    data: Sequence[np.ndarray],
    *,
    resamples: int,
    seed: int,
    confidence: float,
) -> Interval:
    """Percentile CI of `statistic(*data, axis=-1)`, resampling items (the same ones in every array).

    `statistic` must be vectorised (scores `(resamples, n)` arrays along the last axis). Resample indices
    come from `numpy.random.default_rng(seed).integers(0, n, (resamples, n))` (what scipy draws when
    given the generator), so a seed always gives the same interval.

    Raises:
        ValueError: fewer than two items (a bootstrap needs at least two).
    """
    from scipy.stats import bootstrap

    data = [np.asarray(a) for a in data]
    result = bootstrap(
        data,
        statistic,
        n_resamples=resamples,
        paired=True,
        vectorized=True,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return Interval(
        observed=float(statistic(*data, axis=-1)),
        low=float(result.confidence_interval.low),
        high=float(result.confidence_interval.high),
        confidence=confidence,
        resamples=resamples,
        seed=seed,
        distribution=result.bootstrap_distribution,
    )


def metric_interval(
    task: Model | str,
    items: Sequence[Mapping | object],
    *,
    labels: Sequence[int] = CLASS_LABELS,
    resamples: int,
    seed: int,
    confidence: float,
) -> Interval:
    """CI of one model's gate metric over its test items (what train and evaluate report)."""

    def statistic(*arrays: np.ndarray, axis: int = -1) -> np.ndarray:
        return gate_metric(task, *arrays, labels=labels, axis=axis)

    return paired_bootstrap(
        statistic, outcomes(task, items), resamples=resamples, seed=seed, confidence=confidence
    )


def difference_interval(
    task: Model | str,
    candidate: Sequence[Mapping | object],
    champion: Sequence[Mapping | object],
    *,
    labels: Sequence[int] = CLASS_LABELS,
    resamples: int,
    seed: int,
    confidence: float,
) -> Interval:
    """CI of candidate minus champion's gate metric, both scored on the same resampled items.

    `candidate[i]` and `champion[i]` must be the same test item (see `tasks.gates.decision.pair`).
    """
    cand, champ = outcomes(task, candidate), outcomes(task, champion)
    k = len(cand)

    def statistic(*arrays: np.ndarray, axis: int = -1) -> np.ndarray:
        return gate_metric(task, *arrays[:k], labels=labels, axis=axis) - gate_metric(
            task, *arrays[k:], labels=labels, axis=axis
        )

    return paired_bootstrap(statistic, (*cand, *champ), resamples=resamples, seed=seed, confidence=confidence)
