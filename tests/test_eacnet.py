"""fer_utils.models.eacnet: E-Net, EAC-Net, the plain VGG16 baseline, AU losses, Grad-CAM."""

import importlib

import numpy as np
import pytest

keras = pytest.importorskip("keras")
E = importlib.import_module("fer_utils.models.eacnet")  # fu.models.eacnet is the builder
from fer_utils import attention as A  # noqa: E402

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
def built():
    """The three models at 32 px, random weights (built once for the module)."""
    return {"plain": E.plain_vgg_au((SIZE, SIZE, 3), weights=None),
            "enet": E.enet((SIZE, SIZE, 3), weights=None),
            "eacnet": E.eacnet((SIZE, SIZE, 3), weights=None)}


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


def test_separate_region_layers_match_the_batched_ones():
    sep = E.eacnet((SIZE, SIZE, 3), weights=None, region_layers="separate", verbose=False)
    assert sum(layer.name.endswith("_fc") and layer.name.startswith("region")
               for layer in sep.layers) == 20
    assert tuple(sep.get_layer("region0_conv").output.shape)[1:3] == (6, 6)
    bat = E.eacnet((SIZE, SIZE, 3), weights=None, verbose=False)
    assert sep.count_params() == bat.count_params()
    with pytest.raises(ValueError, match="region_layers='loop'"):
        E.eacnet((SIZE, SIZE, 3), weights=None, region_layers="loop")


def test_groups_1_and_2_are_frozen(built):
    for model in built.values():
        assert not model.get_layer("block1_conv1").trainable
        assert not model.get_layer("block2_conv2").trainable
        assert model.get_layer("block3_conv1").trainable
        assert model.get_layer("block5_conv3").trainable


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
    prob = np.asarray(model(only_inputs(model, x), training=False))
    assert prob.shape == (4, 12) and np.all((prob >= 0) & (prob <= 1))


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


def test_grad_cam(built):
    x, _ = batch(2)
    model = built["plain"]
    cam = E.grad_cam(model, only_inputs(model, {k: v[:1] for k, v in x.items()}),
                     "block4_conv3", output_index=3)
    assert cam.shape == (SIZE, SIZE) and cam.dtype == np.float32
    assert cam.min() >= 0 and cam.max() <= 1
    cams = E.grad_cam(built["eacnet"], only_inputs(built["eacnet"], x), "enhance4", 0)
    assert cams.shape == (2, SIZE, SIZE)
    with pytest.raises(ValueError, match="no layer 'nope'"):
        E.grad_cam(model, x["image"], "nope")


def test_weight_counts():
    counts = E.count_locally_connected_weights(28, 28, 512, 512, regions=(8, 8))
    assert counts["convolution"] == 3 * 3 * 512 * 512 + 512
    assert counts["locally_connected"] == 28 * 28 * counts["convolution"]
    assert counts["region_grid"] == 64 * counts["convolution"]
