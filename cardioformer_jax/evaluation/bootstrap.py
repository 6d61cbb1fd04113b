"""Bootstrap resamples (example weights) for confidence intervals (docs/training.md)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


def bootstrap_weights(num_examples: int, num_resamples: int, rng: np.random.Generator,
                      clusters: Any = None) -> np.ndarray:
    """``(num_resamples, num_examples)`` counts of each example in bootstrap resamples.

    Without `clusters`: examples drawn with replacement. With `clusters` ``(N,)`` (e.g.
    subject ids): whole clusters drawn with replacement (a cluster bootstrap), each
    example counted as often as its cluster was drawn, so the examples of one cluster
    always enter a resample together.
    """
    if clusters is None:
        ids = np.arange(num_examples)
    else:
        ids = np.asarray(clusters)
        if ids.shape != (num_examples,):
            raise ValueError(f"clusters must have shape ({num_examples},), got {ids.shape}")
    _, cluster_of = np.unique(ids, return_inverse=True)
    cluster_of = cluster_of.reshape(-1)
    g = int(cluster_of.max()) + 1
    drawn = rng.multinomial(g, np.full(g, 1.0 / g), size=num_resamples)
    return drawn[:, cluster_of].astype(np.float64)


# Redraw rule of `bootstrap_resamples` (docs/training.md, "Confidence intervals").
MIN_RESAMPLE_CLUSTERS = 2  # a class needs positives (and negatives) in >= 2 clusters
MAX_DRAWS_FACTOR = 100  # at most this many draws per requested resample, in total
_DRAW_BLOCK = 1000  # resamples drawn at once
_PILOT_DRAWS = 1000  # draws before a projected overrun gives up a class


@dataclasses.dataclass(frozen=True)
class BootstrapResamples:
    """Bootstrap resamples of a data set in which every resamplable class ranks.

    Attributes:
      counts: ``(R, G)`` how often each cluster (subject, or example) was drawn.
      cluster_of: ``(N,)`` the cluster of each example.
      classes: ``(K,)`` bool: the resamplable classes, each holding a positive and a
        negative in every resample; macro AUROC/AUPRC intervals are means over these.
      too_rare: ``{class: reason}`` of the classes with positives that are not resamplable
        (left out of the macro intervals, never silently).
      drawn: resamples drawn in all (counted against the budget): the accepted, the
        rejected and the surplus of the last block.
      redrawn: resamples rejected for lacking a resamplable class (and drawn again).
    """

    counts: np.ndarray
    cluster_of: np.ndarray
    classes: np.ndarray
    too_rare: dict[int, str]
    drawn: int
    redrawn: int

    @property
    def num_resamples(self) -> int:
        """The accepted resamples (as requested)."""
        return int(self.counts.shape[0])

    def blocks(self, size: int):
        """Yields the example weights ``(b, N)`` (float64) of consecutive resamples, at
        most `size` at a time (the weight matrices of `weighted_*_metrics`)."""
        for start in range(0, self.num_resamples, max(1, size)):
            yield self.counts[start:start + max(1, size)][:, self.cluster_of].astype(
                np.float64)


def bootstrap_resamples(positive: Any, num_resamples: int, rng: np.random.Generator, *,
                        clusters: Any = None, max_draws_factor: float = MAX_DRAWS_FACTOR,
                        block: int | None = None) -> BootstrapResamples:
    """Draws bootstrap resamples for macro ranking metrics, redrawing incomplete ones.

    Examples, or whole `clusters` (e.g. subject ids; see `bootstrap_weights`), are drawn
    with replacement. A class is *resamplable* when its positives and its negatives each
    lie in at least `MIN_RESAMPLE_CLUSTERS` clusters; a resample lacking a positive or a
    negative of a resamplable class is rejected and drawn again (as the PTB-XL benchmark
    of Strodthoff et al. 2020 does), so every accepted resample's macro AUROC/AUPRC
    averages the same classes. Classes with positives that are not resamplable go to
    ``too_rare`` with the reason; classes without any positive (or negative) are
    undefined in the data itself and in neither.

    The draws are bounded: at most ``max_draws_factor * num_resamples`` in total, never
    exceeded. Blocks of `block` resamples are drawn at once and their valid rows kept.
    When the budget left could no longer supply the missing resamples, or (after 1000
    draws) the acceptance rate so far projects past the budget, the class missing from
    most resamples of the current block is declared too rare (reason "redraw budget")
    and the block re-checked without it; resamples already kept stay valid.

    Args:
      positive: ``(N, K)`` 0/1 truth (multi-hot, or one-hot of single-label classes).
      num_resamples: resamples to return (>= 1).
      rng: the random generator (the result is deterministic given its state).
      clusters: optional ``(N,)`` cluster ids.
      max_draws_factor: the bound on draws per requested resample (>= 1).
      block: resamples drawn at once (default: up to 1000, fewer for many clusters so
        that a block's counts stay near 32 MB).
    """
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
    ids = np.arange(n) if clusters is None else np.asarray(clusters)
    if ids.shape != (n,):
        raise ValueError(f"clusters must have shape ({n},), got {ids.shape}")
    _, cluster_of = np.unique(ids, return_inverse=True)
    cluster_of = cluster_of.reshape(-1)
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
