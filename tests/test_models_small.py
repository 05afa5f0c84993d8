"""The small CNN, the three task heads and the weight-counting helpers (fer_utils.models.small)."""

import keras
import numpy as np
import pytest

from fer_utils.models import small


def _default_names(model):
    """Layer names Keras made up (the builders must name every layer)."""
    auto = ("conv2d", "dense", "max_pooling2d", "dropout", "global_average_pooling2d",
            "input_layer", "batch_normalization", "activation")
    return [layer.name for layer in model.layers if layer.name.startswith(auto)]


def test_small_cnn_shapes_and_softmax():
    model = small.small_cnn((32, 32, 1), num_classes=5, filters=(4, 8), dropout=0.0)
    logits = small.small_cnn((32, 32, 1), num_classes=5, filters=(4, 8), dropout=0.0,
                             head="logits")
    logits.set_weights(model.get_weights())
    x = np.random.rand(3, 32, 32, 1).astype("float32")
    out = model(x).numpy()
    assert out.shape == (3, 5)
    # the softmax head is exactly softmax(the logits head) with the same weights
    np.testing.assert_allclose(out, keras.ops.softmax(logits(x)).numpy(), rtol=1e-5, atol=1e-7)
    assert model.layers[-1].name == "predictions"
    assert not _default_names(model)
    names = [layer.name for layer in model.layers]
    assert {"block1_conv1", "block1_conv2", "block1_pool", "block2_conv2"} <= set(names)


def test_small_cnn_5x5_and_rgb_and_logits():
    model = small.small_cnn((24, 24, 3), 3, filters=(4,), kernel="5x5", head="logits",
                            batch_norm=True, hidden_units=8)
    assert model.get_layer("block1_conv1").kernel.shape == (5, 5, 3, 4)
    assert "block1_conv2" not in [layer.name for layer in model.layers]
    out = model(np.random.rand(2, 24, 24, 3).astype("float32")).numpy()
    assert out.shape == (2, 3)
    assert not np.allclose(out.sum(axis=1), 1.0)  # logits, not probabilities
    assert not _default_names(model)


@pytest.mark.parametrize("kwargs, words", [
    ({"input_shape": (48, 48)}, ["input_shape", "(48, 48)"]),
    ({"input_shape": (48, 48, 2)}, ["channels", "(48, 48, 2)"]),
    ({"num_classes": 1}, ["num_classes", "1"]),
    ({"num_classes": 3.5}, ["num_classes", "3.5"]),
    ({"filters": 32}, ["filters", "32"]),
    ({"filters": (8, 0)}, ["filters", "(8, 0)"]),
    ({"kernel": "7x7"}, ["kernel", "'7x7'", "3x3x2"]),
    ({"dropout": 1.5}, ["dropout", "1.5"]),
    ({"head": "relu"}, ["head", "'relu'", "softmax"]),
    ({"pooling": "sum"}, ["pooling", "'sum'", "flatten"]),
    ({"hidden_units": -1}, ["hidden_units", "-1"]),
    ({"feature_dropout": 1.0, "hidden_units": 8}, ["feature_dropout", "1.0"]),
    ({"feature_dropout": 0.3}, ["feature_dropout=0.3", "hidden_units=0"]),
    ({"input_shape": (8, 8, 1), "filters": (4, 4, 4, 4)}, ["too small", "16"]),
])
def test_small_cnn_rejects_bad_arguments(kwargs, words):
    with pytest.raises(ValueError) as info:
        small.small_cnn(**kwargs)
    for word in words:
        assert word in str(info.value)


def test_flatten_keeps_the_spatial_layout():
    flat = small.small_cnn((16, 16, 1), 3, filters=(4, 8), pooling="flatten")
    pooled = small.small_cnn((16, 16, 1), 3, filters=(4, 8), pooling="max")
    assert flat.get_layer("flatten").output.shape == (None, 4 * 4 * 8)
    assert pooled.get_layer("global_pool").output.shape == (None, 8)
    assert flat.get_layer("predictions").kernel.shape == (128, 3)
    assert not _default_names(flat)


