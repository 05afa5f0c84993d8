"""Starting a classifier from a trained model (fer_utils.transfer), and a CIFE-shaped folder."""

import hashlib
import json
import re

import keras
import numpy as np
import pytest
from PIL import Image
from vgg_weights import write_keras_notop_h5

import fer_utils as fu
from fer_utils import data, models, train, transfer
from fer_utils.models import vgg

SMALL = dict(filters=(4, 8, 8), kernel="3x3x2", batch_norm=True, hidden_units=8, dropout=0.3)
SHAPE = (24, 24, 1)


def _faces(n=24, classes=("a", "b", "c"), shape=SHAPE, seed=0):
    rng = np.random.default_rng(seed)
    return data.FaceSet(images=rng.integers(0, 256, (n, *shape), dtype=np.uint8),
                        labels=np.arange(n) % len(classes), class_names=tuple(classes))


def _save_run(folder, model, **meta):
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / "model.keras")
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


@pytest.fixture(scope="module")
def source():
    """A small CNN of the kit (batch norm, 3 blocks) with non-trivial weights."""
    keras.utils.set_random_seed(0)
    model = models.small_cnn(SHAPE, 7, name="source_cnn", **SMALL)
    for layer in model.layers:  # move the batch-norm statistics away from 0 / 1
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(np.full(layer.moving_mean.shape, -0.1, "float32"))
            layer.moving_variance.assign(np.full(layer.moving_variance.shape, 0.5, "float32"))
    return model


@pytest.fixture(scope="module")
def run_folder(source, tmp_path_factory):
    """`train --out`'s layout: model.keras + meta.json naming the data set and classes."""
    return _save_run(tmp_path_factory.mktemp("runs") / "cli-train-small", source,
                     dataset="fer2013:/data/fer2013.csv", class_names=list(data.EXPRESSIONS),
                     test_accuracy=0.61)


def _features(model, last, x):
    return np.asarray(keras.Model(model.inputs, model.get_layer(last).output)(x))


def test_run_folder_gives_the_same_trunk_a_new_head_and_a_record(source, run_folder):
    start = transfer.init_from(run_folder, 3, class_names=("x", "y", "z"), head_units=(16,))
    x = np.random.default_rng(1).random((4, *SHAPE)).astype("float32") * 255
    np.testing.assert_allclose(_features(start.model, "flatten", x),
                               _features(source, "flatten", x), rtol=1e-5, atol=1e-5)
    assert start.model.output_shape == (None, 3)
    assert [layer.name for layer in start.model.layers[-3:]] == \
        ["head_fc1", "head_dropout1", "predictions"]
    record = json.loads(json.dumps(start.source))  # JSON-ready
    digest = hashlib.sha256((run_folder / "model.keras").read_bytes()).hexdigest()
    assert record["sha256"] == digest and record["kind"] == "run folder"
    assert record["dataset"] == "fer2013:/data/fer2013.csv"
    assert record["class_names"] == list(data.EXPRESSIONS)
    assert record["new_classes"] == ["x", "y", "z"] and record["test_accuracy"] == 0.61
    assert record["trunk"]["first"] == "block1_conv1" and record["trunk"]["last"] == "flatten"
    assert "run folder" in str(start) or str(run_folder) in str(start)


@pytest.mark.parametrize("mode, first_trained", [("head", "head_fc1"),
                                                 ("last-block", "block3_conv1"),
                                                 ("layerwise", "block2_conv1"),
                                                 ("all", "block1_conv1")])
