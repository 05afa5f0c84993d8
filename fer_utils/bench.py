"""Throughput benchmarks of the kit: rendering faces, 30× augmentation, VGG16 fine-tuning.

`python -m fer_utils bench` calls `run`; every figure is printed as a line ending in
`N img/s`. The training figure uses the kit's one training entry point,
`fu.train.fit_classifier`, as `python -m fer_utils train` and the notebooks do, and names its
path (cached or full), precision and weights.
"""

from __future__ import annotations

import time

import numpy as np

from .config import PRECISIONS

__all__ = ["WHAT", "run", "bench_generate", "bench_augment", "bench_train", "train_benchmark"]

WHAT = ("all", "generate", "augment", "train")


def _positive(name: str, value, allow_none: bool = True):
    """Return `value` as an int after checking it is a positive integer (or None)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"bench: {name} must be a positive integer, got {value!r}")
    return int(value)


def bench_generate(images: int | None = None, size: int | None = None, seed: int = 0) -> dict:
    """Time `fer_utils.synth.make_dataset` (no cache) and print `... N img/s`."""
    from . import config, synth

    profile = config.get_settings().profile
    n = images or min(profile.synthetic_size, 2000)
    size = size or 48
    start = time.perf_counter()
    synth.make_dataset(n, seed=seed, size=size, channels=1, cache=False, progress=False)
    seconds = time.perf_counter() - start
    result = {"what": "generate", "images": n, "size": size, "seconds": seconds,
              "images_per_second": n / seconds}
    print(f"generate: {n} synthetic faces at {size} px in {seconds:.1f} s: "
          f"{result['images_per_second']:.1f} img/s")
    return result


def bench_augment(images: int | None = None, size: int | None = None, seed: int = 0) -> dict:
    """Time `fer_utils.augment.expand_30x` on RGB faces; prints augmented images per second."""
    from . import augment, synth

    n = images or 100
    size = size or 96
    faces = synth.make_dataset(n, seed=seed, size=size, channels=3, cache=False, progress=False)
    start = time.perf_counter()
    out = augment.expand_30x(faces.images, faces.landmarks)
    seconds = time.perf_counter() - start
    produced = len(out[0] if isinstance(out, tuple) else out)
    result = {"what": "augment", "images": n, "produced": produced, "size": size,
              "seconds": seconds, "images_per_second": produced / seconds}
    print(f"augment: expand_30x on {n} RGB faces at {size} px -> {produced} images in "
          f"{seconds:.1f} s: {result['images_per_second']:.1f} img/s")
    return result


def train_benchmark(train, val, size: int, epochs: int, batch_size: int = 32, weights=None,
                    precision: str = "fp32", augment: bool = False, cache="auto",
                    callbacks=None, verbose: int = 0, seed: int = 0):
    """Fine-tune VGG16 block 5 + head with `fer_utils.train.fit_classifier`; a FitResult.

    The model is the TF-docs recipe's (`../shared/bench/tfdocs_recipe.py`): VGG16, global
    average pooling, a softmax dense layer (the recipe's 0.2 dropout aside). Blocks 1-4 are
    frozen whatever the weights, as in the recipe and the source (with random weights that
    teaches nothing, but it times the same work as the recipe), so the kit takes its cached
    path unless `augment` asks for a new image at every step.

    Args:
        train: FaceSet of training faces (uint8, any size/channels: resized to `size`, RGB).
        val: FaceSet of validation faces, or None (no validation inside the timed run).
        size: VGG16 input size in pixels.
        epochs: training epochs.
        batch_size: images per step.
        weights: VGG16 weights ("imagenet", "none", a path); default: the FER_WEIGHTS setting.
        precision: "fp32", "bf16" or "auto" (`fit_classifier`).
        augment: on-the-fly augmentation (full path).
        cache: `fit_classifier`'s cache choice ("auto", True, False).
        callbacks: Keras callbacks for the run (e.g. to time each epoch).
        verbose: Keras progress output.
        seed: Keras seed (initialisation, dropout, batch order).

    Returns:
        FitResult: `images_per_second` counts the whole run (feature caching included);
        `result.model.weights_status` names the VGG16 weights.
    """
    import warnings

    import keras

    from . import config
    from . import train as ftrain
    from .models import vgg

    if weights is None:
        weights = config.get_settings().weights
    keras.utils.set_random_seed(seed)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        model = vgg.vgg16_classifier((size, size, 3), num_classes=train.num_classes,
                                     weights=weights, trainable_from="block5_conv1", head=(),
                                     pooling="avg", verbose=False)
    return ftrain.fit_classifier(model, train, val, epochs=epochs, batch_size=batch_size,
                                 precision=precision, augment=augment, cache=cache,
                                 callbacks=callbacks, verbose=verbose, seed=seed)


def bench_train(data: str | None = None, size: int | None = None, epochs: int | None = None,
                images: int | None = None, precision: str = "fp32", augment: bool = False,
                verbose: int = 0) -> dict:
    """Time the VGG16 block 5 + head fine-tune on a data set and print `... N img/s`."""
    from . import config
    from . import data as fdata

    settings = config.get_settings()
    profile = settings.profile
    size = size or profile.vgg_size
    epochs = epochs or profile.finetune_epochs
    fs = fdata.load_dataset(data, settings=settings, progress=False)
    if images is not None and images < len(fs):
        fs = fdata.stratified_subsample(fs, images, seed=settings.seed)
    train, val, _ = fdata.split(fs, val=0.1, test=0.0, seed=settings.seed)
    result = train_benchmark(train, val, size, epochs, batch_size=profile.batch_size,
                             precision=precision, augment=augment, verbose=verbose,
                             seed=settings.seed)
    print(f"train: VGG16 block5+head fine-tune, {result.path} path, {result.precision}, "
          f"{'with' if augment else 'no'} augmentation, weights {result.model.weights_status}, "
          f"size={size} images={result.images} epochs={result.epochs} "
          f"val_accuracy={result.val_accuracy:.3f} in {result.seconds:.1f} s: "
          f"{result.images_per_second:.1f} img/s")
    return {"what": "train", "images": result.images, "size": size, "epochs": result.epochs,
            "seconds": result.seconds, "images_per_second": result.images_per_second,
            "val_accuracy": result.val_accuracy, "path": result.path,
            "precision": result.precision, "weights": result.model.weights_status,
            "augment": augment}


def run(what: str = "all", data: str | None = None, size: int | None = None,
        epochs: int | None = None, images: int | None = None, precision: str = "fp32",
        augment: bool = False) -> list:
    """Run one benchmark ("generate", "augment", "train") or "all"; print one line each.

    Args:
        what: "all", "generate" (synth.make_dataset), "augment" (augment.expand_30x) or
            "train" (VGG16 block 5 + head with `fit_classifier`).
        data: data-set spec for "train" (a FER_DATASET value); default: the setting.
        size: image size in pixels (generate: 48; augment: 96; train: the profile's vgg_size).
        epochs: fine-tune epochs; default: the profile's finetune_epochs.
        images: number of faces; defaults depend on the benchmark and profile.
        precision: "fp32", "bf16" or "auto" for "train" (see `fu.train.resolve_precision`).
        augment: "train" with on-the-fly augmentation (full path instead of cached).

    Returns:
        A list of result dicts (one per benchmark), each with "images_per_second".
    """
    if what not in WHAT:
        raise ValueError(f"bench: what={what!r} is not one of {', '.join(WHAT)}")
    size = _positive("size", size)
    epochs = _positive("epochs", epochs)
    images = _positive("images", images)
    if precision not in PRECISIONS:
        raise ValueError(f"bench: precision={precision!r} is not one of {', '.join(PRECISIONS)}")
    results = []
    if what in ("all", "generate"):
        results.append(bench_generate(images, size if what == "generate" else None))
    if what in ("all", "augment"):
        results.append(bench_augment(images if what == "augment" else None,
                                     size if what == "augment" else None))
    if what in ("all", "train"):
        results.append(bench_train(data, size, epochs, images, precision, augment))
    return results