def test_expression_intensity_model_has_two_outputs_and_trains():
    model = small.expression_intensity_model((16, 16, 1), 4, filters=(4,), dropout=0.0)
    x = np.random.rand(8, 16, 16, 1).astype("float32")
    out = model(x)
    assert set(out) == {"expression", "intensity"}
    assert out["expression"].shape == (8, 4) and out["intensity"].shape == (8, 1)
    linear_twin = small.expression_intensity_model((16, 16, 1), 4, filters=(4,), dropout=0.0,
                                                   intensity_activation=None)
    linear_twin.set_weights(model.get_weights())
    np.testing.assert_allclose(out["intensity"].numpy(),  # sigmoid of the linear head
                               keras.ops.sigmoid(linear_twin(x)["intensity"]).numpy(),
                               rtol=1e-5, atol=1e-7)
    model.compile("adam", loss={"expression": "sparse_categorical_crossentropy",
                                "intensity": "mse"})
    y = {"expression": np.random.randint(0, 4, 8), "intensity": np.random.rand(8, 1)}
    logs = model.fit(x, y, epochs=1, verbose=0).history
    assert "expression_loss" in logs and "intensity_loss" in logs
    assert np.isfinite(logs["loss"][0])
    linear = small.expression_intensity_model((16, 16, 1), 4, filters=(4,),
                                              intensity_activation=None)
    assert linear.get_layer("intensity").activation.__name__ == "linear"
    with pytest.raises(ValueError, match="tanh"):
        small.expression_intensity_model(intensity_activation="tanh")


def test_au_model_is_multilabel():
    model = small.au_model((16, 16, 1), num_aus=12, filters=(4,))
    x = np.random.rand(5, 16, 16, 1).astype("float32")
    out = model(x).numpy()
    assert out.shape == (5, 12)
    # one independent sigmoid per AU: sigmoid(features · W + b), not a softmax over AUs
    head = model.get_layer("aus")
    features = keras.Model(model.inputs, head.input)(x).numpy()
    kernel, bias = head.get_weights()
    np.testing.assert_allclose(out, 1 / (1 + np.exp(-(features @ kernel + bias))), rtol=1e-5)
    assert not np.allclose(out.sum(axis=1), 1.0)
    assert model.layers[-1].name == "aus"
    with pytest.raises(ValueError, match="num_aus"):
        small.au_model(num_aus=0)


def test_two_3x3_use_18_weights_one_5x5_uses_25_same_field():
    assert small.conv_weights_per_channel_pair("3x3x2") == 18
    assert small.conv_weights_per_channel_pair("5x5") == 25
    two = small.conv_stack("3x3x2", channels=1)
    one = small.conv_stack("5x5", channels=1)
    assert small.count_conv_weights(two) == 18
    assert small.count_conv_weights(one) == 25
    wide_two = small.conv_stack("3x3x2", channels=8, input_shape=(16, 16, 8))
    wide_one = small.conv_stack("5x5", channels=8, input_shape=(16, 16, 8))
    assert small.count_conv_weights(wide_two) == 18 * 8 * 8
    assert small.count_conv_weights(wide_one) == 25 * 8 * 8
    assert small.receptive_field("3x3x2") == small.receptive_field("5x5") == 5
    assert small.receptive_field([3, 3, 3]) == 7
    assert small.receptive_field([3, 3], strides=[2, 1]) == 7


def test_receptive_field_is_what_a_pixel_reaches():
    """An impulse through two 3×3 convs spreads exactly 5×5, like one 5×5."""
    stack = small.conv_stack("3x3x2", channels=1, input_shape=(11, 11, 1))
    for layer in stack.layers[1:]:
        layer.kernel.assign(np.ones(layer.kernel.shape, dtype="float32"))
    impulse = np.zeros((1, 11, 11, 1), dtype="float32")
    impulse[0, 5, 5, 0] = 1
    reached = stack(impulse).numpy()[0, :, :, 0] != 0
    rows, cols = np.nonzero(reached)
    assert rows.max() - rows.min() + 1 == 5 and cols.max() - cols.min() + 1 == 5


def test_count_conv_weights_of_a_whole_model_and_per_layer():
    model = small.small_cnn((16, 16, 1), 3, filters=(4, 8))
    per = small.count_conv_weights(model, per_layer=True)
    assert per == {"block1_conv1": 9 * 1 * 4, "block1_conv2": 9 * 4 * 4,
                   "block2_conv1": 9 * 4 * 8, "block2_conv2": 9 * 8 * 8}
    assert small.count_conv_weights(model, include_bias=True) == sum(per.values()) + 4 + 4 + 8 + 8
    with pytest.raises(TypeError, match="str"):
        small.count_conv_weights("model")


