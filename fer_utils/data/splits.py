"""Subsets and splits: stratified subsampling, group-aware train/val/test, counts, duplicates."""

from __future__ import annotations

import hashlib
import warnings

import numpy as np

from ..faceset import SPLITS, DataWarning, FaceSet

__all__ = ["stratified_indices", "stratified_subsample", "split", "summary", "class_balance",
           "find_duplicates", "crossing_duplicates", "duplicate_report", "group_report"]


def _allocate(counts: np.ndarray, total: int) -> np.ndarray:
    """Share `total` out over strata in proportion to `counts` (largest remainder, ≥1 each)."""
    share = counts / counts.sum() * total
    take = np.floor(share).astype(int)
    take = np.minimum(np.maximum(take, (counts > 0) & (total >= np.count_nonzero(counts))), counts)
    while take.sum() < total:
        room = np.where(take < counts, share - take, -np.inf)
        take[int(np.argmax(room))] += 1
    while take.sum() > total:
        take[int(np.argmax(np.where(take > 1, take - share, -np.inf)))] -= 1
    return take


def stratified_indices(keys, n: int | None, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most `n` items with the proportions of `keys` (None or n ≥ len: all).

    Args:
        keys: one stratum per item (e.g. "label/split" strings).
        n: how many to keep.
        seed: random seed of the draw.
    """
    keys = np.asarray(keys)
    if n is None or n >= len(keys):
        return np.arange(len(keys))
    if n < 1:
        raise ValueError(f"stratified_subsample: n must be ≥ 1 (or None for all), got {n}")
    strata, inverse = np.unique(keys, return_inverse=True)
    take = _allocate(np.bincount(inverse, minlength=len(strata)), n)
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(np.flatnonzero(inverse == g), size=k, replace=False)
              for g, k in enumerate(take) if k]
    return np.sort(np.concatenate(chosen))


def strata(labels, split=None) -> np.ndarray:
    """Stratum keys "label" or "label/split" (the unit of stratified subsampling)."""
    labels = np.asarray(labels).astype(str)
    return labels if split is None else np.char.add(labels, np.char.add("/", np.asarray(split)))


def stratified_subsample(fs: FaceSet, n: int | None, seed: int = 0) -> FaceSet:
    """At most `n` faces with the class (and split) proportions of `fs`; None or n ≥ len: all."""
    if n is None or n >= len(fs):
        return fs
    return fs.subset(stratified_indices(strata(fs.labels, fs.split), n, seed))


def _random_part(labels, fraction: float, seed: int):
    """Split indices 0..N-1 into (rest, part) with `fraction` in part, stratified when possible."""
    from sklearn.model_selection import train_test_split

    index = np.arange(len(labels))
    counts = np.bincount(labels)
    stratify = labels if counts[counts > 0].min() >= 2 else None
    try:
        return train_test_split(index, test_size=fraction, random_state=seed, stratify=stratify)
    except ValueError:  # a part smaller than the number of classes: fall back to a random split
        pass
    try:
        return train_test_split(index, test_size=fraction, random_state=seed, stratify=None)
    except ValueError:
        raise ValueError(f"split: {len(index)} face(s) are too few to take a {fraction:.3g} "
                         f"part out and keep some for training; use more faces or val=0, "
                         f"test=0") from None


def _group_part(labels, groups, fraction: float, seed: int):
    """(rest, part) with about `fraction` in part and every group on one side.

    scikit-learn's StratifiedGroupKFold (one fold of round(1/fraction)) keeps the class shares
    where the groups allow; with fewer groups than folds, GroupShuffleSplit draws whole groups.
    """
    from sklearn.model_selection import GroupShuffleSplit, StratifiedGroupKFold

    index = np.arange(len(labels))
    n_groups = len(np.unique(groups))
    if n_groups < 2:
        raise ValueError(f"split: {n_groups} group(s) (person ids) cannot be split without "
                         f"putting a person on both sides; use val=0, test=0 or more people")
    folds = max(2, int(round(1 / fraction)))
    if folds <= n_groups:
        with warnings.catch_warnings():  # "the least populated class has only k members"
            warnings.simplefilter("ignore", UserWarning)
            splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
            rest, part = next(splitter.split(index, labels, groups))
        if len(part) and len(rest):
            return rest, part
    splitter = GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
    return next(splitter.split(index, labels, groups))


def _part(fs_labels, groups, fraction: float, seed: int):
    """(rest, part) indices: group-aware when `groups` is given, else per face."""
    index = np.arange(len(fs_labels))
    if fraction <= 0:
        return index, index[:0]
    if groups is not None:
        return _group_part(fs_labels, groups, fraction, seed)
    return _random_part(fs_labels, fraction, seed)


def _with_split(fs: FaceSet, name: str) -> FaceSet:
    fs.split = np.full(len(fs), name)
    return fs


def _warn_crossing_groups(fs: FaceSet) -> None:
    """Warn when the set's own split puts one person (group) on several sides."""
    crossing = group_report(fs)["crossing"]
    if crossing:
        warnings.warn(f"{fs.source or 'FaceSet'}: {len(crossing)} group(s) appear in more than "
                      f"one of the set's own splits (e.g. {', '.join(crossing[:5])}): those "
                      f"people are trained and tested on", DataWarning, stacklevel=3)


def _own_split_parts(fs: FaceSet, val: float, test: float, seed: int) -> dict:
    """The set's own train/val/test rows; a missing val (or test) part is carved out of train.

    Each carved part is its fraction of the set's own train rows: with test carved first, val
    takes val / (1 - test) of what test left, so that both are their share of the original train.
    """
    parts = {name: np.flatnonzero(fs.split == name) for name in SPLITS}
    train_idx = parts["train"]
    carved_test = False
    for name, fraction in (("test", test), ("val", val)):
        if len(parts[name]) == 0 and fraction > 0:
            share = fraction / (1 - test) if name == "val" and carved_test else fraction
            groups = None if fs.groups is None else fs.groups[train_idx]
            keep, part = _part(fs.labels[train_idx], groups, share, seed)
            parts[name], train_idx = train_idx[np.sort(part)], train_idx[np.sort(keep)]
            carved_test = carved_test or name == "test"
    parts["train"] = train_idx
    return parts


def split(fs: FaceSet, val: float = 0.1, test: float = 0.1, seed: int = 0):
    """Stratified, group-aware train/val/test split; a set's own `split` is kept.

    Args:
        fs: the faces. With `fs.groups` (person ids) every person lands on one side only
            (scikit-learn's StratifiedGroupKFold, stratified where the groups allow; the parts
            are then about, not exactly, `val` and `test`).
        val: fraction for validation (0 ≤ val < 1).
        test: fraction for testing (0 ≤ test, val + test < 1).
        seed: random seed of the split.

    Returns:
        (train, val, test) FaceSets, each with its `split` set. When `fs.split` exists (FER2013's
        Usage, split folders), its train/val/test rows are used; a missing val (or test) part
        is carved out of train.
    """
    for name, value in (("val", val), ("test", test)):
        if not 0 <= value < 1:
            raise ValueError(f"split: {name}={value!r} must be a fraction in [0, 1)")
    if val + test >= 1:
        raise ValueError(f"split: val + test = {val + test} leaves nothing to train on")
    if len(fs) == 0:
        raise ValueError("split: the FaceSet is empty")
    if fs.split is not None and "train" in set(fs.split):
        if fs.groups is not None:
            _warn_crossing_groups(fs)
        parts = _own_split_parts(fs, val, test, seed)
    else:
        rest, test_idx = _part(fs.labels, fs.groups, test, seed)
        rest_groups = None if fs.groups is None else fs.groups[rest]
        keep, val_idx = _part(fs.labels[rest], rest_groups, val / (1 - test), seed + 1)
        parts = {"train": np.sort(rest[keep]), "val": np.sort(rest[val_idx]),
                 "test": np.sort(test_idx)}
    return tuple(_with_split(fs.subset(parts[name]), name) for name in SPLITS)


def summary(fs: FaceSet, *more: FaceSet):
    """Faces per class (rows) and split (columns), with totals, as a pandas DataFrame.

    Several sets (e.g. the train, val, test parts of `split`) are counted together.
    """
    import pandas as pd

    sets = (fs, *more)
    for other in more:
        if other.class_names != fs.class_names:
            raise ValueError(f"summary: the sets have different classes: {fs.class_names} vs "
                             f"{other.class_names}")
    labels = np.concatenate([s.labels for s in sets])
    split_col = np.concatenate([s.split if s.split is not None else np.full(len(s), "all")
                                for s in sets])
    frame = pd.crosstab(pd.Categorical(np.array(fs.class_names)[labels],
                                       categories=fs.class_names),
                        pd.Series(split_col, name="split"), dropna=False)
    order = [c for c in SPLITS if c in frame.columns]
    frame = frame[order + [c for c in frame.columns if c not in order]]
    frame.index.name = "class"
    frame.columns = list(frame.columns)
    if frame.shape[1] > 1:
        frame["total"] = frame.sum(axis=1)
    return frame


def class_balance(fs: FaceSet):
    """Faces per class as a pandas DataFrame: count, fraction, and ratio to the largest class."""
    import pandas as pd

    counts = fs.class_counts()
    return pd.DataFrame({"count": counts, "fraction": counts / max(counts.sum(), 1),
                         "ratio_to_largest": counts / max(counts.max(), 1)},
                        index=pd.Index(fs.class_names, name="class"))


# --- duplicates and groups --------------------------------------------------------------------


def find_duplicates(fs: FaceSet) -> list[np.ndarray]:
    """Groups of faces with exactly the same pixels (a hash of each image's bytes).

    Returns:
        A list of index arrays (each of 2 or more faces), largest group first.
    """
    digests = np.array([hashlib.blake2b(np.ascontiguousarray(image).tobytes(),
                                        digest_size=16).digest() for image in fs.images])
    if len(digests) == 0:
        return []
    _, inverse, counts = np.unique(digests, return_inverse=True, return_counts=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.cumsum(counts)[:-1]
    groups = [g for g in np.split(order, bounds) if len(g) > 1]
    return sorted(groups, key=lambda g: (-len(g), g[0]))


def crossing_duplicates(fs: FaceSet, duplicates: list | None = None) -> list[np.ndarray]:
    """The groups of identical faces that lie in more than one split (needs `fs.split`)."""
    if fs.split is None:
        return []
    duplicates = find_duplicates(fs) if duplicates is None else duplicates
    return [g for g in duplicates if len(set(fs.split[g])) > 1]


def duplicate_report(fs: FaceSet) -> dict:
    """Exact duplicates: {groups, images, crossing (groups), pairs {"train/test": n, ...},
    same_label (crossing groups whose faces all have one label)}."""
    duplicates = find_duplicates(fs)
    crossing = crossing_duplicates(fs, duplicates)
    pairs: dict = {}
    for group in crossing:
        present = [s for s in SPLITS if s in set(fs.split[group])] + \
            sorted(set(fs.split[group]) - set(SPLITS))
        for a in range(len(present)):
            for b in range(a + 1, len(present)):
                key = f"{present[a]}/{present[b]}"
                pairs[key] = pairs.get(key, 0) + 1
    return {"groups": len(duplicates), "images": int(sum(len(g) for g in duplicates)),
            "crossing": len(crossing), "pairs": pairs,
            "same_label": sum(len(set(fs.labels[g])) == 1 for g in crossing),
            "examples": [g.tolist() for g in crossing[:5]]}


def group_report(fs: FaceSet) -> dict:
    """Groups (person ids): {total, per_split {split: n}, crossing [ids in several splits]}."""
    if fs.groups is None:
        return {"total": 0, "per_split": {}, "crossing": []}
    per_split, crossing = {}, []
    if fs.split is not None:
        seen: dict = {}
        for name in [s for s in SPLITS if s in set(fs.split)]:
            ids = set(fs.groups[fs.split == name])
            per_split[name] = len(ids)
            for group in ids:
                seen[group] = seen.get(group, 0) + 1
        crossing = sorted(g for g, k in seen.items() if k > 1)
    return {"total": len(np.unique(fs.groups)), "per_split": per_split, "crossing": crossing}
