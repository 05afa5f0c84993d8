"""fer_utils.bench: argument checks and the `... N img/s` lines (tiny sizes, no downloads)."""

import re

import numpy as np
import pytest

from fer_utils import bench
from fer_utils import data as fdata

IMG_PER_S = re.compile(r"(\d+(\.\d+)?) img/s$")


@pytest.mark.parametrize("kwargs, message", [
    (dict(what="speed"), "what='speed' is not one of all, generate, augment, train"),
    (dict(what="train", size=0), "size must be a positive integer, got 0"),
    (dict(what="train", epochs=1.5), "epochs must be a positive integer, got 1.5"),
    (dict(what="generate", images=-3), "images must be a positive integer, got -3"),
    (dict(what="train", precision="fp8"), "precision='fp8' is not one of auto, fp32, bf16, fp16"),
])
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError) as error:
        bench.run(**kwargs)
    assert message in str(error.value)


def test_generate_prints_images_per_second(capsys):
    results = bench.run("generate", images=6, size=32)
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("generate: 6 synthetic faces at 32 px")
    rate = float(IMG_PER_S.search(line).group(1))
    # the line says the result (printed to 0.1 img/s)
    assert rate == pytest.approx(6 / results[0]["seconds"], rel=0.01, abs=0.05)


@pytest.fixture
def tiny_set(monkeypatch, tmp_path):
    """30 random 32 px faces in 3 classes instead of the configured data set."""
    rng = np.random.default_rng(0)
    faces = fdata.FaceSet(images=rng.integers(0, 256, (30, 32, 32, 1), dtype=np.uint8),
                          labels=np.arange(30) % 3, class_names=("a", "b", "c"))
    monkeypatch.setenv("FER_WEIGHTS", "none")
    monkeypatch.setenv("FER_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setattr(fdata, "load_dataset", lambda *args, **kwargs: faces)


@pytest.mark.parametrize("augment, path", [(False, "cached"), (True, "full")])
def test_train_uses_fit_classifier_and_names_path_precision_and_weights(tiny_set, capsys,
                                                                         augment, path):
    results = bench.run("train", data="synthetic", size=32, epochs=1, precision="fp32",
                        augment=augment)
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith(f"train: VGG16 block5+head fine-tune, {path} path, fp32, "
                           f"{'with' if augment else 'no'} augmentation, weights random "
                           f"(weights=none)")
    assert "size=32 images=27 epochs=1" in line
    rate = float(IMG_PER_S.search(line).group(1))
    assert rate == pytest.approx(27 / results[0]["seconds"], rel=0.01, abs=0.05)
    assert results[0]["path"] == path
    assert round(results[0]["val_accuracy"] * 3, 6) in (0, 1, 2, 3)  # accuracy on 3 faces


def test_augment_counts_the_30x_output(capsys):
    results = bench.run("augment", images=2, size=32)
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert "expand_30x on 2 RGB faces at 32 px -> 60 images" in line and IMG_PER_S.search(line)
    assert results[0]["produced"] == 60
