"""fer_utils.attention: dlib faces and landmarks, EAC-Net AU centres and attention maps."""

import numpy as np
import pytest

from fer_utils import attention as A


def hand_landmarks():
    """68 landmarks with known values at the points the rule table uses (others at 0)."""
    lm = np.zeros((68, 2), np.float32)
    lm[39] = (80, 70)  # inner eye corners: ruler = 40 px
    lm[42] = (120, 70)
    lm[21] = (90, 60)
    lm[22] = (110, 60)
    lm[18] = (60, 55)
    lm[25] = (140, 55)
    lm[41] = (85, 74)
    lm[46] = (115, 74)
    lm[56] = (108, 150)
    lm[58] = (92, 150)
    return lm


def test_regions_follow_the_reference_table():
    assert len(A.AU_REGIONS) == 10
    assert [r.landmarks for r in A.AU_REGIONS] == [
        (21, 22), (18, 25), (19, 24), (41, 46), (38, 43), (49, 53), (48, 54), (51, 57),
        (61, 63), (56, 58)]
    assert [r.y_offset for r in A.AU_REGIONS] == pytest.approx(
        [-1 / 2, -1 / 3, 1 / 3, 1, 0, 0, 0, 0, 0, 1 / 2])
    assert A.AU_REGIONS[6].aus == (12, 14, 15)
    assert A.region_of_au(23) == [8, 9]
    with pytest.raises(ValueError, match="AU9"):
        A.region_of_au(9)


def test_centres_on_a_square_image():
    lm = hand_landmarks()
    c = A.au_centers(lm, 200, 200)
    assert c.shape == (20, 2) and c.dtype == np.float32
    # Scaled frame: ×0.5, ruler = |40 - 60| = 20 grid units = 40 px.
    np.testing.assert_allclose(c[0], (90, 60 - 20))  # landmark 21, -ruler/2
    np.testing.assert_allclose(c[1], (110, 40))  # landmark 22
    np.testing.assert_allclose(c[2], (60, 55 - 40 / 3), rtol=1e-6)  # landmark 18, -ruler/3
    np.testing.assert_allclose(c[6], (85, 74 + 40))  # landmark 41, +ruler
    np.testing.assert_allclose(c[7], (115, 114))
    np.testing.assert_allclose(c[18], (108, 150 + 20))  # landmark 56, +ruler/2
    np.testing.assert_allclose(c[19], (92, 170))
    # Zero-offset regions sit on their landmarks: region 4 is (38, 43) → centres 8 and 9.
    lm[38], lm[43] = (77, 66), (123, 66)
    np.testing.assert_allclose(A.au_centers(lm, 200, 200)[8:10], [(77, 66), (123, 66)])


def test_centres_on_a_non_square_image():
    lm = hand_landmarks()
    # W = 400, H = 100: x scale 0.25 → ruler = 10 grid units; y scale 1 → 10 grid units = 10 px.
    c = A.au_centers(lm, 100, 400)
    np.testing.assert_allclose(c[0], (90, 60 - 5))
    np.testing.assert_allclose(c[6], (85, 74 + 10))
    np.testing.assert_allclose(c[18], (108, 155))
    # H = 400, W = 100: x scale 1 → ruler = 40 grid units; y scale 0.25 → 40 units = 160 px.
    c = A.au_centers(lm, 400, 100)
    np.testing.assert_allclose(c[0], (90, 60 - 80))
    np.testing.assert_allclose(c[6], (85, 74 + 160))
    # Batch version agrees with the single one.
    both = A.au_centers(np.stack([lm, lm + 3]), 400, 100)
    assert both.shape == (2, 20, 2)
    np.testing.assert_allclose(both[0], c)


def test_centre_errors_are_clear():
    with pytest.raises(ValueError, match=r"68×2.*\(10, 2\)"):
        A.au_centers(np.zeros((10, 2)), 48, 48)
    with pytest.raises(ValueError, match="height and width"):
        A.au_centers(np.zeros((68, 2)), 0, 48)


