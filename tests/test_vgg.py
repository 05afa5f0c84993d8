"""VGG16 transfer learning: conv base, frozen layers, weights files, offline fallback, fine-tune."""

import time

import h5py
import numpy as np
import pytest

keras = pytest.importorskip("keras")

from fer_utils.models import vgg  # noqa: E402

SHAPE = (32, 32, 3)  # the smallest input VGG16 takes: fast tests


@pytest.fixture(scope="module")
def base():
    """One randomly initialised conv base shared by the read-only tests."""
    keras.utils.set_random_seed(0)
    return vgg.vgg16_base(SHAPE, weights=None)


@pytest.fixture
def no_imagenet(tmp_path, monkeypatch):
    """An empty Keras cache: ImageNet weights are 'not available offline'."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setattr(vgg, "_keras_home_candidates",
                        lambda: [tmp_path / "keras_home"])
    return tmp_path / "keras_home"


def _conv_arrays(model):
    return {name: model.get_layer(name).get_weights() for name in vgg.VGG16_CONV_LAYERS}


def _write_keras2_notop(path, model):
    """Write weights the way Keras 2's vgg16 ..._notop.h5 file stores them."""
    with h5py.File(path, "w") as f:
        names = [layer.name for layer in model.layers[1:]]
        f.attrs["layer_names"] = [n.encode() for n in names]
        for name in names:
            group = f.create_group(name)
            weights = model.get_layer(name).get_weights()
            wnames = [f"{name}_W_1:0", f"{name}_b_1:0"] if weights else []
            group.attrs["weight_names"] = [n.encode() for n in wnames]
            for wname, array in zip(wnames, weights):
                group.create_dataset(wname, data=array)


def test_conv_base_has_keras_names_and_14714688_weights(base):
    assert base.count_params() == vgg.VGG16_BASE_WEIGHTS == 14_714_688
    assert [layer.name for layer in base.layers[1:]] == list(vgg.VGG16_LAYERS)
    reference = keras.applications.VGG16(include_top=False, weights=None, input_shape=SHAPE)
    assert [(l.name, [tuple(w.shape) for w in l.weights]) for l in reference.layers[1:]] == \
        [(l.name, [tuple(w.shape) for w in l.weights]) for l in base.layers[1:]]
    assert base.weights_status == "random (weights=none)"


@pytest.mark.parametrize("trainable_from, first_trainable", [
    ("block5_conv1", "block5_conv1"), ("block4_conv1", "block4_conv1"),
    ("block3_conv2", "block3_conv2"), ("head", "fc6"), (None, "block1_conv1")])
def test_layers_before_trainable_from_are_frozen(trainable_from, first_trainable):
    model = vgg.vgg16_classifier(SHAPE, num_classes=7, weights="none",
                                 trainable_from=trainable_from, head=(8,))
    with_weights = [layer for layer in model.layers if layer.weights]
    trains = [layer.trainable for layer in with_weights]
    split = [layer.name for layer in with_weights].index(first_trainable)
    assert trains == [False] * split + [True] * (len(trains) - split)
    summary = vgg.trainable_summary(model)
    assert summary["weights"].sum() == model.count_params()
    assert summary.loc[summary.trainable, "weights"].sum() == sum(
        int(np.prod(w.shape)) for w in model.trainable_weights)


def test_source_recipe_counts():
    model = vgg.vgg16_classifier(SHAPE, weights=None, head=(4096, 2048), pooling="flatten")
    assert [layer.name for layer in model.layers[-5:]] == [
        "fc6", "drop6", "fc7", "drop7", "predictions"]
    assert model.output_shape == (None, 7)
    frozen = sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)
    block5 = 3 * (3 * 3 * 512 * 512 + 512)
    assert frozen == vgg.VGG16_BASE_WEIGHTS - block5


