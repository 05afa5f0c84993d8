"""VGG16: the one trunk (keras.applications), its weights, freezing rules, the classifier."""

import time

import keras
import numpy as np
import pytest
from vgg_weights import write_keras_notop_h5

from fer_utils import config
from fer_utils.models import enet, vgg

SHAPE = (32, 32, 3)  # the smallest input VGG16 takes: fast tests


@pytest.fixture(scope="module")
def base():
    """One randomly initialised conv base shared by the read-only tests."""
    keras.utils.set_random_seed(0)
    return vgg.vgg16_base(SHAPE, weights=None)


@pytest.fixture(scope="module")
def weights_file(base, tmp_path_factory):
    """The base's weights as a Keras VGG16 notop .h5 file: 'pretrained' weights for the tests."""
    return write_keras_notop_h5(tmp_path_factory.mktemp("weights") / "notop.h5", base)


@pytest.fixture
def no_imagenet(tmp_path, monkeypatch):
    """An empty Keras cache: ImageNet weights are 'not in the Keras cache'."""
    home = tmp_path / "keras_home"
    monkeypatch.setenv("KERAS_HOME", str(home))
    monkeypatch.setattr(config, "keras_homes", lambda: [home])
    return home


def _conv_arrays(model):
    return {name: model.get_layer(name).get_weights() for name in vgg.VGG16_CONV_LAYERS}


def _assert_same_conv_weights(model, reference):
    expected = _conv_arrays(reference)
    for name, arrays in _conv_arrays(model).items():
        for got, want in zip(arrays, expected[name]):
            np.testing.assert_array_equal(got, want, err_msg=name)


def test_the_trunk_is_keras_vgg16_conv_base(base):
    assert base.count_params() == vgg.VGG16_BASE_WEIGHTS == 14_714_688
    assert [layer.name for layer in base.layers[1:]] == list(vgg.VGG16_LAYERS)
    assert [layer.filters for layer in base.layers if hasattr(layer, "filters")] == \
        [64] * 2 + [128] * 2 + [256] * 3 + [512] * 6
    assert base.weights_status == "random (weights=none)"


def test_compact_trunk_keeps_the_five_groups_with_fewer_channels():
    compact = vgg.vgg16_base((48, 48, 1), weights=None, width=1 / 8)
    assert [layer.name for layer in compact.layers[1:]] == list(vgg.VGG16_LAYERS)
    assert [layer.filters for layer in compact.layers if hasattr(layer, "filters")] == \
        [8] * 2 + [16] * 2 + [32] * 3 + [64] * 6
    assert compact.output_shape == (None, 1, 1, 64)
    assert compact.count_params() < vgg.VGG16_BASE_WEIGHTS / 40
    assert compact.weights_status.startswith("random (compact trunk")
    with pytest.raises(ValueError, match="trains from scratch: use weights=None"):
        vgg.vgg16_base(SHAPE, weights="imagenet", width=0.5)
    with pytest.raises(ValueError, match=r"width must be a number in \(0, 1\]"):
        vgg.vgg16_base(SHAPE, weights=None, width=2)


@pytest.mark.parametrize("trainable_from, first_trainable", [
    ("auto", "block5_conv1"), ("block5_conv1", "block5_conv1"), ("block4_conv1", "block4_conv1"),
    ("block3_conv2", "block3_conv2"), ("head", "fc6"), (None, "block1_conv1")])
def test_with_pretrained_weights_layers_before_trainable_from_are_frozen(
        weights_file, trainable_from, first_trainable):
    model = vgg.vgg16_classifier(SHAPE, num_classes=7, weights=weights_file,
                                 trainable_from=trainable_from, head=(8,))
    with_weights = [layer for layer in model.layers if layer.weights]
    trains = [layer.trainable for layer in with_weights]
    split = [layer.name for layer in with_weights].index(first_trainable)
    assert trains == [False] * split + [True] * (len(trains) - split)
    summary = vgg.trainable_summary(model)
    assert summary["weights"].sum() == model.count_params()
    assert summary.loc[summary.trainable, "weights"].sum() == sum(
        int(np.prod(w.shape)) for w in model.trainable_weights)


def test_without_pretrained_weights_nothing_is_frozen_and_it_says_so_once(capsys):
    model = vgg.vgg16_classifier(SHAPE, num_classes=3, weights="none", head=(8,))
    assert all(layer.trainable for layer in model.layers if layer.weights)
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "nothing is frozen, every layer trains" in out[0]
    compact = vgg.vgg16_classifier((48, 48, 3), num_classes=3, weights=None, width=1 / 8)
    assert all(layer.trainable for layer in compact.layers if layer.weights)
    assert "compact VGG trunk trains from scratch" in capsys.readouterr().out


