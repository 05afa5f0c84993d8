"""Evaluation: per-class and macro precision/recall/F1, per-AU F1, confusion matrices, seeds.

Everything is computed with scikit-learn; this module only checks inputs (clear errors),
thresholds probabilities and arranges results as pandas objects for the notebooks. The last
part compares training runs repeated with several seeds (mean ± sd, paired differences).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

__all__ = [
    "as_labels",
    "accuracy",
    "macro_f1",
    "precision_recall_f1",
    "classification_report_frame",
    "confusion_matrix",
    "binarize",
    "per_au_f1",
    "choose_thresholds",
    "predict_labels",
    "COLLAPSE_SHARE",
    "prediction_report",
    "majority_baseline",
    "SPREAD_FACTOR",
    "SeedComparison",
    "compare_seeds",
    "seed_summary",
]

# A model "collapses" when one class takes more than this share of its predictions.
COLLAPSE_SHARE = 0.9


def as_labels(y) -> np.ndarray:
    """Class indices from labels (N) or from probabilities / one-hot rows (N×K, argmax)."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1:
        return y.argmax(axis=1).astype(np.int64)
    y = y.reshape(-1)
    if y.size and not np.all(np.isfinite(y.astype(float))):
        raise ValueError("labels contain NaN or infinite values")
    if y.size and not np.all(np.equal(np.mod(y.astype(float), 1), 0)):
        raise ValueError(f"labels must be whole class indices, got values such as "
                         f"{y[np.mod(y.astype(float), 1) != 0][:3].tolist()}")
    return y.astype(np.int64)


def _pair(y_true, y_pred, who: str):
    """Both arguments as int label vectors of equal length, or a clear error."""
    t, p = as_labels(y_true), as_labels(y_pred)
    if len(t) != len(p):
        raise ValueError(f"{who}: y_true has {len(t)} labels but y_pred has {len(p)}")
    if len(t) == 0:
        raise ValueError(f"{who}: no labels given (empty y_true)")
    return t, p


def accuracy(y_true, y_pred) -> float:
    """Fraction of labels predicted correctly (y_pred may be probabilities)."""
    from sklearn.metrics import accuracy_score

    t, p = _pair(y_true, y_pred, "accuracy")
    return float(accuracy_score(t, p))


def macro_f1(y_true, y_pred, num_classes: int | None = None) -> float:
    """Unweighted mean of the per-class F1 scores (scikit-learn's `f1_score(average="macro")`).

    Args:
        y_true: true class indices (N) or one-hot rows.
        y_pred: predicted class indices (N) or probabilities (N×K, argmax is taken).
        num_classes: average over classes 0..num_classes-1 (default: the classes present in
            either argument, as scikit-learn does).
    """
    from sklearn.metrics import f1_score

    t, p = _pair(y_true, y_pred, "macro_f1")
    labels = None if num_classes is None else np.arange(int(num_classes))
    return float(f1_score(t, p, labels=labels, average="macro", zero_division=0))


def precision_recall_f1(y_true, y_pred, num_classes: int | None = None):
    """Per-class precision, recall, F1 and support arrays (scikit-learn)."""
    from sklearn.metrics import precision_recall_fscore_support

    t, p = _pair(y_true, y_pred, "precision_recall_f1")
    if num_classes is None:
        num_classes = int(max(t.max(), p.max())) + 1
    return precision_recall_fscore_support(t, p, labels=np.arange(int(num_classes)),
                                           zero_division=0)