def test_each_mode_freezes_a_prefix_that_fit_classifier_computes_once(run_folder, mode,
                                                                      first_trained):
    start = transfer.init_from(run_folder, 3, mode=mode, head_units=(8,), learning_rate=1e-2)
    assert start.trainable_from == first_trained
    model = start.model
    before = {layer.name: [w.copy() for w in layer.get_weights()] for layer in model.layers}
    result = train.fit_classifier(model, _faces(), epochs=1, batch_size=8, seed=0, verbose=0,
                                  optimizer=start.optimizer or keras.optimizers.Adam(1e-2))
    assert result.path == ("full" if mode == "all" else "cached"), result.reason
    names = [layer.name for layer in model.layers]
    for layer in model.layers:
        if not layer.trainable_weights and not isinstance(layer, keras.layers.BatchNormalization):
            continue
        moved = any(not np.array_equal(a, b) for a, b in zip(layer.get_weights(),
                                                             before[layer.name]))
        assert moved == (names.index(layer.name) >= names.index(first_trained)), layer.name


def test_layerwise_rates_first_block_frozen_middle_small_last_block_and_head_full(run_folder):
    start = transfer.init_from(run_folder, 3, mode="layerwise", learning_rate=1e-3,
                               middle_rate=0.1)
    assert start.source["learning_rates"] == {"block1_": 0.0, "block2_": 1e-4, "block3_": 1e-3}
    assert not start.model.get_layer("block1_conv1").trainable
    rates = {name: start.optimizer.rate_of(name)
             for name in ("block2_conv1", "block3_conv2", "head_fc1", "predictions")}
    assert rates == pytest.approx({"block2_conv1": 1e-4, "block3_conv2": 1e-3,
                                   "head_fc1": 1e-3, "predictions": 1e-3})
    assert start.optimizer is not None
    assert transfer.init_from(run_folder, 3, mode="last-block").optimizer is None


def test_keras_file_flip_tta_wrapper_and_model_in_memory(source, tmp_path):
    wrapped = models.with_flip_tta(source)
    wrapped.save(tmp_path / "tta.keras")
    start = transfer.init_from(tmp_path / "tta.keras", 2)
    assert "test-time flips" in start.source["note"]
    assert start.source["kind"] == "keras" and start.source["dataset"] is None
    in_memory = transfer.init_from(source, 2)
    assert in_memory.source["path"] is None and in_memory.source["sha256"] is None


def test_head_keep_continues_the_same_classes_and_the_same_outputs(source, run_folder):
    start = transfer.init_from(run_folder, 7, head="keep", class_names=data.EXPRESSIONS,
                               mode="all")
    x = np.random.default_rng(2).random((3, *SHAPE)).astype("float32") * 255
    np.testing.assert_allclose(np.asarray(start.model(x)), np.asarray(source(x)),
                               rtol=1e-5, atol=1e-6)


def test_another_input_size_rebuilds_the_conv_trunk(source, run_folder):
    start = transfer.init_from(run_folder, 3, input_shape=(40, 40, 1))
    assert start.model.input_shape == (None, 40, 40, 1)
    for name in ("block1_conv1", "block3_conv2", "block2_bn1"):
        for got, want in zip(start.model.get_layer(name).get_weights(),
                             source.get_layer(name).get_weights()):
            np.testing.assert_array_equal(got, want)


def test_weights_file_with_its_architecture(source, tmp_path):
    file = tmp_path / "small.weights.h5"
    source.save_weights(file)
    start = transfer.init_from(file, 3, architecture=lambda: models.small_cnn(
        SHAPE, 7, name="rebuilt", **SMALL))
    np.testing.assert_array_equal(start.model.get_layer("block2_conv2").get_weights()[0],
                                  source.get_layer("block2_conv2").get_weights()[0])
    assert start.source["kind"] == "weights" and len(start.source["sha256"]) == 64


