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


def authors_map(grid_centres, decay, window):
    """The authors' loops (get_attention_map_dlib.py), with the window made symmetric.

    They loop over `range(c - window, c + window)`, which stops one cell short on the right and
    bottom; the kit's window is ±window cells either side.
    """
    amap = np.zeros((100, 100))
    for cx, cy in grid_centres:
        for px in range(cx - window, cx + window + 1):
            for py in range(cy - window, cy + window + 1):
                if 0 <= px < 100 and 0 <= py < 100:
                    value = 1 - (abs(px - cx) + abs(py - cy)) * decay
                    amap[py, px] = max(amap[py, px], value)
    return amap


def test_the_map_is_the_authors_all_au_map():
    assert (A.DECAY, A.WINDOW) == (0.07, 7)
    assert (A.SINGLE_AU_DECAY, A.SINGLE_AU_WINDOW) == (0.095, 5)
    centres = [(50, 50), (56, 52), (3, 97)]  # overlapping windows, one at the corner
    m = A.attention_map(centres, 100, 100)
    assert m.shape == (100, 100) and m.dtype == np.float32
    np.testing.assert_allclose(m, authors_map(centres, 0.07, 7), atol=1e-6)
    assert m[50, 50] == pytest.approx(1.0)
    assert m[52, 47] == pytest.approx(1 - 0.07 * 5)  # row 52, column 47: d = 2 + 3
    assert m[43, 43] == pytest.approx(1 - 0.07 * 14)  # the window's corner: 0.02
    assert m[50, 42] == 0.0 and m[42, 50] == 0.0  # 8 cells away: outside the square
    assert m.min() == 0.0 and m.max() <= 1.0


def test_single_au_maps_use_decay_0_095_on_5_cells():
    centres = np.zeros((20, 2), np.float32)
    centres[12], centres[13] = (30, 60), (70, 60)  # AU12's lip corners (region 6)
    m = A.single_au_map(centres, 12, 100, 100)
    np.testing.assert_allclose(m, authors_map([(30, 60), (70, 60)], 0.095, 5), atol=1e-6)
    assert m[60, 35] == pytest.approx(0.525) and m[55, 25] == pytest.approx(0.05)
    assert m[60, 36] == 0.0 and m[0, 0] == 0.0  # 6 cells: outside; other centres: none
    assert A.centers_of_au(12) == [12, 13] and A.centers_of_au(23) == [16, 17, 18, 19]
    batch = A.single_au_map(np.stack([centres, centres + 10]), 12, 100, 100)
    assert batch.shape == (2, 100, 100) and batch[1, 70, 40] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="AU9 has no EAC-Net region"):
        A.single_au_map(centres, 9, 100, 100)
    with pytest.raises(ValueError, match=r"20×2.*\(3, 2\)"):
        A.single_au_map(centres[:3], 12, 100, 100)


def test_max_pooling_to_the_feature_grids():
    m = A.attention_map([(50, 50)], 224, 224)
    pooled = [A.max_pool_maps(m, t) for t in (1, 2, 3)]
    assert [p.shape for p in pooled] == [(112, 112), (56, 56), (28, 28)]
    # Each cell is the largest value of its 2^t × 2^t block; the peak survives every pooling.
    np.testing.assert_array_equal(pooled[2], m.reshape(28, 8, 28, 8).max(axis=(1, 3)))
    assert all(p.max() == pytest.approx(m.max()) for p in pooled)
    assert (pooled[2] > 0).mean() > (m > 0).mean()  # pooling widens the region
    odd = A.max_pool_maps(np.ones((3, 7, 5)), 1)
    assert odd.shape == (3, 3, 2)  # sizes floored, as VGG's pooling
    with pytest.raises(ValueError, match="cannot be pooled again"):
        A.max_pool_maps(np.ones((2, 2)), 2)


def test_map_takes_the_maximum_on_overlap():
    m = A.attention_map([(40, 50), (46, 50)], 100, 100)
    assert m[50, 43] == pytest.approx(1 - 0.07 * 3)  # equidistant from both
    assert m[50, 45] == pytest.approx(1 - 0.07 * 1)  # nearer the second centre
    assert m[50, 40] == pytest.approx(1.0) and m[50, 46] == pytest.approx(1.0)


def test_map_distance_is_in_grid_units_on_non_square_images():
    m = A.attention_map([(100, 25)], 50, 200)
    assert m.shape == (50, 200)
    assert m[25, 104] == pytest.approx(1 - 0.07 * 2)  # 4 px × 100/200
    assert m[27, 100] == pytest.approx(1 - 0.07 * 4)  # 2 px × 100/50
    assert m[25, 114] == pytest.approx(1 - 0.07 * 7) and m[25, 116] == 0.0  # 8 cells: outside
    with pytest.raises(ValueError, match="window must be positive"):
        A.attention_map([(1, 1)], 10, 10, window=0)


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
