"""Face data sets: the FaceSet container, readers, loaders, splits and tf.data pipelines.

The package is split by role; every public name is re-exported here, so `fu.data.X` works:

- `fer_utils.faceset`: `FaceSet`, the label constants, `DataError`, `DataWarning` (a leaf).
- `readers`: THE image reader with truncation checks (`read_image`, used by the loaders and by
  `predict`) and THE folder writer (`write_image_folder`).
- `fer2013`, `folders`, `au_csv`: the loaders of each kind of set; `loaders`: `load_dataset`.
- `splits`: subsampling, group-aware `split`, counts, exact duplicates.
- `pipeline`: `to_tf_dataset` and the VGG preprocessing; `normalise`: normalisation helpers.
- `fetch`: `fetch_fer2013`, the public Kaggle copies (imported on use: `fer_utils.data.fetch`).
"""

from ..faceset import (AU_NAMES, AU_PRESENT_THRESHOLD, BP4D_AUS, EXPRESSIONS, SPLITS, DataError,
                       DataWarning, FaceSet)
from .au_csv import load_au_csv
from .fer2013 import FER2013_SIZE, SPLIT_TO_USAGE, USAGE_TO_SPLIT, load_fer2013, write_fer2013_csv
from .folders import (FITS, SPLIT_FOLDER_NAMES, FolderScan, describe_folder, load_image_folder,
                      scan_folder)
from .loaders import FOR_MODELS, load_dataset, read_plan
from .normalise import (VGG_MEAN_RGB, channel_mean, mean_image, resize_images, scale_01,
                        subtract_mean)
from .pipeline import PREPROCESS, TARGETS, to_tf_dataset, vgg_preprocess
from .readers import IMAGE_EXTENSIONS, read_image, write_image_folder
from .splits import (class_balance, crossing_duplicates, duplicate_report, find_duplicates,
                     group_report, split, stratified_subsample, summary)

__all__ = [
    "AU_NAMES", "AU_PRESENT_THRESHOLD", "BP4D_AUS", "EXPRESSIONS", "SPLITS", "DataError",
    "DataWarning", "FaceSet", "load_au_csv", "FER2013_SIZE", "SPLIT_TO_USAGE", "USAGE_TO_SPLIT",
    "load_fer2013", "write_fer2013_csv", "FITS", "SPLIT_FOLDER_NAMES", "FolderScan",
    "describe_folder", "load_image_folder", "scan_folder", "FOR_MODELS", "load_dataset",
    "read_plan", "VGG_MEAN_RGB", "channel_mean", "mean_image", "resize_images", "scale_01",
    "subtract_mean", "PREPROCESS", "TARGETS", "to_tf_dataset", "vgg_preprocess",
    "IMAGE_EXTENSIONS", "read_image", "write_image_folder", "class_balance",
    "crossing_duplicates", "duplicate_report", "find_duplicates", "group_report", "split",
    "stratified_subsample", "summary",
]
