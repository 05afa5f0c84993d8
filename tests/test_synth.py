"""Tests of the built-in FACS face set (fer_utils.synth)."""

import numpy as np
import pytest

from fer_utils import synth
from fer_utils.data import AU_NAMES, BP4D_AUS, EXPRESSIONS, FaceSet

AU = {au: i for i, au in enumerate(BP4D_AUS)}
N_SET = 1400


@pytest.fixture(scope="module")
def faces():
    """A shared set of faces, big enough for the statistical tests."""
    return synth.make_dataset(N_SET, seed=11, cache=False, progress=False)


def test_render_face_shapes_and_dtypes():
    for size, channels in ((48, 1), (64, 3), (128, 1)):
        image, landmarks = synth.render_face(expression="happy", size=size, channels=channels)
        assert image.shape == (size, size, channels) and image.dtype == np.uint8
        assert landmarks.shape == (68, 2) and landmarks.dtype == np.float32
        assert np.all((landmarks >= -0.5) & (landmarks <= size - 0.5))
        assert image.std() > 10  # a picture, not a blank


def test_render_face_is_deterministic_and_identities_differ():
    a = synth.render_face(aus={12: 3, 6: 2}, identity_seed=5, noise=3.0, lighting=0.3)
    b = synth.render_face(aus={12: 3, 6: 2}, identity_seed=5, noise=3.0, lighting=0.3)
    c = synth.render_face(aus={12: 3, 6: 2}, identity_seed=6, noise=3.0, lighting=0.3)
    assert a[0].tobytes() == b[0].tobytes() and np.array_equal(a[1], b[1])
    assert a[0].tobytes() != c[0].tobytes()


def test_aus_move_the_right_landmarks():
    size = 96
    _, neutral = synth.render_face(size=size)
    _, smile = synth.render_face(aus={"AU12": 5}, size=size)
    # AU12 pulls the lip corners (48, 54) up (smaller y) and outwards.
    assert np.all(smile[[48, 54], 1] < neutral[[48, 54], 1] - 2)
    assert smile[54, 0] - smile[48, 0] > neutral[54, 0] - neutral[48, 0] + 2
    _, down = synth.render_face(aus={15: 5}, size=size)
    assert np.all(down[[48, 54], 1] > neutral[[48, 54], 1] + 2)
    _, brows_up = synth.render_face(aus={1: 5}, size=size)
    assert np.all(brows_up[[21, 22], 1] < neutral[[21, 22], 1] - 2)
    _, frown = synth.render_face(aus={4: 5}, size=size)
    assert frown[22, 0] - frown[21, 0] < neutral[22, 0] - neutral[21, 0] - 2
    _, jaw = synth.render_face(aus={26: 5}, size=size)
    assert jaw[8, 1] > neutral[8, 1] + 4 and jaw[66, 1] - jaw[62, 1] > 4
    # Untouched parts stay put.
    assert np.allclose(smile[17:27], neutral[17:27], atol=0.01)


def test_bp4d_array_and_expression_arguments():
    arr = np.zeros(len(BP4D_AUS))
    arr[AU[12]] = 4.0
    a = synth.render_face(aus=arr, size=64)
    b = synth.render_face(aus={12: 4.0}, size=64)
    assert a[0].tobytes() == b[0].tobytes()
    happy = synth.render_face(expression="happy", intensity=1.0, size=64)
    weak = synth.render_face(expression="happy", intensity=0.2, size=64)
    assert happy[1][48, 1] < weak[1][48, 1]