def classification_report_frame(y_true, y_pred, class_names):
    """Per-class precision/recall/F1/support plus macro and weighted averages as a DataFrame.

    Returns:
        A pandas DataFrame indexed by class name, then "macro avg" and "weighted avg", with
        columns precision, recall, f1, support; `frame.attrs["accuracy"]` holds the accuracy.
    """
    import pandas as pd

    class_names = [str(c) for c in class_names]
    t, p = _pair(y_true, y_pred, "classification_report_frame")
    k = len(class_names)
    if max(t.max(), p.max()) >= k or min(t.min(), p.min()) < 0:
        raise ValueError(f"classification_report_frame: labels must lie in 0..{k - 1} for "
                         f"{k} class names, got {min(t.min(), p.min())}..{max(t.max(), p.max())}")
    precision, recall, f1, support = precision_recall_f1(t, p, k)
    frame = pd.DataFrame({"precision": precision, "recall": recall, "f1": f1,
                          "support": support.astype(int)}, index=class_names)
    total = max(int(support.sum()), 1)
    frame.loc["macro avg"] = [precision.mean(), recall.mean(), f1.mean(), int(support.sum())]
    frame.loc["weighted avg"] = [(precision * support).sum() / total,
                                 (recall * support).sum() / total,
                                 (f1 * support).sum() / total, int(support.sum())]
    frame["support"] = frame["support"].astype(int)
    frame.attrs["accuracy"] = float((t == p).mean())
    return frame


def confusion_matrix(y_true, y_pred, num_classes: int | None = None) -> np.ndarray:
    """K×K counts, rows = true class, columns = predicted class (scikit-learn)."""
    from sklearn.metrics import confusion_matrix as sk_confusion_matrix

    t, p = _pair(y_true, y_pred, "confusion_matrix")
    if num_classes is None:
        num_classes = int(max(t.max(), p.max())) + 1
    if max(t.max(), p.max()) >= num_classes:
        raise ValueError(f"confusion_matrix: labels go up to {max(t.max(), p.max())} but "
                         f"num_classes={num_classes}")
    return sk_confusion_matrix(t, p, labels=np.arange(int(num_classes)))


def prediction_report(y_true, y_pred, class_names, collapse_share: float = COLLAPSE_SHARE) -> dict:
    """What a classifier predicts on a labelled set: accuracy, spread, recall, confusion, collapse.

    Args:
        y_true: true class indices (N) or one-hot rows.
        y_pred: predicted class indices (N) or probabilities (N×K, argmax is taken).
        class_names: the K class names, in label order.
        collapse_share: the model counts as collapsed when one class takes more than this
            share of the predictions (default 0.9).

    Returns:
        A JSON-ready dict: "faces", "accuracy", "macro_f1", "prediction_share" {class: share
        of the predictions}, "true_share" {class: share of the labels}, "recall" {class:
        recall, None for a class absent from y_true}, "confusion_matrix" (K×K list, rows =
        true class), "collapsed" (bool), "dominant_class" and "dominant_share".
    """
    names = [str(c) for c in class_names]
    k = len(names)
    t, p = _pair(y_true, y_pred, "prediction_report")
    cm = confusion_matrix(t, p, k)
    predicted = cm.sum(axis=0) / len(t)
    support = cm.sum(axis=1)
    recall = [None if support[i] == 0 else float(cm[i, i] / support[i]) for i in range(k)]
    dominant = int(np.argmax(predicted))
    return {"faces": int(len(t)), "accuracy": accuracy(t, p), "macro_f1": macro_f1(t, p, k),
            "prediction_share": {n: float(v) for n, v in zip(names, predicted)},
            "true_share": {n: float(v) for n, v in zip(names, support / len(t))},
            "recall": dict(zip(names, recall)), "confusion_matrix": cm.tolist(),
            "collapsed": bool(predicted[dominant] > collapse_share),
            "dominant_class": names[dominant], "dominant_share": float(predicted[dominant])}


def _multilabel_pair(y_true, y_prob, who: str):
    """Two N×K float arrays of the same shape, or a clear error."""
    t = np.asarray(y_true, dtype=float)
    p = np.asarray(y_prob, dtype=float)
    if t.ndim == 1:
        t = t[:, None]
    if p.ndim == 1:
        p = p[:, None]
    if t.shape != p.shape:
        raise ValueError(f"{who}: y_true has shape {t.shape} but y_prob has shape {p.shape}")
    if t.ndim != 2 or len(t) == 0:
        raise ValueError(f"{who}: expected N×K arrays with N > 0, got shape {t.shape}")
    bad = ~np.isin(t, (0, 1))
    if bad.any():
        raise ValueError(f"{who}: y_true must hold 0/1 occurrence labels, got values such as "
                         f"{np.unique(t[bad])[:3].tolist()} (threshold intensities first)")
    if not np.all(np.isfinite(p)):
        raise ValueError(f"{who}: y_prob contains NaN or infinite values")
    return t.astype(np.int64), p


