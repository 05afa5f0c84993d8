"""The built-in data set: faces rendered from FACS action units through dlib's 68 landmarks.

How a face is made:

1. An identity (face shape, eye spacing, nose/mouth proportions, skin tone, hair) deforms a
   neutral 68-point template in dlib's order (jaw 0-16, brows 17-26, nose 27-35, eyes 36-47,
   mouth 48-67).
2. Action units move the landmarks (AU1 inner brows up, AU12 lip corners up and out, AU26 jaw
   drop, ...) and drive shading (forehead wrinkles, crow's feet, nasolabial folds, dimples...).
3. A pose (roll, mild yaw, scale, shift) maps the face into the image, which is drawn with
   OpenCV at 2-3× the output size and shrunk with INTER_AREA (anti-aliasing); then lighting,
   blur, noise, background and occluders (glasses, a hand or a bar) vary the picture.

The ground truth is exact: the expression label (FER2013 order, `fer_utils.data.EXPRESSIONS`),
the 12 BP4D AU intensities on FACS' 0-5 scale, the expression intensity in [0, 1] and the 68
landmarks in output pixel coordinates.

Framing (the crop convention, so that a detector-based crop at inference matches): before the
pose jitter, the image is the square centred on the centre of the bounding box of the
identity's *neutral* 68 landmarks, with side `FRAME_SCALE` (1.3) × the larger side of that box
(box = jaw 0-16 side to side, brow tops to chin): the face from the brows to just below the
chin fills most of the image, like the FER2013 crops. In terms of dlib's frontal face detector
(it finds all frontal 128-px renders, and 90-96 % of the varied data-set faces at 96-128 px),
the image is the detector's box grown to `DLIB_BOX_SCALE` (1.22) × its width, centred
`DLIB_BOX_SHIFT` (0.1) box widths below the box's centre: `crop_box_from_detection` does
that for a crop at inference. The pose then rolls the face by up to ±15°, scales it by
0.9-1.1 and shifts it by up to 5 % of the image (always keeping the 68 landmarks inside).

The package, by role: `landmarks` (the 68-point geometry, AUs, pose, framing), `sampling` (what
is random about one face), `drawing` (OpenCV painting), `render` (`render_face`), `workers`
(rendering many faces over processes) and `dataset` (`make_dataset`, its cache).
"""

from .dataset import (CLASS_BALANCES, FER2013_COUNTS, SYNTH_VERSION, cache_path,
                      expression_labels, make_dataset)
from .landmarks import (ALL_AUS, DLIB_BOX_SCALE, DLIB_BOX_SHIFT, FRAME_SCALE, POSE_KEYS,
                        crop_box_from_detection, neutral_landmarks)
from .render import render_face
from .sampling import BACKGROUNDS, EXPRESSION_AUS, OCCLUDERS, sample_face_params

__all__ = ["EXPRESSION_AUS", "ALL_AUS", "SYNTH_VERSION", "FRAME_SCALE", "CLASS_BALANCES",
           "FER2013_COUNTS", "BACKGROUNDS", "OCCLUDERS", "POSE_KEYS", "DLIB_BOX_SCALE",
           "DLIB_BOX_SHIFT", "make_dataset", "render_face", "neutral_landmarks", "cache_path",
           "expression_labels", "sample_face_params", "crop_box_from_detection"]
