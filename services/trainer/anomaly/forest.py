"""The fitted Isolation Forest's trees in flat numpy arrays, and raw forest scores of feature rows.

Usage: ``flat = FlatForest.from_forest(forest); raw = forest_scores(forest, flat, rows, threads)``.
"""

from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from sklearn.ensemble import IsolationForest

from shared.arrays import FloatArray, IntArray

_SMALL_BATCH = 64  # below this many rows the numpy forest beats scikit-learn's overhead
# From this many rows the rows are split between threads, each scored by scikit-learn (its
# tree walk releases the GIL). Each row's score is computed exactly as in one thread (a
# row's trees are summed in the same order), so the result is the same bit for bit.
_PARALLEL_ROWS = 4096


@dataclass(frozen=True, slots=True)
class ScoringThreads:
    """Threads that share the rows of a large batch: ``ScoringThreads(thread_pool(2, name=n), 2)``."""

    pool: Executor
    count: int


def forest_scores(
    forest: IsolationForest,
    flat: FlatForest,
    rows: FloatArray,
    threads: ScoringThreads | None = None,
) -> FloatArray:
    """scikit-learn's ``score_samples`` of standardised feature rows (higher = more normal):
    the numpy forest for a few rows, scikit-learn for more, split across ``threads`` if many."""
    if len(rows) < _SMALL_BATCH:
        return flat.score_samples(rows)
    if threads is not None and threads.count > 1 and len(rows) >= _PARALLEL_ROWS:
        chunks = np.array_split(rows, threads.count)
        parts = list(threads.pool.map(forest.score_samples, chunks))
        threaded: FloatArray = np.concatenate(parts)
        return threaded
    out: FloatArray = forest.score_samples(rows)
    return out


def _average_path_length(n: FloatArray) -> FloatArray:
    """c(n) of Liu et al.: mean path length of an unsuccessful BST search (as scikit-learn)."""
    n = np.asarray(n, dtype=np.float64)
    out = np.zeros_like(n)
    two = n == 2
    big = n > 2
    out[two] = 1.0
    out[big] = 2.0 * (np.log(n[big] - 1.0) + np.euler_gamma) - 2.0 * (n[big] - 1.0) / n[big]
    return out


@dataclass(slots=True)
class FlatForest:
    """All trees of a fitted Isolation Forest in flat arrays, scored with vectorised numpy.

    Leaves loop to themselves (threshold -inf sends every value right, to itself), so
    every sample takes exactly ``depth`` steps and all trees advance together.
    """

    feature: IntArray  # split feature per node (0 at leaves)
    threshold: npt.NDArray[np.float32]  # float32 rounded down: x32 <= t32 <=> x32 <= t64
    right: IntArray  # right child per node (the left child is node + 1)
    leaf_value: FloatArray  # depth + c(n_node_samples) at leaves, 0 elsewhere
    roots: IntArray
    depth: int
    normaliser: float  # c(max_samples)

    @classmethod
    def from_forest(cls, forest: IsolationForest) -> FlatForest:
        feats: list[IntArray] = []
        thrs: list[FloatArray] = []
        rights: list[IntArray] = []
        leaves: list[FloatArray] = []
        roots: list[int] = []
        offset = 0
        depth = 0
        for est, cols in zip(forest.estimators_, forest.estimators_features_, strict=True):
            tree = est.tree_
            count = int(tree.node_count)
            left = np.asarray(tree.children_left, dtype=np.int64)
            right = np.asarray(tree.children_right, dtype=np.int64)
            is_leaf = left < 0
            internal = np.flatnonzero(~is_leaf)
            if not np.array_equal(left[internal], internal + 1):
                raise ValueError("unexpected tree layout: left child is not the next node")
            node_depth = np.zeros(count, dtype=np.int64)
            level = internal[:1] if len(internal) else internal  # the root, if it splits
            while len(level):  # one level at a time: a handful of steps, not a node loop
                children = np.concatenate([left[level], right[level]])
                node_depth[children] = node_depth[level[0]] + 1
                level = children[~is_leaf[children]]
            cols_arr = np.asarray(cols, dtype=np.int64)
            feat = np.where(is_leaf, 0, cols_arr[np.maximum(tree.feature, 0)])
            samples = np.asarray(tree.n_node_samples, dtype=np.float64)
            leaf_val = np.where(is_leaf, node_depth + _average_path_length(samples), 0.0).astype(
                np.float64
            )
            feats.append(feat.astype(np.int64))
            thrs.append(np.where(is_leaf, -np.inf, tree.threshold).astype(np.float64))
            rights.append(np.where(is_leaf, np.arange(count), right) + offset)
            leaves.append(leaf_val)
            roots.append(offset)
            depth = max(depth, int(node_depth.max()))
            offset += count
        thr64 = np.concatenate(thrs)
        thr32 = thr64.astype(np.float32)
        too_high = thr32.astype(np.float64) > thr64
        thr32[too_high] = np.nextafter(thr32[too_high], np.float32(-np.inf))
        return cls(
            feature=np.concatenate(feats),
            threshold=thr32,
            right=np.concatenate(rights).astype(np.int64),
            leaf_value=np.concatenate(leaves),
            roots=np.asarray(roots, dtype=np.int64),
            depth=depth,
            normaliser=float(_average_path_length(np.array([float(forest.max_samples_)]))[0]),
        )

    def score_samples(self, x: FloatArray) -> FloatArray:
        """scikit-learn's ``IsolationForest.score_samples`` (higher = more normal)."""
        xs = np.asarray(x, dtype=np.float32)
        n, d = xs.shape
        flat = xs.ravel()
        node = np.broadcast_to(self.roots, (n, len(self.roots))).copy()
        row_offset = (np.arange(n, dtype=np.int64) * d)[:, None]
        for _ in range(self.depth):
            go_left = flat[self.feature[node] + row_offset] <= self.threshold[node]
            node = np.where(go_left, node + 1, self.right[node])
        mean_depth = self.leaf_value[node].sum(axis=1) / len(self.roots)
        out: FloatArray = -np.power(2.0, -mean_depth / self.normaliser)
        return out


def check_forest(forest: IsolationForest, *, n_features: int) -> None:
    """Bounds-check every tree so a crafted file cannot make scikit-learn read out of range."""
    for est, cols in zip(forest.estimators_, forest.estimators_features_, strict=True):
        tree = est.tree_
        count = int(tree.node_count)
        left = np.asarray(tree.children_left)
        right = np.asarray(tree.children_right)
        ok = (
            len(left) == count
            and bool(np.all((left == -1) | ((left > 0) & (left < count))))
            and bool(np.all((right == -1) | ((right > 0) & (right < count))))
            and bool(np.all(np.asarray(tree.feature) < len(cols)))
            and bool(np.all((np.asarray(cols) >= 0) & (np.asarray(cols) < n_features)))
        )
        if not ok:
            raise ValueError("stored forest has out-of-range tree arrays")
