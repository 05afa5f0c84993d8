"""Starting a classifier from a trained model (fer_utils.transfer), and a CIFE-shaped folder."""

import hashlib
import json

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