@pytest.mark.parametrize("kwargs, message", [
    (dict(trainable_from="block6_conv1"), "valid: None (train everything), block1_conv1"),
    (dict(input_shape=(16, 16, 3)), ">= 32"),
    (dict(input_shape=(48, 48)), "(height, width, channels)"),
    (dict(num_classes=1), "num_classes must be an integer >= 2, got 1"),
    (dict(head=(0,)), "head must be"),
    (dict(dropout=1.5), "dropout must be in [0, 1), got 1.5"),
    (dict(pooling="mean"), "pooling must be 'avg', 'max' or 'flatten', got 'mean'"),
    (dict(weights="no/such/file.h5"), "'no/such/file.h5' is neither"),
    (dict(weights="imagenet", input_shape=(48, 48, 1)), "need 3 input channels"),
])
def test_bad_arguments_are_named(kwargs, message):
    args = dict(input_shape=SHAPE, weights=None)
    args.update(kwargs)
    with pytest.raises(ValueError) as error:
        vgg.vgg16_classifier(**args)
    assert message in str(error.value)


@pytest.mark.parametrize("fmt", ["keras3", "keras2"])
def test_weights_from_a_file_load_by_name_into_any_model(base, tmp_path, fmt):
    path = tmp_path / ("base.weights.h5" if fmt == "keras3" else "notop.h5")
    if fmt == "keras3":
        base.save_weights(path)
    else:
        _write_keras2_notop(path, base)
    model = vgg.vgg16_classifier(SHAPE, weights=path, head=(8,))
    assert model.weights_status == f"file:{path.name}"
    expected = _conv_arrays(base)
    for name, arrays in _conv_arrays(model).items():
        for got, want in zip(arrays, expected[name]):
            np.testing.assert_array_equal(got, want)
    # Another model holding only blocks 1-3 (as E-Net reuses them) loads by name too.
    inputs = keras.Input(SHAPE)
    partial = keras.Model(inputs, vgg._conv_blocks(inputs, blocks=(1, 2, 3)))
    assert vgg.load_vgg16_weights(partial, str(path)).startswith("file:")
    np.testing.assert_array_equal(partial.get_layer("block3_conv3").get_weights()[0],
                                  expected["block3_conv3"][0])


def test_shape_mismatch_names_layer_and_shapes(base, tmp_path):
    path = tmp_path / "base.weights.h5"
    base.save_weights(path)
    grey = vgg.vgg16_base((32, 32, 1), weights=None)
    before = grey.get_layer("block2_conv1").get_weights()[0].copy()
    with pytest.raises(vgg.WeightsError) as error:
        vgg.load_vgg16_weights(grey, path)
    assert "'block1_conv1'" in str(error.value)
    assert "(3, 3, 1, 64)" in str(error.value) and "(3, 3, 3, 64)" in str(error.value)
    # all or nothing: no layer was changed
    np.testing.assert_array_equal(grey.get_layer("block2_conv1").get_weights()[0], before)


def test_unreadable_or_foreign_files_are_clear_errors(base, tmp_path):
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    with pytest.raises(vgg.WeightsError, match="not an HDF5 file"):
        vgg.load_vgg16_weights(base, text)
    other = tmp_path / "dense.weights.h5"
    dense = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    dense.save_weights(other)
    with pytest.raises(vgg.WeightsError, match="holds no VGG16 conv weights"):
        vgg.load_vgg16_weights(base, other)
    with pytest.raises(vgg.WeightsError, match="has no layer named like VGG16"):
        vgg.load_vgg16_weights(dense, other)


def test_offline_imagenet_warns_and_stays_random(no_imagenet):
    with pytest.warns(UserWarning, match="not available offline.*random initialisation"):
        model = vgg.vgg16_classifier(SHAPE, weights="imagenet", head=(8,))
    assert model.weights_status == "random (ImageNet weights not available offline)"
    assert not any(path.exists() for path in no_imagenet.rglob("*.h5"))  # nothing downloaded


