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


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    """A VGG16 notop file (random numbers, but 'pretrained' for the builders)."""
    keras.utils.set_random_seed(0)
    base = vgg.vgg16_base((SIZE, SIZE, 3), weights=None)
    return write_keras_notop_h5(tmp_path_factory.mktemp("weights") / "notop.h5", base)


@pytest.fixture(scope="module")
def built(weights_file):
    """Plain VGG, E-Net and EAC-Net at 32 px with 'pretrained' weights (built once)."""
    inner = E.enet((SIZE, SIZE, 3), weights=weights_file, name="enet_of_eacnet")
    return {"plain": E.plain_vgg_au((SIZE, SIZE, 3), weights=weights_file),
            "enet": E.enet((SIZE, SIZE, 3), weights=weights_file),
            "eacnet": E.eacnet(inner, filters=8, units=4, merge_units=16),
            "enet_of_eacnet": inner}


def test_inputs_outputs_and_names(built):
    assert [t.name for t in built["plain"].inputs] == ["image"]
    assert [t.name for t in built["enet"].inputs] == ["image", "attention"]
    assert [t.name for t in built["eacnet"].inputs] == ["image", "attention", "centers"]
    for model in built.values():
        assert tuple(model.output.shape) == (None, 12)
        names = {layer.name for layer in model.layers}
        assert {"block1_conv1", "block3_conv3", "block4_conv3"} <= names
    enet = built["enet"]
    for k, size in ((1, SIZE // 2), (2, SIZE // 4), (3, SIZE // 8)):  # the map, max-pooled
        assert tuple(enet.get_layer(f"attention_pool{k}").output.shape) == (None, size, size, 1)
    assert tuple(enet.get_layer("enhance3").output.shape) == (None, SIZE // 4, SIZE // 4, 256)
    assert tuple(enet.get_layer("enhance4").output.shape) == (None, SIZE // 8, SIZE // 8, 512)
    # The group's pooling reads the enhanced features.
    assert enet.get_layer("block3_pool").input is enet.get_layer("enhance3").output
    cnet = built["eacnet"].get_layer("cnet")
    assert tuple(cnet.inputs[0].shape) == (None, 20, 3, 3, 512)


def test_fusion_adds_the_first_conv_times_the_pooled_map_to_the_last(built):
    enet = built["enet"]
    names = ["block3_conv1", "block3_conv3", "enhance3", "block4_conv1", "block4_conv3",
             "enhance4"]
    probe = keras.Model(enet.inputs, [enet.get_layer(n).output for n in names])
    x, _ = batch(2)
    amap = x["attention"][..., 0]
    first3, last3, enh3, first4, last4, enh4 = [np.asarray(t) for t in probe(
        [x["image"], x["attention"]])]
    map3 = A.max_pool_maps(amap, 2)[..., None]  # 8×8 at 32 px
    map4 = A.max_pool_maps(amap, 3)[..., None]  # 4×4
    np.testing.assert_allclose(enh3, last3 + first3 * map3, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(enh4, last4 + first4 * map4, rtol=1e-5, atol=1e-5)
    assert np.abs(first3 * map3).max() > 0.01 * np.abs(last3).max()  # the map changed something
    # A map of zeros leaves the plain VGG's features.
    _, last3, enh3, _, last4, enh4 = [np.asarray(t) for t in probe(
        [x["image"], np.zeros_like(x["attention"])])]
    np.testing.assert_array_equal(enh3, last3)
    np.testing.assert_array_equal(enh4, last4)


def test_groups_1_and_2_are_frozen_with_pretrained_weights_only(built, capsys):
    for model in (built["plain"], built["enet"]):
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
    for model in (built["plain"], built["enet"]):
        for name in vgg.VGG16_CONV_LAYERS:
            np.testing.assert_array_equal(model.get_layer(name).kernel.numpy(),
                                          reference.get_layer(name).kernel.numpy())


def test_region_crops_take_whole_cells_around_the_centre_as_the_authors():
    yy, xx = np.mgrid[0:6, 0:6].astype("float32")
    features = np.stack([xx + 10 * yy, -(xx + 10 * yy)], axis=-1)[None]  # 1×6×6×2
    centers = np.array([[[2.5 / 6, 3.5 / 6],  # cell (x 2, y 3)
                         [0.01, 0.5],  # left border: cell x 0, moved to 1
                         [0.99, 0.01]]], "float32")  # right/top border: x 5 → 4, y 0 → 1
    crops = np.asarray(L.RegionCrops(3)([features, centers]))
    assert crops.shape == (1, 3, 3, 3, 2)
    np.testing.assert_array_equal(crops[0, 0, ..., 0], features[0, 2:5, 1:4, 0])
    np.testing.assert_array_equal(crops[0, 1, ..., 0], features[0, 2:5, 0:3, 0])
    np.testing.assert_array_equal(crops[0, 2, ..., 0], features[0, 0:3, 3:6, 0])
    np.testing.assert_array_equal(crops[..., 1], -crops[..., 0])  # every channel
    # The authors' rule at 28×28: cell int(c·28), clipped to 1-26.
    grid = np.arange(28 * 28, dtype="float32").reshape(1, 28, 28, 1)
    rel = np.array([[[0.5, 0.0], [0.999, 0.42]]], "float32")
    out = np.asarray(L.RegionCrops(3)([grid, rel]))[0, ..., 0]
    np.testing.assert_array_equal(out[0], grid[0, 0:3, 13:16, 0])  # y 0 → 1, x 14
    np.testing.assert_array_equal(out[1], grid[0, 10:13, 25:28, 0])  # x 27 → 26, y 11
    with pytest.raises(ValueError, match="odd"):
        L.RegionCrops(2)


def test_region_nets_are_twenty_branches_of_keras_layers():
    """Each region: ×2 (cells copied) → 3×3 conv without padding (6×6 → 4×4) → dense."""
    keras.utils.set_random_seed(2)
    crops = np.random.default_rng(1).normal(size=(3, 20, 3, 3, 5)).astype("float32")
    nets = L.RegionNets(filters=4, units=6)
    joined = np.asarray(nets(crops))
    assert tuple(nets.fc_kernel.shape) == (20, 4 * 4 * 4, 6)  # a 4×4 region per crop
    for k in (0, 7, 19):
        branch = keras.Sequential([
            keras.Input((3, 3, 5)), keras.layers.UpSampling2D(2, interpolation="nearest"),
            keras.layers.Conv2D(4, 3, padding="valid", activation="relu"),
            keras.layers.Flatten(), keras.layers.Dense(6, activation="relu")])
        assert tuple(branch.layers[1].output.shape) == (None, 4, 4, 4)
        branch.layers[1].set_weights([nets.conv_kernel.numpy()[k], nets.conv_bias.numpy()[k]])
        branch.layers[3].set_weights([nets.fc_kernel.numpy()[k], nets.fc_bias.numpy()[k]])
        np.testing.assert_allclose(joined[:, 6 * k:6 * (k + 1)], np.asarray(branch(crops[:, k])),
                                   rtol=1e-4, atol=1e-5)


def test_local_response_norm_is_the_authors_formula():
    x = np.random.default_rng(0).normal(0, 20, size=(2, 3, 3, 9)).astype("float32")
    out = np.asarray(L.LocalResponseNorm()(x))
    squares = np.pad(x ** 2, ((0, 0), (0, 0), (0, 0), (2, 2)))
    window = sum(squares[..., i:i + 9] for i in range(5))  # 5 neighbouring channels
    np.testing.assert_allclose(out, x / (2 + 0.002 * window) ** 0.75, rtol=1e-4)


def test_eacnet_is_cnet_on_the_frozen_enet_crops(built):
    eac, enet = built["eacnet"], built["enet_of_eacnet"]
    assert not enet.get_layer("block3_conv1").trainable  # shared with EAC-Net, frozen
    assert eac.get_layer("cnet").trainable
    x, _ = batch(3)
    crops = E.enet_crops(enet)(x)
    assert tuple(crops.shape) == (3, 20, 3, 3, 512)
    np.testing.assert_allclose(np.asarray(eac(x)), np.asarray(eac.get_layer("cnet")(crops)),
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="either cnet_model or C-Net arguments"):
        E.eacnet(enet, eac.get_layer("cnet"), units=3)
    with pytest.raises(ValueError, match="no layer 'enhance4'"):
        E.enet_crops(built["plain"])
    assert set(E.model_inputs(x, enet)) == {"image", "attention"}
    assert E.model_inputs(x, built["plain"]) is x["image"]
    with pytest.raises(ValueError, match=r"missing \['centers'\]"):
        E.model_inputs({"image": x["image"], "attention": x["attention"]}, eac)
    with pytest.raises(ValueError, match=r"crops_shape.*\(20, 1, 1, 8\)"):
        E.cnet((20, 1, 1, 8))


@pytest.mark.parametrize("kind", ["plain", "enet", "eacnet"])
def test_models_train_one_step(built, kind):
    model = built[kind]
    E.compile_au_model(model, learning_rate=1e-3, pos_weight=np.full(12, 2.0, "float32"))
    model.run_eagerly = True  # one step: skip graph tracing
    x, y = batch(4)
    frozen = model.get_layer("block1_conv1").kernel.numpy()
    enhanced = model.get_layer("block4_conv3").kernel.numpy()
    trained = model.trainable_weights[-2].numpy()  # the output layer's kernel
    logs = model.train_on_batch(E.model_inputs(x, model), y, return_dict=True)
    assert np.isfinite(logs["loss"])
    assert np.array_equal(frozen, model.get_layer("block1_conv1").kernel.numpy())
    # E-Net trains from group 3 on; in EAC-Net only C-Net trains (E-Net is frozen).
    moved = not np.array_equal(enhanced, model.get_layer("block4_conv3").kernel.numpy())
    assert moved == (kind != "eacnet")
    assert not np.allclose(trained, model.trainable_weights[-2].numpy())
    logs_after = model.test_on_batch(E.model_inputs(x, model), y, return_dict=True)
    assert logs_after["loss"] != logs["loss"]  # the step changed what the model computes


def test_saved_models_load_without_custom_objects(built, tmp_path):
    x, _ = batch(2)
    for name in ("enet", "eacnet"):
        path = tmp_path / f"{name}.keras"
        built[name].save(path)
        loaded = keras.models.load_model(path)
        np.testing.assert_allclose(np.asarray(loaded(E.model_inputs(x, loaded))),
                                   np.asarray(built[name](E.model_inputs(x, built[name]))),
                                   rtol=1e-5, atol=1e-6)
    assert type(loaded.get_layer("crops")) is L.RegionCrops
    assert type(loaded.get_layer("lrn")) is L.LocalResponseNorm
    assert keras.saving.get_registered_object("fer_utils>RegionNets") is L.RegionNets
    assert keras.saving.get_registered_object("fer_utils>AUBinaryCrossentropy") is \
        E.AUBinaryCrossentropy


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
        E.enet((32, 32, 3), weights=None, trainable_from="block9_conv1")
    with pytest.raises(ValueError, match="head_units must be a positive integer"):
        E.plain_vgg_au((32, 32, 3), weights=None, head_units=0)
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
    cams = E.grad_cam(built["eacnet"], E.model_inputs(x, built["eacnet"]), "enhance4", 0)
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