def test_landmarks_mark_the_features(faces):
    """Eye landmarks sit on dark pupils/lashes; the mouth seam is darker than the cheeks."""
    imgs = faces.images[..., 0].astype(np.float32)
    lm = faces.landmarks
    idx = np.arange(len(faces))

    def sample(points):
        x = np.clip(np.round(points[:, 0]).astype(int), 0, imgs.shape[2] - 1)
        y = np.clip(np.round(points[:, 1]).astype(int), 0, imgs.shape[1] - 1)
        return imgs[idx, y, x]

    eye = sample((lm[:, 37] + lm[:, 38] + lm[:, 40] + lm[:, 41]) / 4)
    cheek = sample(lm[:, 29] * 0.4 + lm[:, 2] * 0.6)
    lip_line = sample((lm[:, 61] + lm[:, 62] + lm[:, 63] + lm[:, 65] + lm[:, 66] + lm[:, 67]) / 6)
    assert eye.mean() < cheek.mean() - 15
    assert lip_line.mean() < cheek.mean() - 10


def test_make_dataset_contents(faces):
    assert isinstance(faces, FaceSet) and len(faces) == N_SET
    assert faces.images.shape == (N_SET, 48, 48, 1) and faces.images.dtype == np.uint8
    assert faces.aus.shape == (N_SET, 12) and faces.aus.dtype == np.float32
    assert faces.au_names == AU_NAMES and faces.class_names == EXPRESSIONS
    assert faces.landmarks.shape == (N_SET, 68, 2) and faces.landmarks.dtype == np.float32
    assert faces.source == "synthetic (seed=11)"
    assert np.all((faces.landmarks >= -0.5) & (faces.landmarks <= 47.5))
    assert faces.aus.min() >= 0 and faces.aus.max() <= 5
    assert np.all((faces.intensity >= 0) & (faces.intensity <= 1))
    counts = faces.class_counts()
    assert counts.max() - counts.min() <= 1  # uniform by default
    neutral = faces.labels == EXPRESSIONS.index("neutral")
    assert np.all(faces.intensity[neutral] == 0) and np.all(faces.intensity[~neutral] > 0)
    # Variety: faces differ a lot from each other (pose, identity, background...).
    assert faces.images.reshape(N_SET, -1).std(axis=0).mean() > 25


def test_happy_faces_carry_au6_and_au12_and_neutral_faces_almost_none(faces):
    present = faces.au_present
    happy = faces.labels == EXPRESSIONS.index("happy")
    assert present[happy, AU[12]].mean() > 0.95
    assert present[happy, AU[6]].mean() > 0.7
    assert (present[happy, AU[6]] & present[happy, AU[12]]).mean() > 0.7
    neutral = faces.labels == EXPRESSIONS.index("neutral")
    assert present[neutral].sum(axis=1).mean() < 0.5
    assert (present[neutral].sum(axis=1) == 0).mean() > 0.7
    # Prototypes: sad raises AU1 and AU15, anger AU4, surprise AU2.
    for name, au in (("sad", 1), ("sad", 15), ("angry", 4), ("surprise", 2)):
        assert present[faces.labels == EXPRESSIONS.index(name), AU[au]].mean() > 0.9


def test_aus_are_not_a_function_of_the_expression(faces):
    present = faces.au_present
    for k, name in enumerate(EXPRESSIONS[:-1]):
        rows = present[faces.labels == k]
        share = rows.mean(axis=0)
        # Some AU is present in some but not all faces of this expression.
        assert np.any((share > 0.03) & (share < 0.97)), name
        # The AU pattern is not one fixed pattern per expression.
        assert len({tuple(r) for r in rows}) > 3, name
    # Non-prototypical AUs show up: AU4 (a frown) on some happy faces, AU12 on some sad ones.
    happy = faces.labels == EXPRESSIONS.index("happy")
    sad = faces.labels == EXPRESSIONS.index("sad")
    assert 0 < present[happy, AU[4]].mean() < 0.3
    assert 0 < present[sad, AU[12]].mean() < 0.3
    # The intensity varies from subtle to strong.
    smiles = faces.aus[happy, AU[12]]
    assert smiles.min() < 2.0 and smiles.max() > 4.0