def test_exported_names():
    import fer_utils.models as models

    for name in ("small_cnn", "au_model", "expression_intensity_model", "count_conv_weights",
                 "receptive_field", "multilabel_head", "SMALL_RECIPE", "with_flip_tta"):
        assert name in small.__all__ and hasattr(models, name)


def test_outputs_stay_float32_under_mixed_precision():
    try:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
        model = small.small_cnn((16, 16, 1), 3, filters=(4,), dropout=0.0)
        assert model.get_layer("block1_conv1").compute_dtype == "bfloat16"
        x = np.random.rand(2, 16, 16, 1).astype("float32")
        out = model(x)
        assert np.asarray(out).dtype == np.float32
    finally:
        keras.mixed_precision.set_global_policy("float32")
    reference = small.small_cnn((16, 16, 1), 3, filters=(4,), dropout=0.0)
    reference.set_weights(model.get_weights())
    # the same probabilities as in float32, within bfloat16's precision (8 bits of mantissa)
    np.testing.assert_allclose(np.asarray(out), reference(x).numpy(), atol=2e-2)


def test_the_recipe_has_batch_norm_after_every_conv_and_the_hidden_layer():
    model = small.small_cnn(**small.SMALL_RECIPE)
    names = [layer.name for layer in model.layers]
    assert not _default_names(model)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [c.filters for c in convs] == [32, 32, 64, 64, 128, 128, 256, 256]
    for conv in convs:  # conv (no bias) -> batch norm -> ReLU
        assert not conv.use_bias
        i = names.index(conv.name)
        assert isinstance(model.layers[i + 1], keras.layers.BatchNormalization)
        assert model.layers[i + 2].name == conv.name.replace("conv", "relu")
    # flatten -> dropout -> Dense 256 (no bias) -> BN -> ReLU -> dropout -> softmax
    head = names[names.index("flatten"):]
    assert head == ["flatten", "feature_dropout", "fc1", "fc1_bn", "fc1_relu", "head_dropout",
                    "predictions"]
    assert model.get_layer("fc1").units == 256 and not model.get_layer("fc1").use_bias
    assert model.get_layer("flatten").output.shape == (None, 3 * 3 * 256)
    assert model.get_layer("feature_dropout").rate == 0.3
    assert model.get_layer("head_dropout").rate == 0.3
    conv_weights = sum(9 * a * b for a, b in [(1, 32), (32, 32), (32, 64), (64, 64),
                                              (64, 128), (128, 128), (128, 256), (256, 256)])
    bn = 4 * (2 * (32 + 64 + 128 + 256) + 256)  # gamma, beta, moving mean and variance
    assert model.count_params() == conv_weights + 2304 * 256 + bn + 256 * 7 + 7


def test_flip_tta_averages_the_face_and_its_mirror_and_reloads(tmp_path):
    from fer_utils.models import layers

    keras.utils.set_random_seed(3)
    model = small.small_cnn((16, 16, 1), 4, filters=(4, 8), dropout=0.0, batch_norm=True)
    x = np.random.default_rng(0).random((5, 16, 16, 1)).astype("float32")
    np.testing.assert_array_equal(layers.HorizontalFlip()(x).numpy(), x[:, :, ::-1])
    wrapped = small.with_flip_tta(model)
    assert wrapped.input_shape == model.input_shape
    assert wrapped.output_shape == model.output_shape
    expected = (model(x).numpy() + model(x[:, :, ::-1]).numpy()) / 2
    out = wrapped(x).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-7)
    assert not np.allclose(out, model(x).numpy(), atol=1e-4)  # the mirror changed something
    # a mirrored face gets exactly the same answer as the face itself
    np.testing.assert_allclose(wrapped(x[:, :, ::-1]).numpy(), out, rtol=1e-5, atol=1e-7)
    path = tmp_path / "tta.keras"
    wrapped.save(path)
    loaded = keras.models.load_model(path)  # HorizontalFlip is a registered layer
    np.testing.assert_allclose(loaded(x).numpy(), out, rtol=1e-6, atol=1e-7)
    assert "mirror" in [layer.name for layer in loaded.layers]
    with pytest.raises(ValueError, match="one image input and one output"):
        small.with_flip_tta(small.expression_intensity_model((16, 16, 1), 3, filters=(4,)))
