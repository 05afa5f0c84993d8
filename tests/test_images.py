"""The one home of uint8 and grey/RGB conversions (fer_utils.images)."""

import cv2
import numpy as np
import pytest

from fer_utils import faces, images
from fer_utils.data import readers


def test_to_uint8_scales_each_dtype():
    np.testing.assert_array_equal(images.to_uint8(np.array([0, 257, 32896, 65535], np.uint16)),
                                  [0, 1, 128, 255])
    np.testing.assert_array_equal(images.to_uint8(np.array([False, True])), [0, 255])
    np.testing.assert_array_equal(images.to_uint8(np.array([0.0, 0.5, 1.0])), [0, 128, 255])
    np.testing.assert_array_equal(images.to_uint8(np.array([0.4, 127.6, 300.0, np.nan])),
                                  [0, 128, 255, 0])
    np.testing.assert_array_equal(images.to_uint8(np.array([-5, 1, 300])), [0, 1, 255])
    same = np.arange(6, dtype=np.uint8)
    assert images.to_uint8(same) is same


def test_as_uint8_image_rescales_16_bit_and_bool_arrays():
    deep = np.full((4, 4), 32896, np.uint16)  # 16-bit mid grey
    assert (images.as_uint8_image(deep) == 128).all()
    mask = np.ones((4, 4, 3), bool)
    assert (images.as_uint8_image(mask) == 255).all()
    rgba = np.zeros((4, 4, 4), np.uint8)
    assert images.as_uint8_image(rgba).shape == (4, 4, 3)
    with pytest.raises(ValueError, match=r"photo must be .* got shape \(4, 4, 2\)"):
        images.as_uint8_image(np.zeros((4, 4, 2)), what="photo")


def test_to_channels_takes_one_image_or_a_batch():
    rgb = np.random.default_rng(0).integers(0, 256, (3, 8, 9, 3), dtype=np.uint8)
    grey = images.to_channels(rgb, 1)
    assert grey.shape == (3, 8, 9, 1)
    for k in range(3):
        np.testing.assert_array_equal(grey[k, ..., 0], cv2.cvtColor(rgb[k], cv2.COLOR_RGB2GRAY))
    np.testing.assert_array_equal(images.to_channels(rgb[0], 1), grey[0])
    assert images.to_channels(grey[0, ..., 0], 3).shape == (8, 9, 3)  # H×W → H×W×3
    assert images.to_channels(rgb[:0], 1).shape == (0, 8, 9, 1)  # no faces found
    assert images.to_channels(rgb, 3) is rgb


def test_faces_and_the_reader_use_the_one_home():
    assert faces.to_channels is images.to_channels
    assert faces.as_uint8_image is images.as_uint8_image
    assert readers.to_channels is images.to_channels and readers.to_uint8 is images.to_uint8


def test_check_input_shape_names_the_builder_and_the_bad_shape():
    assert images.check_input_shape([48, 48, 1], "small_cnn") == (48, 48, 1)
    assert images.check_input_shape((96, 64, 3), "vgg16", min_side=32) == (96, 64, 3)
    for bad, match in [((48, 48), r"\(48, 48\)"), ((48, 48, 2), "1 or 3 channels"),
                       ((16, 48, 3), ">= 32"), ("big", "'big'"), (None, "None")]:
        with pytest.raises(ValueError, match=rf"^vgg16: input_shape must be .*{match}"):
            images.check_input_shape(bad, "vgg16", min_side=32)