def _thresholds(thresholds, k: int, who: str) -> np.ndarray:
    """A length-k threshold vector from a scalar, a sequence or a {name: value} mapping."""
    th = np.asarray(list(thresholds.values()) if isinstance(thresholds, dict) else thresholds,
                    dtype=float)
    th = np.broadcast_to(th, (k,)) if th.ndim == 0 else th
    if th.shape != (k,):
        raise ValueError(f"{who}: need one threshold or {k} thresholds, got {th.shape[0]}")
    return np.asarray(th, dtype=float)


def binarize(y_prob, thresholds=0.5) -> np.ndarray:
    """0/1 predictions: y_prob >= threshold (one threshold, or one per column)."""
    p = np.asarray(y_prob, dtype=float)
    p2 = p[:, None] if p.ndim == 1 else p
    th = _thresholds(thresholds, p2.shape[1], "binarize")
    out = (p2 >= th[None, :]).astype(np.int64)
    return out[:, 0] if p.ndim == 1 else out


def per_au_f1(y_true, y_prob, thresholds=0.5, au_names=None):
    """F1 of every action unit (multi-label), plus their mean.

    Args:
        y_true: N×K 0/1 occurrence labels.
        y_prob: N×K probabilities (or 0/1 predictions).
        thresholds: a threshold for all AUs, one per AU, or the dict of `choose_thresholds`.
        au_names: K names (default "AU0".."AUk").

    Returns:
        A pandas Series {AU name: F1} with a last entry "mean" (the unweighted mean over AUs).
    """
    import pandas as pd
    from sklearn.metrics import f1_score

    t, p = _multilabel_pair(y_true, y_prob, "per_au_f1")
    k = t.shape[1]
    names = [f"AU{i}" for i in range(k)] if au_names is None else [str(n) for n in au_names]
    if len(names) != k:
        raise ValueError(f"per_au_f1: {len(names)} au_names for {k} AU columns")
    pred = binarize(p, thresholds)
    scores = [f1_score(t[:, j], pred[:, j], average="binary", pos_label=1, labels=[0, 1],
                       zero_division=0) for j in range(k)]
    series = pd.Series(np.asarray(scores, dtype=float), index=names, name="f1")
    series.loc["mean"] = float(np.mean(scores))
    return series


def choose_thresholds(y_true, y_prob, au_names=None, default: float = 0.5):
    """Per-AU threshold that maximises F1 on (validation) data.

    Args:
        y_true: N×K 0/1 occurrence labels.
        y_prob: N×K probabilities.
        au_names: K names; the result is keyed by them (default "AU0".."AUk").
        default: threshold used for an AU with no positive example.

    Returns:
        dict {AU name: threshold}; pass it to `per_au_f1(..., thresholds=...)`.
    """
    from sklearn.metrics import precision_recall_curve

    t, p = _multilabel_pair(y_true, y_prob, "choose_thresholds")
    k = t.shape[1]
    names = [f"AU{i}" for i in range(k)] if au_names is None else [str(n) for n in au_names]
    if len(names) != k:
        raise ValueError(f"choose_thresholds: {len(names)} au_names for {k} AU columns")
    chosen = {}
    for j, name in enumerate(names):
        if t[:, j].sum() == 0:
            chosen[name] = float(default)
            continue
        precision, recall, th = precision_recall_curve(t[:, j], p[:, j])
        precision, recall = precision[:-1], recall[:-1]  # the last point has no threshold
        f1 = np.divide(2 * precision * recall, precision + recall,
                       out=np.zeros_like(precision), where=(precision + recall) > 0)
        chosen[name] = float(th[int(np.argmax(f1))])
    return chosen


