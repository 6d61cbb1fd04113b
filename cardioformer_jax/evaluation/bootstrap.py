"""Bootstrap resamples (example weights) for confidence intervals (docs/training.md)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


def bootstrap_weights(num_examples: int, num_resamples: int, rng: np.random.Generator,
                      clusters: Any = None) -> np.ndarray:
    """``(num_resamples, num_examples)`` counts of each example in resamples drawn with
    replacement: examples, or whole `clusters` ``(N,)`` (e.g. subject ids)."""
    cluster_of = _cluster_of(num_examples, clusters)
    g = int(cluster_of.max()) + 1
    drawn = rng.multinomial(g, np.full(g, 1.0 / g), size=num_resamples)
    return drawn[:, cluster_of].astype(np.float64)


def _cluster_of(n: int, clusters: Any) -> np.ndarray:
    """``(n,)`` each example's cluster index (each its own without `clusters`)."""
    ids = np.arange(n) if clusters is None else np.asarray(clusters)
    if ids.shape != (n,):
        raise ValueError(f"clusters must have shape ({n},), got {ids.shape}")
    return np.unique(ids, return_inverse=True)[1].reshape(-1)


# Redraw rule of `bootstrap_resamples` (docs/training.md, "Confidence intervals").
MIN_RESAMPLE_CLUSTERS = 2  # a class needs positives (and negatives) in >= 2 clusters
MAX_DRAWS_FACTOR = 100  # at most this many draws per requested resample, in total
_DRAW_BLOCK = 1000  # resamples drawn at once
_PILOT_DRAWS = 1000  # draws before a projected overrun gives up a class


@dataclasses.dataclass(frozen=True)
class BootstrapResamples:
    """Bootstrap resamples of a data set in which every resamplable class ranks."""

    counts: np.ndarray  # (R, G) how often each cluster (subject, or example) was drawn
    cluster_of: np.ndarray  # (N,) the cluster of each example
    classes: np.ndarray  # (K,) bool: resamplable, ranked in every resample (macro CIs)

    too_rare: dict[int, str]  # {class: reason}: classes with positives, not resamplable
    drawn: int  # resamples drawn in all (budget): accepted, rejected, last block's surplus
    redrawn: int  # resamples rejected for lacking a resamplable class

    @property
    def num_resamples(self) -> int:
        """The accepted resamples (as requested)."""
        return int(self.counts.shape[0])

    def blocks(self, size: int):
        """Yields the example weights ``(b, N)`` float64 of at most `size` resamples at a time."""
        for start in range(0, self.num_resamples, max(1, size)):
            yield self.counts[start:start + max(1, size)][:, self.cluster_of].astype(
                np.float64)


def bootstrap_resamples(positive: Any, num_resamples: int, rng: np.random.Generator, *,
                        clusters: Any = None, max_draws_factor: float = MAX_DRAWS_FACTOR,
                        block: int | None = None) -> BootstrapResamples:
    """Draws bootstrap resamples for macro ranking metrics, redrawing incomplete ones.

    Examples, or whole `clusters` ``(N,)``, drawn with replacement; a resample lacking a positive
    or a negative of a resamplable class is drawn again (as Strodthoff et al. 2020 do), at most
    ``max_draws_factor * num_resamples`` draws, `block` at a time. `positive`: ``(N, K)`` 0/1
    truth. Rule, too-rare classes and budget: docs/training.md, "Evaluation artefacts"."""
    positive = np.asarray(positive)
    if positive.ndim != 2:
        raise ValueError(f"positive must be (N, K) 0/1, got shape {positive.shape}")
    if not np.isin(positive, (0, 1)).all():
        raise ValueError("positive must hold only 0 and 1")
    if num_resamples < 1:
        raise ValueError(f"num_resamples must be >= 1, got {num_resamples}")
    if not max_draws_factor >= 1:
        raise ValueError(f"max_draws_factor must be >= 1 (the requested resamples "
                         f"themselves), got {max_draws_factor}")
    n, k = positive.shape
    cluster_of = _cluster_of(n, clusters)
    g = int(cluster_of.max()) + 1

    block = block or max(1, min(_DRAW_BLOCK, 4_000_000 // g))
    # (G, K) examples of each class per cluster: positives, negatives.
    pos = np.zeros((g, k))
    np.add.at(pos, cluster_of, positive.astype(np.float64))
    neg = np.bincount(cluster_of, minlength=g)[:, None] - pos
    pos_clusters, neg_clusters = (pos > 0).sum(axis=0), (neg > 0).sum(axis=0)
    required = (pos_clusters >= MIN_RESAMPLE_CLUSTERS) & (neg_clusters >= MIN_RESAMPLE_CLUSTERS)
    unit = "examples" if clusters is None else "clusters"
    too_rare = {}
    for c in np.flatnonzero(~required & (pos_clusters > 0) & (neg_clusters > 0)):
        which = "positives" if pos_clusters[c] < MIN_RESAMPLE_CLUSTERS else "negatives"
        too_rare[int(c)] = f"{which} in fewer than {MIN_RESAMPLE_CLUSTERS} {unit}"
    budget = int(max_draws_factor * num_resamples)
    pilot = min(budget, _PILOT_DRAWS)
    dtype = np.uint16 if g <= np.iinfo(np.uint16).max else np.uint32
    kept: list[np.ndarray] = []
    have = drawn = rejected = 0
    while have < num_resamples:
        size = min(block, budget - drawn)
        counts = rng.multinomial(g, np.full(g, 1.0 / g), size=size)
        drawn += size
        present = (counts @ pos > 0) & (counts @ neg > 0)  # (b, K)
        while True:
            ok = present[:, required].all(axis=1)
            accepted = int(ok.sum())
            need = num_resamples - have - accepted
            if need <= 0:
                break
            # Give up a class when even accepting every remaining draw would not do, or,
            # after a pilot's worth of draws, when the acceptance rate so far projects
            # past the budget.
            forced = have + accepted + budget - drawn < num_resamples
            rate = (have + accepted) / drawn
            projected = drawn >= pilot and (rate == 0 or drawn + need / rate > budget)
            if not (forced or projected):
                break
            missing = np.where(required, (~present).sum(axis=0), -1)
            worst = int(np.argmax(missing))
            required[worst] = False
            too_rare[worst] = (f"missing from {missing[worst]} of {size} resamples of a "
                               f"block: the redraw budget ({max_draws_factor:g}x the "
                               "resamples) would run out")
        rejected += size - accepted
        take = counts[ok][:num_resamples - have].astype(dtype)
        kept.append(take)
        have += take.shape[0]
    return BootstrapResamples(counts=np.concatenate(kept), cluster_of=cluster_of,
                              classes=required, too_rare=dict(sorted(too_rare.items())),
                              drawn=drawn, redrawn=rejected)