def test_vgg16_classifier_and_a_vgg16_notop_weights_file(tmp_path):
    keras.utils.set_random_seed(3)
    classifier = vgg.vgg16_classifier((32, 32, 3), 7, weights=None, head=(8,), verbose=False)
    classifier.save(tmp_path / "vgg.keras")
    start = transfer.init_from(tmp_path / "vgg.keras", 4, head_units=(8,))
    assert start.trainable_from == "block5_conv1"  # the source's recipe: conv1-4 frozen
    assert start.source["trunk"]["last"] == "avg_pool"
    np.testing.assert_array_equal(start.model.get_layer("block4_conv3").get_weights()[0],
                                  classifier.get_layer("block4_conv3").get_weights()[0])
    base = vgg.vgg16_base((32, 32, 3), weights=None)
    notop = write_keras_notop_h5(tmp_path / "notop.h5", base)
    from_file = transfer.init_from(notop, 4, input_shape=(32, 32, 3), pooling="avg",
                                   mode="head", head_units=())
    assert from_file.source["kind"] == "VGG16 weights"
    assert from_file.source["preprocess_added"] == "vgg"  # it takes raw pixels, as the kit's
    assert [layer.name for layer in from_file.model.layers[-2:]] == ["global_pool",
                                                                     "predictions"]
    np.testing.assert_array_equal(from_file.model.get_layer("block5_conv3").get_weights()[0],
                                  base.get_layer("block5_conv3").get_weights()[0])


def _error(excinfo, *words):
    text = str(excinfo.value)
    assert "\n" not in text, text
    for word in words:
        assert word in text, text


def test_missing_file_and_folder_without_a_model(tmp_path):
    with pytest.raises(FileNotFoundError) as excinfo:
        transfer.init_from(tmp_path / "nowhere" / "model.keras", 3)
    _error(excinfo, "nowhere", "does not exist")
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(transfer.TransferError) as excinfo:
        transfer.init_from(tmp_path / "empty_run", 3)
    _error(excinfo, "empty_run", "no model.keras")


def test_files_that_are_not_models(tmp_path):
    cases = {"broken.keras": ("broken.keras", "not a Keras model"),
             "weights.h5": ("weights.h5", "not HDF5"),
             "notes.txt": ("notes.txt", "not a model file")}
    for name, words in cases.items():
        (tmp_path / name).write_text("just text, no model")
        with pytest.raises(transfer.TransferError) as excinfo:
            transfer.init_from(tmp_path / name, 3)
        _error(excinfo, *words)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "model.keras").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(transfer.TransferError) as excinfo:
        transfer.init_from(tmp_path / "run", 3)
    _error(excinfo, "model.keras", "not a Keras model")


def test_weights_without_architecture_and_weights_that_do_not_fit(source, tmp_path):
    file = tmp_path / "small.weights.h5"
    source.save_weights(file)
    with pytest.raises(transfer.TransferError) as excinfo:
        transfer.init_from(file, 3)
    _error(excinfo, "small.weights.h5", "architecture=")
    with pytest.raises(transfer.TransferError) as excinfo:
        transfer.init_from(file, 3, architecture=models.small_cnn(SHAPE, 7, filters=(4, 8)))
    _error(excinfo, "small.weights.h5", "do not fit")


def test_inputs_that_cannot_take_the_new_faces(run_folder):
    with pytest.raises(transfer.TransferError) as excinfo:
        transfer.init_from(run_folder, 3, input_shape=(24, 24, 3))
    _error(excinfo, str(run_folder), "24×24×1", "channels")
    with pytest.raises(transfer.TransferError) as excinfo:
        transfer.init_from(run_folder, 3, input_shape=(4, 4, 1))
    _error(excinfo, str(run_folder), "cannot take 4×4×1")


def test_class_mismatch_where_the_head_is_kept(run_folder):
    with pytest.raises(transfer.TransferError) as excinfo:
        transfer.init_from(run_folder, 7, head="keep", class_names=data.EXPRESSIONS[::-1])
    _error(excinfo, "class mismatch", "angry", str(run_folder))
    with pytest.raises(transfer.TransferError) as excinfo:
        transfer.init_from(run_folder, 3, head="keep")
    _error(excinfo, "[7] outputs", "3 classes")
    # a new head takes any classes
    assert transfer.init_from(run_folder, 3, class_names=("x", "y", "z")).model