def test_imagenet_is_read_from_the_keras_cache(base, no_imagenet):
    cache = no_imagenet / "models" / vgg.IMAGENET_NOTOP_FILE
    cache.parent.mkdir(parents=True)
    _write_keras2_notop(cache, base)
    model = vgg.vgg16_base(SHAPE, weights="imagenet")
    assert model.weights_status == "imagenet"
    np.testing.assert_array_equal(model.get_layer("block5_conv3").get_weights()[0],
                                  base.get_layer("block5_conv3").get_weights()[0])


def test_fetch_fails_fast_and_cleanly_when_offline(no_imagenet):
    start = time.perf_counter()
    with pytest.raises(RuntimeError, match="could not download the ImageNet VGG16 weights"):
        vgg.fetch_imagenet_weights(timeout=2, url="http://127.0.0.1:9/vgg16_notop.h5")
    assert time.perf_counter() - start < 10
    assert not list(no_imagenet.rglob("*")) or not list(no_imagenet.rglob("*.h5*"))


def test_vgg_preprocess_matches_keras_caffe_mode():
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (2, 40, 40, 1), dtype=np.uint8)
    ours = np.asarray(vgg.vgg_preprocess(grey, 40))
    theirs = keras.applications.vgg16.preprocess_input(
        np.repeat(grey.astype("float32"), 3, axis=-1))
    np.testing.assert_allclose(ours, theirs, atol=1e-4)
    assert np.asarray(vgg.vgg_preprocess(grey, 64)).shape == (2, 64, 64, 3)


def test_cached_fine_tune_equals_the_plain_path():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (6, 36, 36, 1), dtype=np.uint8)
    y = rng.integers(0, 3, 6)
    keras.utils.set_random_seed(1)
    kwargs = dict(num_classes=3, weights=None, head=(8,), dropout=0.0)
    a = vgg.vgg16_classifier(SHAPE, **kwargs)
    b = vgg.vgg16_classifier(SHAPE, **kwargs)
    b.set_weights(a.get_weights())
    before = a.get_layer("block5_conv1").get_weights()[0].copy()
    train = dict(epochs=1, batch_size=6, learning_rate=1e-3, precision="float32", verbose=0)
    ra = vgg.fine_tune(a, (x, y), (x, y), cache_features=True, **train)
    rb = vgg.fine_tune(b, (x, y), (x, y), cache_features=False, **train)
    assert (ra.path, rb.path) == ("cached", "plain")
    assert np.abs(a.get_layer("block5_conv1").get_weights()[0] - before).max() > 0  # it trained
    for name in ("block4_conv3", "block5_conv1", "block5_conv3", "fc6", "predictions"):
        np.testing.assert_allclose(a.get_layer(name).get_weights()[0],
                                   b.get_layer(name).get_weights()[0], atol=1e-6)
    np.testing.assert_array_equal(a.get_layer("block1_conv1").get_weights()[0],
                                  b.get_layer("block1_conv1").get_weights()[0])
    assert ra.val_accuracy == pytest.approx(rb.val_accuracy)
    assert ra.images_per_second > 0


def test_fine_tune_rejects_bad_arguments():
    model = vgg.vgg16_classifier(SHAPE, num_classes=3, weights=None, head=(4,))
    x = np.zeros((4, 32, 32, 1), np.uint8)
    with pytest.raises(ValueError, match="cannot be combined with augment=True"):
        vgg.fine_tune(model, (x, [0, 1, 2, 0]), cache_features=True, augment=True)
    with pytest.raises(ValueError, match=r"labels must lie in 0..2 .* got 0..5"):
        vgg.fine_tune(model, (x, [0, 1, 2, 5]), verbose=0)
    with pytest.raises(ValueError, match="epochs must be a positive integer, got 0"):
        vgg.fine_tune(model, (x, [0, 1, 2, 0]), epochs=0)
    with pytest.raises(ValueError, match="uint8"):
        vgg.fine_tune(model, (x.astype("float32"), [0, 1, 2, 0]))
    with pytest.raises(ValueError, match="precision must be"):
        vgg.fine_tune(model, (x, [0, 1, 2, 0]), precision="fp8")
