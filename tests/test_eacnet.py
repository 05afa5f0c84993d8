"""fer_utils.models.eacnet: E-Net, EAC-Net, the plain VGG16 baseline, AU losses, Grad-CAM."""

import importlib

import keras
import numpy as np
import pytest
from vgg_weights import write_keras_notop_h5

from fer_utils import attention as A
from fer_utils.models import layers as L
from fer_utils.models import vgg

E = importlib.import_module("fer_utils.models.eacnet")  # fu.models.eacnet is the builder

SIZE = 32  # the smallest input the builders accept: group 4 gives 4×4 features


def batch(n=4, size=SIZE, seed=0):
    """Random images, landmark-based attention maps, relative centres and AU labels."""
    rng = np.random.default_rng(seed)
    images = rng.random((n, size, size, 3)).astype("float32")
    landmarks = (rng.random((n, 68, 2)) * 0.6 + 0.2).astype("float32") * size
    centers = A.au_centers(landmarks, size, size)
    maps = A.attention_map(centers, size, size)[..., None]
    labels = (rng.random((n, 12)) > 0.6).astype("float32")
    x = {"image": images, "attention": maps, "centers": A.relative_centers(centers, size, size)}
    return x, labels


def only_inputs(model, x):
    """The entries of x that the model takes."""
    names = [t.name for t in model.inputs]
    return {k: v for k, v in x.items() if k in names}


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    """A VGG16 notop file (random numbers, but 'pretrained' for the builders)."""
    keras.utils.set_random_seed(0)
    base = vgg.vgg16_base((SIZE, SIZE, 3), weights=None)
    return write_keras_notop_h5(tmp_path_factory.mktemp("weights") / "notop.h5", base)


@pytest.fixture(scope="module")
def built(weights_file):
    """The three models at 32 px with 'pretrained' weights (built once for the module)."""
    return {"plain": E.plain_vgg_au((SIZE, SIZE, 3), weights=weights_file),
            "enet": E.enet((SIZE, SIZE, 3), weights=weights_file),
            "eacnet": E.eacnet((SIZE, SIZE, 3), weights=weights_file)}