def predict_labels(model, dataset, output: str | None = None, steps: int | None = None,
                   progress: bool = False):
    """Run `model` over a tf.data dataset of (x, y) batches; return (y_true, y_prob) arrays.

    Args:
        model: a Keras model.
        dataset: a finite tf.data.Dataset (or iterable) of (x, y) batches.
        output: for dict outputs/targets, the key to return (e.g. "expression").
        steps: stop after this many batches (needed for an infinite, repeated dataset).
        progress: show a tqdm bar over batches.
    """
    ys, ps = [], []
    iterator = iter(dataset)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, total=steps, desc="predict", leave=False)
    for i, batch in enumerate(iterator):
        if steps is not None and i >= steps:
            break
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise ValueError("predict_labels: the dataset must yield (x, y) batches")
        x, y = batch[0], batch[1]
        prob = model(x, training=False)
        if isinstance(prob, dict):
            if output is None:
                raise ValueError(f"predict_labels: the model has outputs {sorted(prob)}; "
                                 f"pass output=... to pick one")
            prob = prob[output]
        if isinstance(y, dict):
            if output is None or output not in y:
                raise ValueError(f"predict_labels: the targets are a dict with keys {sorted(y)};"
                                 f" pass output=... to pick one")
            y = y[output]
        ys.append(np.asarray(y))
        ps.append(np.asarray(prob))
    if not ys:
        raise ValueError("predict_labels: the dataset yielded no batches")
    return np.concatenate(ys), np.concatenate(ps)


def majority_baseline(train_labels, test_labels, num_classes: int) -> dict:
    """The model that learnt nothing: the most common training class answered for every test face.

    Ties (a balanced set) go to the first of the most common classes, as `np.argmax` does.

    Returns:
        {"class": its index, "accuracy": its share of the test faces, "macro_f1": the macro-F1
        of always answering it (scikit-learn, over `num_classes` classes)}.
    """
    train = as_labels(train_labels)
    test = as_labels(test_labels)
    if len(train) == 0 or len(test) == 0:
        raise ValueError("majority_baseline: train_labels and test_labels must not be empty")
    majority = int(np.argmax(np.bincount(train, minlength=int(num_classes))))
    always = np.full(len(test), majority)
    return {"class": majority, "accuracy": accuracy(test, always),
            "macro_f1": macro_f1(test, always, num_classes)}


# --- runs repeated with several seeds ---------------------------------------------------------

# A difference between two arms counts when its mean over the seeds is more than this many
# standard errors (sd of the per-seed differences / sqrt(seeds)) away from 0.
SPREAD_FACTOR = 2.0


def _runs_frame(runs, arm: str, seed: str, metrics):
    """`runs` (a DataFrame or a list of dicts) as a DataFrame with the asked columns, checked."""
    import pandas as pd

    frame = runs if isinstance(runs, pd.DataFrame) else pd.DataFrame(list(runs))
    missing = [c for c in (arm, seed, *metrics) if c not in frame.columns]
    if missing:
        raise ValueError(f"runs have no column(s) {missing}; they have {list(frame.columns)}")
    if frame.duplicated([arm, seed]).any():
        raise ValueError(f"runs hold one arm twice with the same seed: "
                         f"{frame.loc[frame.duplicated([arm, seed]), [arm, seed]].values.tolist()}")
    return frame