def test_map_values():
    m = A.attention_map([(50, 50)], 100, 100)
    assert m.shape == (100, 100) and m.dtype == np.float32
    assert m[50, 50] == pytest.approx(1.0)
    assert m[52, 53] == pytest.approx(1 - 0.095 * 5)  # row 52, column 53: d = 3 + 2
    assert m[50, 60] == pytest.approx(0.05)  # d = 10, the rim of the window
    assert m[51, 60] == 0.0  # d = 11: outside the window
    assert m[0, 0] == 0.0 and m.min() == 0.0 and m.max() <= 1.0
    # Linear along a row inside the window.
    np.testing.assert_allclose(m[50, 50:61], 1 - 0.095 * np.arange(11), atol=1e-6)


def test_map_takes_the_maximum_on_overlap():
    m = A.attention_map([(40, 50), (46, 50)], 100, 100)
    assert m[50, 43] == pytest.approx(1 - 0.095 * 3)  # equidistant from both
    assert m[50, 45] == pytest.approx(1 - 0.095 * 1)  # nearer the second centre
    assert m[50, 40] == pytest.approx(1.0) and m[50, 46] == pytest.approx(1.0)


def test_map_distance_is_in_grid_units_on_non_square_images():
    m = A.attention_map([(100, 25)], 50, 200)
    assert m.shape == (50, 200)
    assert m[25, 104] == pytest.approx(1 - 0.095 * 2)  # 4 px × 100/200
    assert m[27, 100] == pytest.approx(1 - 0.095 * 4)  # 2 px × 100/50


def test_tensorflow_version_matches_numpy():
    lm = hand_landmarks()
    lm[:, 1] *= 0.5
    maps, rel = A.tf_attention_inputs(np.stack([lm, lm + 2]), 96, 120)
    centers = A.au_centers(np.stack([lm, lm + 2]), 96, 120)
    assert tuple(maps.shape) == (2, 96, 120, 1) and tuple(rel.shape) == (2, 20, 2)
    np.testing.assert_allclose(maps.numpy()[..., 0], A.attention_map(centers, 96, 120), atol=1e-5)
    np.testing.assert_allclose(rel.numpy(), A.relative_centers(centers, 96, 120), atol=1e-6)


def test_detect_on_astronaut_picks_the_real_face():
    skimage_data = pytest.importorskip("skimage.data")
    image = skimage_data.astronaut()
    faces = A.detect_faces(image)
    assert len(faces) >= 2  # the face and a false "face" on the mission patch
    x, y, w, h, score = faces[0]
    assert score > faces[1][4]
    assert y < 200 < faces[1][1]  # the real face is in the upper half, the patch lower down
    lm = A.detect_landmarks(image)
    assert lm.shape == (68, 2) and lm.dtype == np.float32
    margin = 0.25 * w
    assert np.all(lm[:, 0] > x - margin) and np.all(lm[:, 0] < x + w + margin)
    assert np.all(lm[:, 1] > y - margin) and np.all(lm[:, 1] < y + h + margin)
    # Eyes above the mouth, left eye left of the right eye.
    assert lm[36:48, 1].mean() < lm[48:68, 1].mean() and lm[36, 0] < lm[45, 0]
    # Grey input works too.
    grey = image.mean(axis=2).astype(np.uint8)
    assert np.abs(A.detect_landmarks(grey) - lm).mean() < 3


def test_no_face_is_a_clear_error():
    with pytest.raises(A.NoFaceFoundError, match=r"no face found in blank\.png.*\(64, 80\)"):
        A.detect_landmarks(np.full((64, 80), 128, np.uint8), source="blank.png")
    assert A.detect_faces(np.zeros((64, 80, 3), np.uint8)) == []
    with pytest.raises(ValueError, match="shape"):
        A.detect_faces(np.zeros((4, 5, 6, 7), np.uint8))