def _aligned_landmarks(lm):
    """Landmarks centred and normalised for scale and roll (eye line horizontal)."""
    left, right = lm[:, 36:42].mean(axis=1), lm[:, 42:48].mean(axis=1)
    d = right - left
    angle = np.arctan2(d[:, 1], d[:, 0])
    scale = np.linalg.norm(d, axis=1)
    c, s = np.cos(-angle), np.sin(-angle)
    centred = lm - ((left + right) / 2)[:, None]
    x = (centred[..., 0] * c[:, None] - centred[..., 1] * s[:, None]) / scale[:, None]
    y = (centred[..., 0] * s[:, None] + centred[..., 1] * c[:, None]) / scale[:, None]
    return np.concatenate([x, y], axis=1)


def test_it_is_a_real_learning_problem(faces):
    """Raw pixels are not linearly separable; the geometry still carries the expression."""
    from sklearn.linear_model import LogisticRegression, RidgeClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train, test = slice(0, 1000), slice(1000, None)
    y = faces.labels

    def score(x, model):
        model = make_pipeline(StandardScaler(), model)
        model.fit(x[train], y[train])
        return model.score(x[test], y[test])

    pixels = faces.images.reshape(len(faces), -1).astype(np.float32)
    # A linear classifier on raw pixels (closed-form ridge: fast and fully fitted), given the
    # best of a few regularisation strengths on the test part: still poor.
    pixel_acc = max(score(pixels, RidgeClassifier(alpha=a)) for a in (10.0, 1e3, 1e5))
    landmark_acc = score(_aligned_landmarks(faces.landmarks), LogisticRegression(max_iter=500))
    au_acc = score(faces.aus, LogisticRegression(max_iter=500))
    chance = 1 / len(EXPRESSIONS)
    assert pixel_acc < 0.6, pixel_acc
    assert landmark_acc > 3 * chance, landmark_acc
    assert au_acc > 4 * chance, au_acc
    assert landmark_acc > pixel_acc + 0.1


def test_make_dataset_is_deterministic():
    a = synth.make_dataset(42, seed=3, cache=False, progress=False)
    b = synth.make_dataset(42, seed=3, cache=False, progress=False)
    c = synth.make_dataset(42, seed=4, cache=False, progress=False)
    assert a.images.tobytes() == b.images.tobytes()
    assert np.array_equal(a.aus, b.aus) and np.array_equal(a.landmarks, b.landmarks)
    assert a.images.tobytes() != c.images.tobytes()


def test_rgb_and_sizes():
    fs = synth.make_dataset(14, seed=2, size=32, channels=3, cache=False, progress=False)
    assert fs.images.shape == (14, 32, 32, 3)
    assert np.abs(fs.images[..., 0].astype(int) - fs.images[..., 2]).mean() > 3  # in colour
    assert synth.make_dataset(0, cache=False, progress=False).images.shape == (0, 48, 48, 1)


def test_fer2013_class_balance():
    labels = synth.expression_labels(35887, 0, "fer2013")  # the quotas, without rendering
    assert np.array_equal(np.bincount(labels, minlength=7), synth.FER2013_COUNTS)
    fs = synth.make_dataset(70, seed=0, cache=False, progress=False, class_balance="fer2013")
    counts = fs.class_counts()
    assert counts[EXPRESSIONS.index("happy")] > 4 * counts[EXPRESSIONS.index("disgust")]
    assert counts.sum() == 70


def test_cache_is_written_and_reused(tmp_path, monkeypatch):
    first = synth.make_dataset(20, seed=5, data_dir=tmp_path, progress=False)
    path = synth.cache_path(20, seed=5, data_dir=tmp_path)
    assert path.is_file() and path.parent == tmp_path / "synthetic"
    assert f"v{synth.SYNTH_VERSION}" in path.name

    def boom(*args, **kwargs):
        raise AssertionError("rendered again instead of reading the cache")

    monkeypatch.setattr(synth.workers, "render_chunk", boom)
    again = synth.make_dataset(20, seed=5, data_dir=tmp_path, progress=False)
    assert again.images.tobytes() == first.images.tobytes()
    assert np.array_equal(again.landmarks, first.landmarks) and again.source == first.source
    with pytest.raises(AssertionError, match="rendered again"):  # other arguments: new file
        synth.make_dataset(20, seed=6, data_dir=tmp_path, progress=False)


