"""`load_dataset`: one call for every FER_DATASET value, read at the size its model needs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..faceset import FaceSet
from . import au_csv, fer2013, folders
from .reports import memory_note
from .splits import stratified_subsample

__all__ = ["FOR_MODELS", "load_dataset", "read_plan"]

FOR_MODELS = ("small", "vgg")
# Sets larger than this get a line stating the memory they take before they are read.
_ANNOUNCE_FROM = 2000


def _resolve(spec, profile, settings, seed):
    """(settings, profile, seed, spec) with the defaults filled in from the settings."""
    from .. import config

    if settings is None:
        settings = config.get_settings()
    if profile is None:
        profile = settings.profile
    elif isinstance(profile, str):
        profile = config.parse_profile(profile, variable="profile")
    seed = settings.seed if seed is None else int(seed)
    spec = settings.dataset if spec is None else config.parse_dataset(
        str(spec), settings.data_dir, variable="spec")
    return settings, profile, seed, spec


def _check_options(for_model, limit, fit, kind):
    """ValueErrors echoing a bad for_model, limit or fit."""
    if for_model not in FOR_MODELS:
        raise ValueError(f"load_dataset: for_model={for_model!r} is not one of {FOR_MODELS}")
    if not (limit is None or limit == "profile" or (isinstance(limit, (int, np.integer))
                                                     and not isinstance(limit, bool)
                                                     and limit >= 1)):
        raise ValueError(f"load_dataset: limit={limit!r} must be 'profile', None (everything) "
                         f"or a positive integer")
    allowed = {"folder": folders.FITS, "au-csv": ("crop", "stretch")}.get(kind, ())
    if fit is not None and fit not in allowed:
        raise ValueError(f"load_dataset: fit={fit!r} does not apply to a {kind} set"
                         + (f"; allowed: {allowed}" if allowed else " (its faces are framed "
                            "already)"))


def read_plan(files, profile, for_model: str, fit: str | None = None) -> tuple[int, int]:
    """(size, channels) to read image files at for a model.

    "small": the profile's `image_size`, grey. "vgg": RGB when a sample of the files holds
    colour, else grey (the tf.data pipeline makes the 3 channels per batch, so a grey set stays
    small), at the profile's `vgg_size`, or at the files' own size when they are smaller:
    enlarging them in memory adds no detail (the pipeline resizes each batch to the model's
    input). fit="face" crops faces out of photos: always the full `vgg_size`.
    """
    if for_model == "small":
        return profile.image_size, 1
    colour, side = folders.probe_colour_and_size(files)
    size = profile.vgg_size if fit == "face" or side == 0 else min(profile.vgg_size,
                                                                     max(side, 8))
    return int(size), 3 if colour else 1


def _announce(n: int, size: int, channels: int, show: bool) -> None:
    if show and n > _ANNOUNCE_FROM:
        print(memory_note(n, size, size, channels), flush=True)


def _synthetic(settings, profile, seed, n_max, progress) -> FaceSet:
    from .. import synth

    fs = synth.make_dataset(profile.synthetic_size, seed=seed, size=48, channels=1,
                            data_dir=settings.data_dir, progress=progress)
    return stratified_subsample(fs, n_max, seed=seed)


def _fer2013_csv(path, seed, n_max, progress) -> FaceSet:
    rows = fer2013.count_rows(path) if Path(path).is_file() else 0
    _announce(rows, fer2013.FER2013_SIZE, 1, progress)
    return stratified_subsample(fer2013.load_fer2013(path, progress=progress), n_max, seed=seed)


def _folder(path, settings, profile, seed, n_max, progress, for_model, fit) -> FaceSet:
    scan = folders.scan_folder(path)
    size, channels = read_plan(scan.files, profile, for_model, fit)
    n = len(scan.files) if n_max is None else min(n_max, len(scan.files))
    _announce(n, size, channels, progress)
    return folders.read_folder(scan, size=size, channels=channels, fit=fit or "crop",
                               progress=progress, groups=settings.groups, limit=n_max, seed=seed)


def _au_csv(path, settings, profile, seed, n_max, progress, for_model, fit) -> FaceSet:
    sample = au_csv.image_files(path, sample=24) if for_model == "vgg" else []
    size, channels = read_plan(sample, profile, for_model)
    if progress:
        rows = fer2013.count_rows(path)
        _announce(rows if n_max is None else min(rows, n_max), size, channels, progress)
    return au_csv.load_au_csv(path, size=size, channels=channels, fit=fit or "crop",
                              progress=progress, groups=settings.groups, limit=n_max, seed=seed)


def load_dataset(spec: str | None = None, profile=None, settings=None, seed: int | None = None,
                 progress: bool = True, *, for_model: str = "small", limit="profile",
                 fit: str | None = None) -> FaceSet:
    """Load the data set named by `spec` (a FER_DATASET value) at the size its model needs.

    Args:
        spec: "synthetic", "fer2013", "fer2013:PATH", "folder:PATH" or "au-csv:PATH"; default:
            the `FER_DATASET` setting.
        profile: a Profile or profile name ("ci", "laptop", "full"); default: the setting.
        settings: Settings to take the defaults from; default: `get_settings()` (FER_GROUPS
            gives folder and au-csv sets their person ids).
        seed: seed for rendering and subsampling; default: the settings' seed.
        progress: show progress bars, and the memory a large set takes before it is read.
        for_model: the consumer. "small": the profile's `image_size` (48), grey. "vgg" (VGG16,
            EAC-Net): the profile's `vgg_size`, RGB when the files are colour (see
            `read_plan`). FER2013's CSV is 48 px grey whatever the consumer, and so is the
            built-in set (it is rendered at 48 px; `to_tf_dataset` resizes each batch).
        limit: "profile" (at most `profile.num_images`, stratified by class and split), None
            (everything) or a number of faces. Folder and au-csv sets draw the files before
            reading, so a small limit reads only what it keeps.
        fit: for folder sets "crop" (default), "stretch" or "face" (detect and crop each face
            exactly as `predict` does: raw photos); for au-csv "crop" or "stretch".

    Returns:
        FaceSet (uint8), with `split` when the set has its own and `groups` when known.
    """
    settings, profile, seed, spec = _resolve(spec, profile, settings, seed)
    kind, _, path = spec.partition(":")
    _check_options(for_model, limit, fit, kind)
    n_max = profile.num_images if limit == "profile" else limit
    if kind == "synthetic":
        return _synthetic(settings, profile, seed, n_max, progress)
    if kind == "fer2013":
        return _fer2013_csv(path, seed, n_max, progress)
    if kind == "folder":
        return _folder(path, settings, profile, seed, n_max, progress, for_model, fit)
    return _au_csv(path, settings, profile, seed, n_max, progress, for_model, fit)