def test_inputs_outputs_and_names(built):
    assert [t.name for t in built["plain"].inputs] == ["image"]
    assert [t.name for t in built["enet"].inputs] == ["image", "attention"]
    assert [t.name for t in built["eacnet"].inputs] == ["image", "attention", "centers"]
    for model in built.values():
        assert tuple(model.output.shape) == (None, 12)
        names = {layer.name for layer in model.layers}
        assert {"block1_conv1", "block3_conv3", "block4_conv3", "block5_conv3"} <= names
    enet = built["enet"]
    assert tuple(enet.get_layer("enhance3").output.shape) == (None, SIZE // 4, SIZE // 4, 256)
    assert tuple(enet.get_layer("enhance4").output.shape) == (None, SIZE // 8, SIZE // 8, 512)
    eac = built["eacnet"]
    nets = eac.get_layer("region_nets")  # 20 local networks, weights indexed by region
    assert tuple(nets.conv_kernel.shape) == (20, 3, 3, 512, 64)
    assert tuple(nets.fc_kernel.shape) == (20, 6 * 6 * 64, 64)  # 3×3 crop upscaled ×2
    assert tuple(nets.output.shape) == (None, 20 * 64)


def _copy_batched_into_separate(batched, separate):
    """Give the 20-branch model the batched model's weights (region k's slice per branch)."""
    nets = batched.get_layer("region_nets")
    for layer in separate.layers:
        if layer.name.startswith("region") and layer.name.endswith(("_conv", "_fc")):
            k = int(layer.name[len("region"):].split("_")[0])
            if layer.name.endswith("_conv"):
                layer.set_weights([nets.conv_kernel.numpy()[k], nets.conv_bias.numpy()[k]])
            else:
                layer.set_weights([nets.fc_kernel.numpy()[k], nets.fc_bias.numpy()[k]])
        elif layer.weights:
            layer.set_weights(batched.get_layer(layer.name).get_weights())


def test_separate_region_layers_compute_the_same_as_the_batched_layer():
    keras.utils.set_random_seed(3)
    bat = E.eacnet((SIZE, SIZE, 3), weights=None, verbose=False)
    sep = E.eacnet((SIZE, SIZE, 3), weights=None, region_layers="separate", verbose=False)
    assert sum(layer.name.startswith("region") and layer.name.endswith("_fc")
               for layer in sep.layers) == 20
    x, _ = batch(3, seed=5)
    before = np.asarray(sep(x, training=False))
    _copy_batched_into_separate(bat, sep)
    np.testing.assert_allclose(np.asarray(sep(x, training=False)),
                               np.asarray(bat(x, training=False)), rtol=1e-4, atol=1e-5)
    assert not np.allclose(before, np.asarray(bat(x, training=False)), atol=1e-5)
    with pytest.raises(ValueError, match="region_layers='loop'"):
        E.eacnet((SIZE, SIZE, 3), weights=None, region_layers="loop")


def test_groups_1_and_2_are_frozen_with_pretrained_weights_only(built, capsys):
    for model in built.values():
        assert model.weights_status == "file:notop.h5"
        assert not model.get_layer("block1_conv1").trainable
        assert not model.get_layer("block2_conv2").trainable
        assert model.get_layer("block3_conv1").trainable
        assert model.get_layer("block5_conv3").trainable
    random = E.enet((SIZE, SIZE, 3), weights=None)
    assert all(layer.trainable for layer in random.layers if layer.weights)
    assert "nothing is frozen, every layer trains" in capsys.readouterr().out


def test_the_trunk_is_the_vgg_trunk_with_its_weights(built, weights_file):
    reference = vgg.vgg16_base((SIZE, SIZE, 3), weights=weights_file)
    for model in built.values():
        for name in vgg.VGG16_CONV_LAYERS:
            np.testing.assert_array_equal(model.get_layer(name).kernel.numpy(),
                                          reference.get_layer(name).kernel.numpy())


def test_compact_trunk_and_multiplicative_fusion():
    model = E.eacnet((48, 48, 3), weights=None, width=1 / 8, fusion="multiply", verbose=False)
    assert model.get_layer("block4_conv3").filters == 64
    assert tuple(model.get_layer("region_nets").conv_kernel.shape) == (20, 3, 3, 64, 64)
    enet = E.enet((48, 48, 3), weights=None, width=1 / 8, fusion="multiply", verbose=False)
    probe = keras.Model(enet.inputs, [enet.get_layer("block3_conv3").output,
                                      enet.get_layer("enhance3").output])
    x, _ = batch(2, size=48)
    f, fused = [np.asarray(t) for t in probe([x["image"], np.zeros_like(x["attention"])])]
    assert np.abs(f).max() > 0 and np.abs(fused).max() == 0  # F ⊙ A with A = 0 is 0
    with pytest.raises(ValueError, match="fusion='sum'"):
        E.enet((48, 48, 3), weights=None, fusion="sum")


def test_saved_models_load_without_custom_objects(built, tmp_path):
    x, _ = batch(2)
    for name in ("enet", "eacnet"):
        path = tmp_path / f"{name}.keras"
        built[name].save(path)
        loaded = keras.models.load_model(path)
        assert type(loaded.get_layer("enhance4")) is L.AttentionEnhance
        np.testing.assert_allclose(np.asarray(loaded(only_inputs(loaded, x))),
                                   np.asarray(built[name](only_inputs(built[name], x))),
                                   rtol=1e-5, atol=1e-6)
    assert type(loaded.get_layer("region_crops")) is L.RegionCrops
    assert keras.saving.get_registered_object("fer_utils>RegionNets") is L.RegionNets
    assert keras.saving.get_registered_object("fer_utils>AUBinaryCrossentropy") is \
        E.AUBinaryCrossentropy


def test_enhancement_is_residual(built):
    enet = built["enet"]
    probe = keras.Model(enet.inputs, [enet.get_layer("block3_conv3").output,
                                      enet.get_layer("enhance3").output,
                                      enet.get_layer("enhance4").output])
    x, _ = batch(2)
    ones = np.ones_like(x["attention"])
    f, f_ones, _ = [np.asarray(t) for t in probe([x["image"], ones])]
    np.testing.assert_allclose(f_ones, 2 * f, rtol=1e-5, atol=1e-6)  # A = 1: F + F = 2F
    f, f_zero, _ = [np.asarray(t) for t in probe([x["image"], np.zeros_like(ones)])]
    np.testing.assert_allclose(f_zero, f, rtol=1e-6, atol=1e-7)  # A = 0: F unchanged
    # A map that is 1 only in the top-left quarter enhances only there.
    half = np.zeros_like(ones)
    half[:, :SIZE // 2, :SIZE // 2] = 1
    f, f_half, _ = [np.asarray(t) for t in probe([x["image"], half])]
    q = SIZE // 8
    np.testing.assert_allclose(f_half[:, :q, :q], 2 * f[:, :q, :q], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(f_half[:, q:, q:], f[:, q:, q:], rtol=1e-6, atol=1e-7)


def test_region_crops_sit_on_the_centres():
    crops_layer = E.RegionCrops(crop_cells=1.0, crop_size=1, num_centers=2)
    yy, xx = np.mgrid[0:6, 0:6].astype("float32")
    features = (xx + 10 * yy)[None, :, :, None]  # value = column + 10 × row
    centers = np.array([[[(2 + 0.5) / 6, (3 + 0.5) / 6],  # pixel-space centre of cell (x2, y3)
                         [(5 + 0.5) / 6, (0 + 0.5) / 6]]], "float32")
    out = crops_layer([features, centers])
    assert len(out) == 2
    assert float(np.asarray(out[0]).squeeze()) == pytest.approx(32.0)
    assert float(np.asarray(out[1]).squeeze()) == pytest.approx(5.0)
    big = E.RegionCrops(crop_cells=3.0, crop_size=3, num_centers=2)([features, centers])
    np.testing.assert_allclose(np.asarray(big[0])[0, :, :, 0],
                               features[0, 2:5, 1:4, 0], atol=1e-4)


@pytest.mark.parametrize("kind", ["plain", "enet", "eacnet"])
def test_models_train_one_step(built, kind):
    model = built[kind]
    E.compile_au_model(model, learning_rate=1e-3, pos_weight=np.full(12, 2.0, "float32"))
    model.run_eagerly = True  # one step: skip graph tracing
    x, y = batch(4)
    frozen = model.get_layer("block1_conv1").kernel.numpy()
    trained = model.get_layer("aus").kernel.numpy()
    logs = model.train_on_batch(only_inputs(model, x), y, return_dict=True)
    assert np.isfinite(logs["loss"])
    assert np.array_equal(frozen, model.get_layer("block1_conv1").kernel.numpy())
    assert not np.allclose(trained, model.get_layer("aus").kernel.numpy())
    logs_after = model.test_on_batch(only_inputs(model, x), y, return_dict=True)
    assert logs_after["loss"] != logs["loss"]  # the step changed what the model computes


def test_smoothed_bce_values():
    t = np.array([[1.0, 0.0, 1.0, 0.0]], "float32")
    o = np.array([[1.0, 0.0, 0.0, 1.0]], "float32")
    per = -np.log(0.05 / 1.05)  # a confidently wrong output costs log(21), not infinity
    assert float(np.asarray(E.smoothed_bce(t, o))[0]) == pytest.approx(per / 2, rel=1e-5)
    loss = E.AUBinaryCrossentropy(pos_weight=[3.0, 1.0, 3.0, 1.0])
    assert float(loss(t, o)) == pytest.approx((3 * per + per) / 4, rel=1e-4)


def test_pos_weights_and_errors():
    y = np.array([[1, 0], [0, 0], [0, 0], [0, 1]] * 5)
    np.testing.assert_allclose(E.au_pos_weights(y), [3.0, 3.0])
    np.testing.assert_allclose(E.au_pos_weights(np.zeros((40, 1)), max_weight=10), [10.0])
    with pytest.raises(ValueError, match=r"input_shape.*\(16, 16, 3\)"):
        E.enet((16, 16, 3), weights=None)
    with pytest.raises(ValueError, match="trainable_from='block9_conv1'"):
        E.eacnet((32, 32, 3), weights=None, trainable_from="block9_conv1")
    with pytest.raises(ValueError, match="optimizer='rmsprop'"):
        E.compile_au_model(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]),
                           optimizer="rmsprop")


def _patch_model(size, patch):
    """A model whose output depends on one image patch and one feature channel only.

    1×1 conv: channel 0 = bright pixels (x - 128), channel 1 = dark pixels (128 - x), ReLU;
    then the patch is cropped, pooled, and only channel 0 reaches the sigmoid output.
    """
    rows, cols = patch
    image = keras.Input((size, size, 1), name="image")
    conv = keras.layers.Conv2D(2, 1, activation="relu", name="features")
    features = conv(image)
    conv.set_weights([np.array([1.0, -1.0], "float32").reshape(1, 1, 1, 2),
                      np.array([-128.0, 128.0], "float32")])
    crop = keras.layers.Cropping2D(((rows.start, size - rows.stop), (cols.start, size - cols.stop)),
                                   name="patch")(features)
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(crop)
    dense = keras.layers.Dense(1, activation="sigmoid", name="out")
    out = dense(pooled)
    dense.set_weights([np.array([[0.01], [0.0]], "float32"), np.zeros(1, "float32")])
    return keras.Model(image, out)


def test_grad_cam_peaks_on_the_patch_that_drives_the_output():
    """A bright square inside the patch drives the output; a bigger dark square outside it
    does not: Grad-CAM must weight the channels by their gradients and find the patch."""
    size, rows, cols = 32, slice(8, 16), slice(20, 28)
    model = _patch_model(size, (rows, cols))
    image = np.full((1, size, size, 1), 128.0, "float32")
    image[0, 10:14, 22:26] = 255.0  # in the patch: what the output reads
    image[0, 18:30, 2:14] = 0.0  # outside: stronger features, no effect on the output
    cam = E.grad_cam(model, image, "features")
    assert cam.shape == (size, size) and cam.dtype == np.float32
    y, x = np.unravel_index(np.argmax(cam), cam.shape)
    assert rows.start <= y < rows.stop and cols.start <= x < cols.stop, (y, x)
    assert cam[rows, cols].sum() / cam.sum() > 0.95  # the heat is on the patch
    assert cam[18:30, 2:14].max() == 0  # the distractor gets none
    assert cam.max() == pytest.approx(1.0)  # normalised to its peak


def test_grad_cam_on_the_au_models(built):
    x, _ = batch(2)
    cams = E.grad_cam(built["eacnet"], only_inputs(built["eacnet"], x), "enhance4", 0)
    assert cams.shape == (2, SIZE, SIZE)
    with pytest.raises(ValueError, match="no layer 'nope'"):
        E.grad_cam(built["plain"], x["image"], "nope")
    with pytest.raises(ValueError, match="output_index=12 outside 0..11"):
        E.grad_cam(built["plain"], x["image"][:1], "block4_conv3", output_index=12)


def test_weight_counts():
    counts = E.count_locally_connected_weights(28, 28, 512, 512, regions=(8, 8))
    assert counts["convolution"] == 3 * 3 * 512 * 512 + 512
    assert counts["locally_connected"] == 28 * 28 * counts["convolution"]
    assert counts["region_grid"] == 64 * counts["convolution"]