def test_unwritable_cache_folder_only_warns(tmp_path):
    not_a_folder = tmp_path / "data"
    not_a_folder.write_text("a file where the data folder should be")
    with pytest.warns(UserWarning, match="cannot write the synthetic cache"):
        fs = synth.make_dataset(5, seed=1, data_dir=not_a_folder, progress=False)
    assert len(fs) == 5 and fs.images.shape == (5, 48, 48, 1)


def test_damaged_cache_is_rendered_again(tmp_path):
    path = synth.cache_path(10, seed=1, data_dir=tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not an npz")
    with pytest.warns(UserWarning, match="unreadable synthetic cache"):
        fs = synth.make_dataset(10, seed=1, data_dir=tmp_path, progress=False)
    assert len(fs) == 10
    assert len(synth.make_dataset(10, seed=1, data_dir=tmp_path, progress=False)) == 10


def test_neutral_landmarks_and_expression_table():
    t = synth.neutral_landmarks()
    assert t.shape == (68, 2) and t.dtype == np.float32
    assert t.min() > 0.05 and t.max() < 0.95
    assert t[8, 1] > t[30, 1] > t[27, 1] > t[19, 1]  # chin below nose tip below bridge below brow
    assert t[36, 0] < t[39, 0] < t[42, 0] < t[45, 0]
    assert set(synth.EXPRESSION_AUS) == set(EXPRESSIONS)
    assert set(synth.EXPRESSION_AUS["happy"]) >= {6, 12}
    assert synth.EXPRESSION_AUS["neutral"] == {}


@pytest.mark.parametrize("call, match", [
    (lambda: synth.make_dataset(-1, cache=False), "-1"),
    (lambda: synth.make_dataset(2.5, cache=False), "2.5"),
    (lambda: synth.make_dataset(5, size=8, cache=False), "8"),
    (lambda: synth.make_dataset(5, channels=2, cache=False), "2"),
    (lambda: synth.make_dataset(5, class_balance="skewed", cache=False), "skewed"),
    (lambda: synth.make_dataset(5, seed=-3, cache=False), "-3"),
    (lambda: synth.render_face(expression="happyy"), "happyy"),
    (lambda: synth.render_face(aus={99: 1}), "99"),
    (lambda: synth.render_face(aus={"AUx": 1}), "AUx"),
    (lambda: synth.render_face(aus={12: 7}), "7"),
    (lambda: synth.render_face(aus=[1, 2, 3]), "3"),
    (lambda: synth.render_face(size=10), "10"),
    (lambda: synth.render_face(channels=4), "4"),
    (lambda: synth.render_face(pose={"pitch": 3}), "pitch"),
    (lambda: synth.render_face(background="stars"), "stars"),
    (lambda: synth.render_face(occluder="hat"), "hat"),
    (lambda: synth.render_face(intensity=1.5), "1.5"),
])
def test_bad_arguments_raise_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_crop_convention_matches_dlib_detector():
    """dlib finds rendered faces, and crop_box_from_detection gives back (about) the frame."""
    dlib = pytest.importorskip("dlib")
    detector = dlib.get_frontal_face_detector()
    size = 128
    for identity, expression in ((1, "happy"), (2, "neutral"), (3, "surprise")):
        image, _ = synth.render_face(expression=expression, identity_seed=identity, size=size)
        rects = detector(np.ascontiguousarray(image[..., 0]), 1)
        assert len(rects) == 1
        r = rects[0]
        x0, y0, side = synth.crop_box_from_detection(r.left(), r.top(), r.width(), r.height())
        assert abs(side - size) < 0.2 * size  # dlib boxes vary with the face shape
        assert abs(x0) < 0.1 * size and abs(y0) < 0.1 * size
    with pytest.raises(ValueError, match="-5"):
        synth.crop_box_from_detection(0, 0, -5, 10)