@dataclasses.dataclass(frozen=True)
class SeedComparison:
    """Arm `a` against arm `b` on one metric, paired by seed (same seed: same start and order)."""

    metric: str
    a: str
    b: str
    differences: tuple  # a - b, one per seed
    seeds: tuple

    @property
    def mean(self) -> float:
        """Mean difference a - b over the seeds."""
        return float(np.mean(self.differences))

    @property
    def sd(self) -> float:
        """Standard deviation of the per-seed differences (NaN for one seed)."""
        return float(np.std(self.differences, ddof=1)) if len(self.differences) > 1 else math.nan

    @property
    def tolerance(self) -> float:
        """How far from 0 the mean must be to count: SPREAD_FACTOR standard errors."""
        return SPREAD_FACTOR * self.sd / math.sqrt(len(self.differences))

    @property
    def outcome(self) -> str:
        """"higher" or "lower" (a against b, beyond the tolerance), "within the spread", "one seed"."""
        if len(self.differences) < 2:
            return "one seed"
        if self.mean > self.tolerance:
            return "higher"
        if self.mean < -self.tolerance:
            return "lower"
        return "within the spread"

    def check(self, claim: str | None) -> None:
        """Raise AssertionError when the outcome contradicts `claim` (needs 2+ seeds and a claim)."""
        if claim not in (None, "higher", "lower", "within the spread"):
            raise ValueError(f"claim must be 'higher', 'lower', 'within the spread' or None, "
                             f"got {claim!r}")
        if claim is not None and self.outcome != "one seed" and self.outcome != claim:
            raise AssertionError(f"expected {self.a!r} {claim} than {self.b!r}, but: {self}")

    def __str__(self) -> str:
        per_seed = ", ".join(f"{d:+.3f}" for d in self.differences)
        if self.outcome == "one seed":
            return (f"{self.metric}, {self.a} minus {self.b}: {self.mean:+.3f} (one seed: no "
                    f"spread to judge the difference by)")
        verdict = {"higher": f"{self.a} is higher", "lower": f"{self.a} is lower",
                   "within the spread": "no difference beyond the seed spread"}[self.outcome]
        return (f"{self.metric}, {self.a} minus {self.b}: {self.mean:+.3f} ± {self.sd:.3f} "
                f"(mean ± sd over {len(self.differences)} seeds: {per_seed}); needs more than "
                f"±{self.tolerance:.3f} to count: {verdict}")


def compare_seeds(runs, a: str, b, metric: str, arm: str = "arm",
                  seed: str = "seed") -> SeedComparison:
    """Compare arm `a` with arm `b` (or with a fixed value, e.g. a baseline) on `metric`, seed by seed.

    Args:
        runs: a DataFrame (or list of dicts) with one row per (arm, seed) and a `metric` column.
        a: an arm's name (a value of the `arm` column).
        b: another arm's name, or a number that every seed of `a` is compared with.
        metric: the column to compare.
        arm, seed: the names of the arm and seed columns.

    Returns:
        SeedComparison: the per-seed differences a - b over the seeds both arms ran, their
        mean and sd, and `outcome` ("higher", "lower", "within the spread", "one seed").
    """
    frame = _runs_frame(runs, arm, seed, [metric])
    table = frame.pivot(index=seed, columns=arm, values=metric)
    fixed = not isinstance(b, str)
    for name in (a,) if fixed else (a, b):
        if name not in table.columns:
            raise ValueError(f"compare_seeds: no arm {name!r}; the arms are {list(table.columns)}")
    if fixed:
        if isinstance(b, bool) or not isinstance(b, (int, float)) or not math.isfinite(b):
            raise ValueError(f"compare_seeds: b must be an arm's name or a finite number, got {b!r}")
        values = table[a].dropna()
        return SeedComparison(metric, a, f"{b:.3f}", tuple(float(v - b) for v in values),
                              tuple(values.index.tolist()))
    both = table[[a, b]].dropna()
    if both.empty:
        raise ValueError(f"compare_seeds: arms {a!r} and {b!r} share no seed")
    return SeedComparison(metric, a, b, tuple(float(d) for d in both[a] - both[b]),
                          tuple(both.index.tolist()))


def seed_summary(runs, metrics, arm: str = "arm", seed: str = "seed", digits: int = 3):
    """One row per arm (in the order they first ran): "mean ± sd" over the seeds of each metric.

    Returns:
        A DataFrame of strings (a single seed shows its value alone), with a column "seeds".
    """
    import pandas as pd

    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    frame = _runs_frame(runs, arm, seed, metrics)
    rows = {}
    for name, part in frame.groupby(arm, sort=False):
        row = {}
        for metric in metrics:
            values = part[metric].dropna().to_numpy(dtype=float)
            if len(values) == 0:
                row[metric] = ""
            elif len(values) == 1:
                row[metric] = f"{values[0]:.{digits}f}"
            else:
                row[metric] = f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}"
        row["seeds"] = int(part[seed].nunique())
        rows[name] = row
    return pd.DataFrame(rows).T.rename_axis(arm)