def test_models_of_another_shape(tmp_path):
    plain = keras.Sequential([keras.Input(SHAPE), keras.layers.Conv2D(4, 3, name="c1"),
                              keras.layers.Flatten(name="flat"),
                              keras.layers.Dense(7, name="out")], name="plain")
    with pytest.raises(transfer.TransferError) as excinfo:
        transfer.init_from(plain, 3)
    _error(excinfo, "no conv blocks", "trunk_end")
    with pytest.raises(transfer.TransferError) as excinfo:
        transfer.init_from(plain, 3, trunk_end="flat", mode="head")
    _error(excinfo, "no preprocessing layer", "preprocess='scale'")
    start = transfer.init_from(plain, 3, trunk_end="flat", mode="head", preprocess="scale")
    assert start.trainable_from == "head_fc1" and start.source["preprocess_added"] == "scale"
    assert start.model.layers[1].name == "preprocess"
    with pytest.raises(transfer.TransferError) as excinfo:
        transfer.init_from(plain, 3, trunk_end="flat", mode="last-block", preprocess="scale")
    _error(excinfo, "mode='last-block'", "blockN_")
    a, b = keras.Input(SHAPE), keras.Input(SHAPE)
    two = keras.Model([a, b], keras.layers.Add()([keras.layers.Conv2D(
        2, 3, name="block1_conv1")(a), keras.layers.Conv2D(2, 3, name="block1_conv2")(b)]))
    with pytest.raises(transfer.TransferError) as excinfo:
        transfer.init_from(two, 3)
    _error(excinfo, "2 inputs")


def test_bad_settings_are_named(run_folder):
    for kwargs, words in (({"mode": "top"}, ("mode='top'", "last-block")),
                          ({"head": "old"}, ("head='old'",)),
                          ({"dropout": 1.5}, ("dropout",)),
                          ({"class_names": ("a", "b")}, ("2 class_names",)),
                          ({"pooling": "sum"}, ("pooling='sum'",))):
        with pytest.raises(ValueError) as excinfo:
            transfer.init_from(run_folder, 3, **kwargs)
        _error(excinfo, *words)


def _write_cife_like(root, per_class=3):
    """A tiny folder in the layout the README gives for CIFE: train/ and test/, 7 classes,
    colour web pictures of different sizes (JPEG and PNG)."""
    rng = np.random.default_rng(5)
    for split, n in (("train", per_class), ("test", 1)):
        for name in ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                side = int(rng.integers(40, 90))
                pixels = rng.integers(0, 256, (side, side + 7, 3), dtype=np.uint8)
                ext = "jpg" if i % 2 == 0 else "png"
                Image.fromarray(pixels).save(folder / f"{name}_{i:04d}.{ext}")
    return root


def test_a_cife_shaped_folder_loads_and_fine_tunes_from_a_fer_model(run_folder, tmp_path):
    root = _write_cife_like(tmp_path / "cife")
    settings = fu.config.get_settings({"FER_DATASET": f"folder:{root}", "FER_PROFILE": "ci",
                                       "FER_DATA_DIR": str(tmp_path / "data"),
                                       "FER_LOG_DIR": str(tmp_path / "logs")})
    faces = data.load_dataset(settings=settings, progress=False)
    assert faces.class_names == data.EXPRESSIONS  # CIFE's names keep FER2013's order
    assert faces.image_shape == (48, 48, 1) and len(faces) == 7 * 4
    train_set, val_set, test_set = data.split(faces, seed=0)
    assert len(test_set) == 7 and len(train_set) + len(val_set) == 21
    start = transfer.init_from(run_folder, faces.num_classes, class_names=faces.class_names,
                               head="keep", mode="last-block")
    result = train.fit_classifier(start.model, train_set, val_set, epochs=1, batch_size=8,
                                  verbose=0)
    assert result.path == "cached" and result.model.input_shape == (None, *SHAPE)


# --- `python -m fer_utils train --init-from`, end to end ----------------------------------


