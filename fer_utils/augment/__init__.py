"""Data augmentation: the source's 5 pixel ops × 6 poses = 30× expansion, and on-the-fly tf.data.

The source notes expand every face 30×: five pixel-level changes (mean blur, unsharp masking,
motion blur, noise, colour) times six pose changes (rotation + translation written as an explicit
2×3 affine matrix [R | T]). This module does that offline (`expand_30x`, NumPy/OpenCV, uint8) and
on the fly inside a `tf.data` pipeline (`tf_random_augment`, TensorFlow ops, graph mode).
`tf_flip_shift` is the cheap on-the-fly mode of the small-CNN recipe: mirror and shift only.

Conventions:
    * Images are uint8, H×W or H×W×C (C = 1 grey, 3 RGB); batches are N×H×W×C.
    * Landmarks are (x, y) pixel coordinates with pixel centres at integers (OpenCV's and
      TensorFlow's convention), so a point moves exactly like the pixel under it:
      `p' = R @ p + T` with the same matrix `M = [R | T]` that warps the image.
    * A positive angle turns the face counter-clockwise as displayed (y pointing down), as in
      `cv2.getRotationMatrix2D`.
"""

from .geometry import (POSES, RANDOM_OPS, Pose, affine_matrix, apply_affine,
                       crop, crop_matrix, expand_30x, expand_faceset, pose_matrices,
                       random_augment, random_crops, transform_landmarks)
from .pixel import (COLOR_BRIGHTNESS, COLOR_CONTRAST, COLOR_GAINS, GREY_GAMMA, MEAN_BLUR_KSIZE,
                    MOTION_LENGTH, NOISE_SIGMA, PIXEL_OPS, UNSHARP_AMOUNT, UNSHARP_SIGMA,
                    VARIANTS_PER_IMAGE, add_noise, color_lut, color_shift, mean_blur,
                    motion_blur, motion_kernel, unsharp)
from .tf_ops import tf_flip_shift, tf_random_augment

__all__ = [
    "mean_blur", "unsharp", "motion_blur", "add_noise", "color_shift", "PIXEL_OPS",
    "Pose", "POSES", "affine_matrix", "pose_matrices", "apply_affine", "transform_landmarks",
    "crop_matrix", "crop", "random_crops", "motion_kernel", "color_lut",
    "expand_30x", "expand_faceset", "random_augment", "tf_random_augment", "RANDOM_OPS",
    "VARIANTS_PER_IMAGE", "tf_flip_shift", "MEAN_BLUR_KSIZE", "UNSHARP_SIGMA", "UNSHARP_AMOUNT",
    "MOTION_LENGTH", "NOISE_SIGMA", "COLOR_BRIGHTNESS", "COLOR_CONTRAST", "COLOR_GAINS",
    "GREY_GAMMA",
]