def test_freezing_random_weights_on_request_warns():
    with pytest.warns(UserWarning, match="frozen random filters teach nothing"):
        model = vgg.vgg16_classifier(SHAPE, num_classes=3, weights=None,
                                     trainable_from="block5_conv1", head=(8,))
    assert not model.get_layer("block4_conv3").trainable
    assert model.get_layer("block5_conv1").trainable


def test_missing_imagenet_warns_once_trains_everything_and_downloads_nothing(no_imagenet):
    with pytest.warns(UserWarning) as caught:
        model = vgg.vgg16_classifier(SHAPE, weights="imagenet", head=(8,))
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "not in the Keras cache" in messages[0]
    assert "nothing is frozen, every layer trains" in messages[0]
    assert model.weights_status == "random (ImageNet weights not in the Keras cache)"
    assert all(layer.trainable for layer in model.layers if layer.weights)
    assert not list(no_imagenet.rglob("*"))  # nothing downloaded, no folder made


def test_source_recipe_counts(weights_file):
    model = vgg.vgg16_classifier(SHAPE, weights=weights_file, head=(4096, 2048),
                                 pooling="flatten", trainable_from="block5_conv1")
    assert [layer.name for layer in model.layers[-5:]] == [
        "fc6", "drop6", "fc7", "drop7", "predictions"]
    assert model.get_layer("fc6").kernel.shape == (512, 4096)  # flatten of block5_pool at 32 px
    frozen = sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)
    block5 = 3 * (3 * 3 * 512 * 512 + 512)
    assert frozen == vgg.VGG16_BASE_WEIGHTS - block5


@pytest.mark.parametrize("kwargs, message", [
    (dict(trainable_from="block6_conv1"), "valid: 'auto', None (train everything), block1_conv1"),
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


@pytest.mark.parametrize("fmt", ["keras_notop_h5", "trunk_weights_h5"])
def test_weights_files_load_into_the_classifier_and_into_enet(base, weights_file, tmp_path, fmt):
    path = weights_file
    if fmt == "trunk_weights_h5":
        path = tmp_path / "trunk.weights.h5"
        base.save_weights(path)
    model = vgg.vgg16_classifier(SHAPE, weights=path, head=(8,))
    assert model.weights_status == f"file:{path.name}"
    _assert_same_conv_weights(model, base)
    # E-Net is built from the same trunk: the same layers, names and weights.
    e_net = enet(SHAPE, weights=path)
    _assert_same_conv_weights(e_net, base)
    assert not e_net.get_layer("block2_conv2").trainable
    assert e_net.get_layer("block3_conv1").trainable


def test_a_file_that_does_not_fit_is_a_clear_error(tmp_path):
    compact = vgg.vgg16_base(SHAPE, weights=None, width=1 / 8)
    small = tmp_path / "compact.weights.h5"
    compact.save_weights(small)
    with pytest.raises(vgg.WeightsError) as error:
        vgg.vgg16_classifier(SHAPE, weights=small)
    assert "compact.weights.h5" in str(error.value) and "VGG16 notop" in str(error.value)
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    with pytest.raises(vgg.WeightsError, match="cannot load VGG16 weights from .*notes.h5"):
        vgg.vgg16_base(SHAPE, weights=text)


def test_imagenet_is_read_from_the_keras_cache(base, no_imagenet):
    cache = no_imagenet / "models" / vgg.IMAGENET_NOTOP_FILE
    cache.parent.mkdir(parents=True)
    write_keras_notop_h5(cache, base)
    assert vgg.imagenet_weights_path() == cache
    model = vgg.vgg16_classifier(SHAPE, weights="imagenet", head=(8,))
    assert model.weights_status == "imagenet"
    _assert_same_conv_weights(model, base)
    assert not model.get_layer("block4_conv3").trainable  # pretrained: blocks 1-4 frozen
    assert vgg.fetch_imagenet_weights(timeout=1) == cache  # cached: nothing to download


def test_fetch_fails_fast_and_cleanly_when_offline(no_imagenet):
    start = time.perf_counter()
    with pytest.raises(RuntimeError, match="could not download the ImageNet VGG16 weights"):
        vgg.fetch_imagenet_weights(timeout=2, url="http://127.0.0.1:9/vgg16_notop.h5")
    assert time.perf_counter() - start < 10
    assert not list(no_imagenet.rglob("*.h5*"))  # no partial file left behind