def _cli(args, workdir, **env):
    """`python -m fer_utils ARGS` in `workdir`, ci profile, built-in set unless `env` says."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    full = dict(os.environ, FER_PROFILE="ci", FER_DATASET="synthetic", FER_WEIGHTS="none",
                FER_DATA_DIR=str(workdir / "data"), FER_LOG_DIR=str(workdir / "logs"),
                TF_CPP_MIN_LOG_LEVEL="2", MPLBACKEND="Agg",
                PYTHONPATH=os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH"))
                                           if p))
    full.update(env)
    return subprocess.run([sys.executable, "-m", "fer_utils", *map(str, args)], cwd=workdir,
                          env=full, capture_output=True, text=True, timeout=600)


# TensorFlow's own native log lines (its oneDNN banner through absl), printed while it loads
# whatever the log level; the kit's error is what follows them.
_TF_NATIVE_LOG = re.compile(r"^(WARNING: All log messages before absl::InitializeLog\(\)|"
                            r"[IWE]\d{4} [\d:.]+ +\d+ \w+\.cc:\d+\])")


def _one_line_error(result, *words):
    """Exit status 1 and one `error:` line naming every word (TensorFlow's banner aside)."""
    assert result.returncode == 1, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines()
             if line.strip() and not _TF_NATIVE_LOG.match(line)]
    assert len(lines) == 1 and lines[0].startswith("error:"), lines
    for word in words:
        assert word in lines[0], (word, lines[0])


