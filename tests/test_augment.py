"""Unit tests of fer_utils.augment: pixel ops, [R | T] poses, 30× expansion, on-the-fly tf.data."""

import cv2
import numpy as np
import pytest

from fer_utils import augment as aug


def _faces(n=3, size=40, channels=3, seed=0):
    """Small random-but-smooth uint8 images (blurred noise, so the ops have texture to change)."""
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, (n, size, size, channels), dtype=np.uint8)
    return np.stack([cv2.GaussianBlur(im, (5, 5), 1.5).reshape(im.shape) for im in raw])


def _dot_images(points, size, channels, sigma=1.2):
    """Dark images with one bright Gaussian spot at each (x, y) point (sub-pixel positions)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    images = []
    for x, y in points:
        spot = 250.0 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))
        images.append(np.repeat(spot[..., None], channels, axis=-1))
    return np.stack(images)


def _spot_center(image):
    """Sub-pixel (x, y) of the brightest spot: centroid of the pixels above half its peak."""
    grey = np.asarray(image, dtype=np.float64).reshape(image.shape[0], image.shape[1], -1).mean(-1)
    y0, x0 = np.unravel_index(np.argmax(grey), grey.shape)
    ys, xs = slice(max(y0 - 3, 0), y0 + 4), slice(max(x0 - 3, 0), x0 + 4)
    window = grey[ys, xs]
    weights = np.clip(window - 0.5 * window.max(), 0, None)
    gy, gx = np.mgrid[ys, xs]
    return np.array([(weights * gx).sum(), (weights * gy).sum()]) / weights.sum()


# --- pixel ops -------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(32, 32), (32, 32, 1), (32, 40, 3)])
@pytest.mark.parametrize("name", list(aug.PIXEL_OPS))
def test_pixel_ops_keep_shape_and_dtype_and_change_the_image(name, shape):
    image = _faces(1, 40, 3)[0][:shape[0], :shape[1]]
    image = image[..., 0] if len(shape) == 2 else image[..., :shape[2]]
    image = np.ascontiguousarray(image)
    op = aug.PIXEL_OPS[name]
    out = op(image, rng=0) if name == "noise" else op(image)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - image).mean() > 0.5, f"{name} left the image (almost) unchanged"


def test_pixel_ops_are_the_five_of_the_source():
    assert list(aug.PIXEL_OPS) == ["mean_blur", "unsharp", "motion_blur", "noise", "color"]


def test_blurs_keep_a_flat_image_flat_and_unsharp_sharpens_an_edge():
    flat = np.full((20, 20, 3), 90, np.uint8)
    assert np.array_equal(aug.mean_blur(flat), flat)
    assert np.array_equal(aug.motion_blur(flat), flat)
    assert np.array_equal(aug.unsharp(flat), flat)
    edge = np.zeros((20, 20), np.uint8)
    edge[:, 10:] = 200
    sharp = aug.unsharp(edge).astype(int)
    assert sharp[:, 9].max() == 0 and sharp[:, 10].min() > 200  # overshoot on the bright side


def test_motion_blur_blurs_along_its_line_only():
    image = np.zeros((21, 21), np.uint8)
    image[10, 10] = 250
    out = aug.motion_blur(image, length=5, angle=0)
    assert (out[10, 8:13] > 0).all() and out[9].max() == 0 and out[11].max() == 0


def test_noise_is_seeded():
    image = _faces(1)[0]
    assert np.array_equal(aug.add_noise(image, rng=7), aug.add_noise(image, rng=7))
    assert not np.array_equal(aug.add_noise(image, rng=7), aug.add_noise(image, rng=8))
    noise = aug.add_noise(np.full((64, 64), 128, np.uint8), sigma=10, rng=0).astype(float) - 128
    assert 9 < noise.std() < 11 and abs(noise.mean()) < 1


def test_color_shift_grey_is_a_monotonic_lut_and_colour_shifts_channels_differently():
    ramp = np.tile(np.arange(256, dtype=np.uint8), (4, 1))
    out = aug.color_shift(ramp)
    assert np.all(np.diff(out[0].astype(int)) >= 0)  # order of grey levels kept
    rgb = np.full((8, 8, 3), 120, np.uint8)
    shifted = aug.color_shift(rgb, brightness=0, contrast=1.0, gains=(1.2, 1.0, 0.8))
    r, g, b = shifted[0, 0]
    assert r > g > b and g == 120


def test_pixel_ops_reject_bad_input_clearly():
    with pytest.raises(TypeError, match="uint8"):
        aug.mean_blur(np.zeros((8, 8), np.float32))
    with pytest.raises(TypeError, match="NumPy"):
        aug.unsharp([[1, 2], [3, 4]])
    with pytest.raises(ValueError, match="H×W"):
        aug.motion_blur(np.zeros((2, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="gains"):
        aug.color_shift(np.zeros((8, 8, 3), np.uint8), gains=(1, 2))


# --- poses -----------------------------------------------------------------------------------

def test_affine_matrix_is_R_T_and_matches_opencv():
    M = aug.affine_matrix(0, 3, -2)
    assert M.dtype == np.float32 and M.shape == (2, 3)
    np.testing.assert_allclose(M, [[1, 0, 3], [0, 1, -2]])
    M = aug.affine_matrix(30, 0, 0, scale=1.5, center=(20, 10))
    np.testing.assert_allclose(M, cv2.getRotationMatrix2D((20, 10), 30, 1.5), atol=1e-5)
    np.testing.assert_allclose(M[:, :2] @ [20, 10] + M[:, 2], [20, 10], atol=1e-4)  # centre stays
    with pytest.raises(ValueError, match="angle"):
        aug.affine_matrix(float("nan"), 0, 0)
    with pytest.raises(ValueError, match="scale"):
        aug.affine_matrix(0, 0, 0, scale=0)


def test_pose_grid_has_six_poses_and_pose_zero_is_the_identity():
    assert len(aug.POSES) == 6 and aug.POSES[0].name == "identity"
    mats = aug.pose_matrices(48, 48)
    assert mats.shape == (6, 2, 3)
    np.testing.assert_array_equal(mats[0], [[1, 0, 0], [0, 1, 0]])
    assert len({m.tobytes() for m in mats}) == 6  # six different poses


@pytest.mark.parametrize("channels", [1, 3])
def test_identity_pose_leaves_the_image_unchanged(channels):
    image = _faces(1, 33, channels)[0]
    assert np.array_equal(aug.apply_affine(image, aug.POSES[0].matrix(33, 33)), image)


@pytest.mark.parametrize("border", ["reflect", "replicate", "constant"])
def test_landmarks_follow_a_warped_spot(border):
    rng = np.random.default_rng(1)
    for _ in range(5):
        point = rng.uniform(14, 26, 2)
        image = _dot_images([point], 40, 1)[0].round().astype(np.uint8)
        M = aug.affine_matrix(rng.uniform(-20, 20), *rng.uniform(-4, 4, 2),
                              scale=rng.uniform(0.9, 1.1), center=(19.5, 19.5))
        moved = aug.transform_landmarks(point[None], M)[0]
        assert np.linalg.norm(_spot_center(aug.apply_affine(image, M, border)) - moved) < 1.0


def test_transform_landmarks_checks_shapes():
    with pytest.raises(ValueError, match="K×2"):
        aug.transform_landmarks(np.zeros((68, 3)), aug.affine_matrix(0, 0, 0))
    with pytest.raises(ValueError, match="2×3"):
        aug.transform_landmarks(np.zeros((2, 68, 2)), np.zeros((3, 2, 3)))


# --- offline 30x expansion -------------------------------------------------------------------

@pytest.mark.parametrize("channels", [1, 3])
def test_expand_30x_shapes_order_and_reference_ops(channels):
    images = _faces(3, 36, channels, seed=2)
    landmarks = np.random.default_rng(0).uniform(5, 30, (3, 68, 2)).astype(np.float32)
    out, moved = aug.expand_30x(images, landmarks, seed=4)
    assert out.shape == (90, 36, 36, channels) and out.dtype == np.uint8
    assert moved.shape == (90, 68, 2) and moved.dtype == np.float32
    grid = out.reshape(3, 5, 6, 36, 36, channels)
    mats = aug.pose_matrices(36, 36)
    noise_rng = np.random.default_rng(4)  # the noise of image i: i-th draw of one generator
    for i in range(3):
        reference = [aug.mean_blur(images[i]), aug.unsharp(images[i]), aug.motion_blur(images[i]),
                     aug.add_noise(images[i], rng=noise_rng), aug.color_shift(images[i])]
        for k in range(5):
            np.testing.assert_array_equal(grid[i, k, 0], reference[k])  # pose 0 = the pixel op
            for p in range(6):
                warped = aug.apply_affine(reference[k], mats[p])
                np.testing.assert_array_equal(grid[i, k, p], warped)
                expected = aug.transform_landmarks(landmarks[i], mats[p])
                np.testing.assert_allclose(moved[i * 30 + k * 6 + p], expected, atol=1e-4)


def test_expand_30x_without_landmarks_returns_only_images_and_is_deterministic():
    images = _faces(2, 24, 3)
    a = aug.expand_30x(images, seed=1)
    assert isinstance(a, np.ndarray) and a.shape == (60, 24, 24, 3)
    assert np.array_equal(a, aug.expand_30x(images, seed=1))
    b = aug.expand_30x(images, seed=2).reshape(2, 5, 6, 24, 24, 3)
    a = a.reshape(2, 5, 6, 24, 24, 3)
    assert not np.array_equal(a[:, 3], b[:, 3])  # only the noise op depends on the seed
    assert np.array_equal(np.delete(a, 3, axis=1), np.delete(b, 3, axis=1))


@pytest.mark.parametrize("channels", [1, 3])
def test_expand_30x_landmarks_mark_the_same_pixels_in_every_variant(channels):
    rng = np.random.default_rng(3)
    points = rng.uniform(15, 33, (4, 2))
    images = _dot_images(points, 48, channels).round().astype(np.uint8)
    landmarks = np.repeat(points[:, None, :], 68, axis=1).astype(np.float32)
    out, moved = aug.expand_30x(images, landmarks)
    for j in range(len(out)):
        error = np.linalg.norm(_spot_center(out[j]) - moved[j, 0])
        assert error < 1.0, f"variant {j} (op {j % 30 // 6}, pose {j % 6}): spot {error:.2f} px off"


def test_expand_30x_rejects_bad_input_clearly():
    images = _faces(2, 24, 3)
    with pytest.raises(TypeError, match="uint8"):
        aug.expand_30x(images.astype(np.float32))
    with pytest.raises(ValueError, match="N×H×W×C"):
        aug.expand_30x(images[0])
    with pytest.raises(ValueError, match="N×K×2"):
        aug.expand_30x(images, np.zeros((2, 68)))
    with pytest.raises(ValueError, match="3 rows but there are 2 images"):
        aug.expand_30x(images, np.zeros((3, 68, 2)))
    with pytest.raises(ValueError, match="empty batch"):
        aug.expand_30x(images[:0])


# --- random augmentation (NumPy and TensorFlow) ----------------------------------------------

def test_random_augment_numpy_moves_landmarks_with_the_spot_and_is_seeded():
    points = np.random.default_rng(5).uniform(15, 25, (6, 2))
    images = _dot_images(points, 40, 3).round().astype(np.uint8)
    for k, (image, point) in enumerate(zip(images, points)):
        out, lm = aug.random_augment(image, point[None], rng=k)
        assert out.shape == image.shape and out.dtype == np.uint8 and lm.shape == (1, 2)
        assert np.linalg.norm(_spot_center(out) - lm[0]) < 1.0
        again, lm2 = aug.random_augment(image, point[None], rng=k)
        assert np.array_equal(out, again) and np.array_equal(lm, lm2)
    same, _ = aug.random_augment(images[0], rng=0, max_angle=0, max_shift=0, pixel_ops=("none",))
    assert np.array_equal(same, images[0])
    with pytest.raises(ValueError, match="pixel_ops"):
        aug.random_augment(images[0], pixel_ops=("sepia",))


@pytest.fixture(scope="module")
def tf():
    import tensorflow

    return tensorflow


def test_tf_random_augment_shapes_landmarks_and_determinism(tf):
    points = np.random.default_rng(6).uniform(14, 34, (12, 2))
    images = _dot_images(points, 48, 3).astype(np.float32)
    landmarks = np.repeat(points[:, None, :], 68, axis=1).astype(np.float32)
    out, moved = aug.tf_random_augment(tf.constant(images), tf.constant(landmarks), seed=3)
    assert out.shape == images.shape and out.dtype == tf.float32
    assert moved.shape == landmarks.shape and moved.dtype == tf.float32
    out, moved = out.numpy(), moved.numpy()
    for j in range(len(out)):
        assert np.linalg.norm(_spot_center(out[j]) - moved[j, 0]) < 1.0, f"sample {j}"
    assert not np.allclose(moved, landmarks)  # the poses did move the points
    again, moved2 = aug.tf_random_augment(tf.constant(images), tf.constant(landmarks), seed=3)
    np.testing.assert_array_equal(out, again.numpy())
    np.testing.assert_array_equal(moved, moved2.numpy())
    other, _ = aug.tf_random_augment(tf.constant(images), tf.constant(landmarks), seed=4)
    assert not np.allclose(out, other.numpy())


def test_tf_random_augment_clips_to_the_grey_level_range(tf):
    """Noise on a near-white and a near-black face: values are clipped to 0..255."""
    x = tf.constant(np.stack([np.full((16, 16, 1), 250.0), np.full((16, 16, 1), 5.0)]),
                    tf.float32)
    out, _ = aug.tf_random_augment(x, seed=0, max_angle=0, max_shift=0, pixel_ops=("noise",),
                                   noise_sigma=20.0)
    out = out.numpy()
    assert out[0].max() == 255.0 and out[0].min() < 250.0  # noise applied, top clipped
    assert out[1].min() == 0.0 and out[1].max() > 5.0  # and the bottom


def test_tf_random_augment_without_seed_follows_the_global_seed(tf):
    x = tf.constant(_faces(4, 24, 1).astype(np.float32))
    tf.random.set_seed(11)
    first, _ = aug.tf_random_augment(x)
    tf.random.set_seed(11)
    again, _ = aug.tf_random_augment(x)
    np.testing.assert_array_equal(first.numpy(), again.numpy())
    later, _ = aug.tf_random_augment(x)  # the next call draws new variants
    assert not np.array_equal(first.numpy(), later.numpy())


def test_tf_random_augment_identity_and_ops_match_numpy(tf):
    images = _faces(4, 32, 3, seed=9)
    x = tf.constant(images.astype(np.float32))
    same, lm = aug.tf_random_augment(x, seed=0, max_angle=0, max_shift=0, pixel_ops=("none",))
    assert lm is None
    np.testing.assert_allclose(same.numpy(), images, atol=1e-3)
    for name in ("mean_blur", "unsharp", "motion_blur"):
        out, _ = aug.tf_random_augment(x, seed=0, max_angle=0, max_shift=0, pixel_ops=(name,))
        reference = np.stack([aug.PIXEL_OPS[name](im) for im in images]).astype(float)
        assert np.abs(out.numpy() - reference).max() <= 1.01, name


def test_tf_random_augment_runs_in_a_dataset_map_with_grey_images(tf):
    images = _faces(10, 24, 1).astype(np.float32)
    landmarks = np.random.default_rng(0).uniform(4, 20, (10, 68, 2)).astype(np.float32)
    ds = tf.data.Dataset.from_tensor_slices((images, landmarks)).batch(4)
    ds = ds.map(lambda a, b: aug.tf_random_augment(a, b))  # graph mode, unknown batch size
    shapes = [(a.shape, b.shape) for a, b in ds]
    assert [s[0][0] for s in shapes] == [4, 4, 2]
    assert all(a[1:] == (24, 24, 1) and b[1:] == (68, 2) for a, b in shapes)


def test_tf_random_augment_rejects_bad_input_clearly(tf):
    with pytest.raises(TypeError, match="float32"):
        aug.tf_random_augment(tf.zeros([2, 8, 8, 1], tf.uint8))
    with pytest.raises(ValueError, match="B×K×2"):
        aug.tf_random_augment(tf.zeros([2, 8, 8, 1]), tf.zeros([2, 68]))
    with pytest.raises(ValueError, match="2 images but 3"):
        aug.tf_random_augment(tf.zeros([2, 8, 8, 1]), tf.zeros([3, 68, 2]))
    with pytest.raises(ValueError, match="pixel_ops"):
        aug.tf_random_augment(tf.zeros([2, 8, 8, 1]), pixel_ops=())


# --- crops -----------------------------------------------------------------------------------

def test_crop_is_an_affine_map_and_landmarks_follow():
    image = _faces(1, 40, 3)[0]
    np.testing.assert_array_equal(aug.crop(image, (0, 0, 40, 40)), image)  # whole image: identity
    np.testing.assert_array_equal(aug.crop(image, (5, 7, 20, 20)), image[7:27, 5:25])
    point = np.array([[21.3, 18.6]])
    spot = _dot_images(point, 40, 1)[0].round().astype(np.uint8)
    out, moved = aug.crop(spot, (8, 6, 24, 24), size=48, landmarks=point)
    assert out.shape == (48, 48, 1) and moved.shape == (1, 2)
    assert np.linalg.norm(_spot_center(out) - moved[0]) < 1.0
    crops, pts = aug.random_crops(spot, count=4, fraction=0.8, landmarks=point, rng=0)
    assert crops.shape == (4, 40, 40, 1) and pts.shape == (4, 1, 2)
    for c, p in zip(crops, pts):
        assert np.linalg.norm(_spot_center(c) - p[0]) < 1.0
    with pytest.raises(ValueError, match="inside"):
        aug.crop(image, (30, 0, 20, 20))


def test_expand_faceset_repeats_labels_and_moves_landmarks():
    from fer_utils.data import FaceSet

    images = _faces(3, 24, 1)
    landmarks = np.random.default_rng(2).uniform(4, 20, (3, 68, 2)).astype(np.float32)
    faces = FaceSet(images=images, labels=[0, 3, 6], landmarks=landmarks, source="test")
    big = aug.expand_faceset(faces, seed=1, progress=False)
    assert len(big) == 90 and big.images.shape == (90, 24, 24, 1)
    np.testing.assert_array_equal(big.labels, np.repeat([0, 3, 6], 30))
    expected_images, expected_points = aug.expand_30x(images, landmarks, seed=1)
    np.testing.assert_array_equal(big.images, expected_images)
    np.testing.assert_array_equal(big.landmarks, expected_points)
    with pytest.raises(TypeError, match="FaceSet"):
        aug.expand_faceset(images)