def _write_other_classes(root, per_class=12, classes=("calm", "tense", "smiling")):
    """A small folder of 48 px grey faces in three classes the source never had."""
    rng = np.random.default_rng(3)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (48, 48), dtype=np.uint8)).save(
                root / name / f"p{i % 6:02d}_{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory):
    """A 1-epoch `train` on the built-in set, then `train --init-from` it on other classes."""
    workdir = tmp_path_factory.mktemp("cli_transfer")
    source = workdir / "source-run"
    result = _cli(["train", "--out", source, "--epochs", "1", "--tta", "off",
                   "--precision", "fp32"], workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    folder = _write_other_classes(workdir / "my_faces")
    tuned = workdir / "tuned-run"
    result = _cli(["train", "--init-from", source, "--out", tuned, "--epochs", "1",
                   "--tta", "off", "--precision", "fp32"], workdir,
                  FER_DATASET=f"folder:{folder}", FER_GROUPS=r"p(\d+)_")
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir, source, folder, tuned, result


def test_train_init_from_a_run_records_the_source_in_meta_json(cli_runs):
    workdir, source, folder, tuned, result = cli_runs
    source_meta = json.loads((source / "meta.json").read_text())
    meta = json.loads((tuned / "meta.json").read_text())
    record = meta["init_from"]
    assert record["path"] == str(source.resolve())
    assert record["sha256"] == hashlib.sha256((source / "model.keras").read_bytes()).hexdigest()
    assert record["dataset"] == source_meta["dataset"] == "synthetic"
    assert record["class_names"] == source_meta["class_names"] == list(data.EXPRESSIONS)
    assert record["new_classes"] == meta["class_names"] == ["calm", "smiling", "tense"]
    assert record["mode"] == "last-block" and record["head"] == "new"
    assert f"init_from {source.resolve()}" in result.stdout
    model = keras.saving.load_model(tuned / "model.keras")
    assert model.output_shape == (None, 3) and model.input_shape == (None, 48, 48, 1)
    # the trunk came from the source: its first conv kernel, untouched (block 1 is frozen)
    before = keras.saving.load_model(source / "model.keras")
    np.testing.assert_array_equal(model.get_layer("block1_conv1").get_weights()[0],
                                  before.get_layer("block1_conv1").get_weights()[0])
    assert "test_macro_f1" in meta and meta["test_faces"] > 0


def test_train_init_from_errors_are_one_line(cli_runs, tmp_path):
    workdir, source, folder, _, _ = cli_runs
    env = {"FER_DATASET": f"folder:{folder}"}
    missing = tmp_path / "no-such-run"
    _one_line_error(_cli(["train", "--init-from", missing, "--out", tmp_path / "a"], workdir,
                         **env), str(missing), "does not exist")
    text = tmp_path / "notes.keras"
    text.write_text("not a model")
    _one_line_error(_cli(["train", "--init-from", text, "--out", tmp_path / "b"], workdir,
                         **env), "notes.keras", "not a Keras model")
    plain = tmp_path / "plain.keras"  # a model without the kit's blockN_ conv trunk
    keras.Sequential([keras.Input((48, 48, 1)), keras.layers.Conv2D(2, 3, name="conv"),
                      keras.layers.Flatten(name="flat"), keras.layers.Dense(3, name="out")]
                     ).save(plain)
    _one_line_error(_cli(["train", "--init-from", plain, "--out", tmp_path / "c"], workdir,
                         **env), "plain.keras", "no conv blocks")
    _one_line_error(_cli(["train", "--init-from", source, "--size", "64", "--out",
                          tmp_path / "d"], workdir, **env), "--size 64", "48×48")
    # the source's own head kept for another number of classes: one line naming both
    with pytest.raises(transfer.TransferError) as excinfo:
        transfer.init_from(source, 3, head="keep", class_names=("calm", "smiling", "tense"))
    _error(excinfo, str(source), "[7] outputs", "3 classes")


def test_train_keep_head_fine_tunes_the_source_head_on_the_same_classes(cli_runs, tmp_path):
    workdir, source, folder, _, _ = cli_runs
    cife = _write_cife_like(tmp_path / "cife", per_class=3)
    out = tmp_path / "kept"
    result = _cli(["train", "--init-from", source, "--keep-head", "--out", out, "--epochs", "1",
                   "--tta", "off", "--precision", "fp32"], workdir, FER_DATASET=f"folder:{cife}")
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((out / "meta.json").read_text())["init_from"]
    assert record["head"] == "keep" and record["new_classes"] == list(data.EXPRESSIONS)
    tuned, before = (keras.saving.load_model(p / "model.keras") for p in (out, source))
    assert [layer.name for layer in tuned.layers][-3:] == [layer.name for layer in
                                                            before.layers][-3:]
    # another number of classes than the source's: one line; no --init-from: one line
    _one_line_error(_cli(["train", "--init-from", source, "--keep-head", "--out",
                          tmp_path / "e", "--epochs", "1"], workdir,
                         FER_DATASET=f"folder:{folder}"), "head='keep'", "3 classes")
    _one_line_error(_cli(["train", "--keep-head", "--out", tmp_path / "f"], workdir),
                    "--keep-head needs --init-from")


def test_an_interrupted_fine_tune_resumes_only_with_its_own_options(cli_runs, tmp_path):
    from fer_utils.train.recipe import Recipe, _check_out, plan_run

    workdir, source, folder, _, _ = cli_runs
    settings = fu.config.get_settings({"FER_PROFILE": "ci", "FER_DATASET": f"folder:{folder}",
                                       "FER_DATA_DIR": str(tmp_path), "FER_LOG_DIR": str(tmp_path)})
    out = tmp_path / "run"
    plan = plan_run(Recipe(init_from=str(source), epochs=2), settings)
    assert plan.init_from == str(source.resolve()) and plan.head == "new"
    _check_out(out, plan, settings)
    (out / "backup").mkdir()  # an interrupted run
    _check_out(out, plan_run(Recipe(init_from=str(source), epochs=2), settings), settings)
    for other, field in ((dict(fine_tune="layerwise"), "fine_tune"), (dict(keep_head=True), "head")):
        with pytest.raises(ValueError, match=rf"interrupted run made with other options \(.*{field}"):
            _check_out(out, plan_run(Recipe(init_from=str(source), epochs=2, **other), settings),
                       settings)
