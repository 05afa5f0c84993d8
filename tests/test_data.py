"""fer_utils.data: loaders and their bad-input handling, split, normalisation, tf.data."""

import warnings

import cv2
import numpy as np
import pytest

from fer_utils import data
from fer_utils.data import DataError, DataWarning, FaceSet


def random_faceset(n=140, size=48, channels=1, seed=0, counts=None, extras=True, split=False):
    """A small FaceSet of random pixels; `counts` fixes the faces per class."""
    rng = np.random.default_rng(seed)
    if counts is not None:
        labels = np.repeat(np.arange(len(counts)), counts)
        n = len(labels)
    else:
        labels = np.arange(n) % 7
    kwargs = {}
    if extras:
        kwargs = dict(aus=rng.uniform(0, 5, (n, 12)).round(1),
                      landmarks=rng.uniform(4, size - 4, (n, 68, 2)),
                      intensity=rng.uniform(0, 1, n))
    if split:
        kwargs["split"] = rng.choice(["train", "val", "test"], n, p=[0.8, 0.1, 0.1])
    return FaceSet(images=rng.integers(0, 256, (n, size, size, channels), dtype=np.uint8),
                   labels=labels, source="random", **kwargs)


def one_warning(record, category=DataWarning):
    """The text of the single warning of `category` in a pytest.warns / catch_warnings record."""
    found = [w for w in record if issubclass(w.category, category)]
    assert len(found) == 1, [str(w.message) for w in found]
    return str(found[0].message)


# ---------------------------------------------------------------------------------------------
# FER2013 CSV
# ---------------------------------------------------------------------------------------------

def fer_row(label, value=7, usage="Training", count=2304):
    return f"{label},{' '.join([str(value)] * count)},{usage}\n"


def test_fer2013_round_trip_keeps_pixels_labels_and_usage(tmp_path):
    fs = random_faceset(70, extras=False, split=True)
    path = data.write_fer2013_csv(fs, tmp_path / "fer.csv")
    assert path.read_text().splitlines()[0] == "emotion,pixels,Usage"
    back = data.load_fer2013(path)
    assert back.image_shape == (48, 48, 1) and back.images.dtype == np.uint8
    np.testing.assert_array_equal(back.images, fs.images)
    np.testing.assert_array_equal(back.labels, fs.labels)
    np.testing.assert_array_equal(back.split, fs.split)
    assert back.class_names == data.EXPRESSIONS


def test_write_fer2013_converts_rgb_and_size_and_maps_class_names(tmp_path):
    fs = random_faceset(14, size=64, channels=3, extras=False)
    fs = FaceSet(images=fs.images, labels=fs.labels % 2, class_names=("happy", "sad"))
    back = data.load_fer2013(data.write_fer2013_csv(fs, tmp_path / "x.csv"))
    assert back.image_shape == (48, 48, 1)
    np.testing.assert_array_equal(np.array(data.EXPRESSIONS)[back.labels],
                                  np.array(["happy", "sad"])[fs.labels])
    grey = cv2.resize(cv2.cvtColor(fs.images[0], cv2.COLOR_RGB2GRAY), (48, 48),
                      interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(back.images[0, ..., 0], grey)
    assert (back.split == "train").all()


def test_fer2013_bad_lines_are_skipped_and_named_in_one_warning(tmp_path):
    path = tmp_path / "bad.csv"
    lines = ["emotion,pixels,Usage\n",
             fer_row(3),                                   # line 2 ok
             fer_row(1, count=2000),                       # line 3 wrong pixel count
             fer_row(2).replace(" 7 ", " x7 ", 1),         # line 4 non-numeric pixel
             fer_row(9),                                   # line 5 label out of range
             "4," + " ".join(["7"] * 2304) + "\n",         # line 6 missing Usage field
             fer_row(0, value=300),                        # line 7 pixel out of range
             fer_row("happy"),                             # line 8 label not an integer
             fer_row(5, usage="Holdout"),                  # line 9 unknown Usage
             fer_row(6, usage="PrivateTest")]              # line 10 ok
    path.write_text("".join(lines))
    with pytest.warns(DataWarning) as record:
        fs = data.load_fer2013(path)
    message = one_warning(record)
    assert len(fs) == 2 and list(fs.labels) == [3, 6] and list(fs.split) == ["train", "test"]
    for line, reason in [(3, "2000 pixel values"), (4, "non-numeric"), (5, "out of range"),
                         (6, "field"), (7, "300"), (8, "not an integer"), (9, "Holdout")]:
        assert f"line {line}: " in message and reason in message.split(f"line {line}: ")[1]
    assert "line 2:" not in message and "line 10:" not in message
    with pytest.raises(DataError, match="line 3"):
        data.load_fer2013(path, strict=True)


def test_fer2013_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.csv"):
        data.load_fer2013(tmp_path / "nowhere.csv")
    (tmp_path / "cols.csv").write_text("label,pixels\n1,2 3\n")
    with pytest.raises(DataError, match="emotion"):
        data.load_fer2013(tmp_path / "cols.csv")
    (tmp_path / "all_bad.csv").write_text("emotion,pixels,Usage\n" + fer_row(1, count=3))
    with pytest.warns(DataWarning), pytest.raises(DataError, match="no usable row"):
        data.load_fer2013(tmp_path / "all_bad.csv")
    (tmp_path / "no_usage.csv").write_text("emotion,pixels\n2," + " ".join(["1"] * 2304) + "\n")
    fs = data.load_fer2013(tmp_path / "no_usage.csv")
    assert fs.split is None and len(fs) == 1


# ---------------------------------------------------------------------------------------------
# Image folders
# ---------------------------------------------------------------------------------------------

def face(size=(60, 50), seed=0):
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


def test_image_folder_reads_every_kind_of_image(tmp_path):
    root = tmp_path / "faces"
    for name in ("sad", "happy", "angry"):
        (root / name).mkdir(parents=True)
    cv2.imwrite(str(root / "happy" / "rgb.jpg"), face())
    cv2.imwrite(str(root / "happy" / "grey.bmp"), face()[..., 0])
    grey16 = (np.arange(40 * 40, dtype=np.uint16).reshape(40, 40) * 40)
    cv2.imwrite(str(root / "sad" / "deep.png"), grey16)
    rgba = np.dstack([face((30, 30)), np.full((30, 30), 255, np.uint8)])
    rgba[:5, :5, 3] = 0  # transparent corner: composited over white
    cv2.imwrite(str(root / "sad" / "alpha.png"), rgba)
    cv2.imwrite(str(root / "angry" / "a.tif"), face((100, 100)))
    cv2.imwrite(str(root / "angry" / "b.webp"), face((48, 48)))
    fs = data.load_image_folder(root, size=32, channels=1)
    assert fs.class_names == ("angry", "happy", "sad")  # FER2013 order, only present classes
    assert fs.images.shape == (6, 32, 32, 1) and fs.images.dtype == np.uint8
    assert list(fs.class_counts()) == [2, 2, 2]
    rgb = data.load_image_folder(root, size=48, channels=3)
    assert rgb.image_shape == (48, 48, 3)
    # 16-bit → 8-bit by scale, not by wrap-around: the ramp stays monotonic and reaches ~high.
    deep = data.read_image(root / "sad" / "deep.png", channels=1)[..., 0]
    assert deep.dtype == np.uint8 and deep.max() > 200
    assert np.all(np.diff(deep[:, 0].astype(int)) >= 0)
    alpha = data.read_image(root / "sad" / "alpha.png", channels=3)
    assert (alpha[:5, :5] == 255).all()


def test_read_image_follows_exif_rotation(tmp_path):
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    Image.fromarray(face((20, 40))).save(tmp_path / "phone.jpg", exif=exif)
    assert data.read_image(tmp_path / "phone.jpg").shape == (40, 20, 3)


def test_image_folder_custom_classes_are_sorted(tmp_path):
    for name in ("zebra", "apple"):
        (tmp_path / name).mkdir()
        cv2.imwrite(str(tmp_path / name / "1.png"), face())
    fs = data.load_image_folder(tmp_path)
    assert fs.class_names == ("apple", "zebra") and list(fs.labels) == [0, 1]


def test_image_folder_bad_files_and_empty_class_are_reported(tmp_path):
    root = tmp_path / "faces"
    for name in ("happy", "sad", "fear"):
        (root / name).mkdir(parents=True)
    cv2.imwrite(str(root / "happy" / "good.jpg"), face())
    ok, jpeg = cv2.imencode(".jpg", face((80, 80), seed=1))
    (root / "happy" / "cut.jpg").write_bytes(jpeg.tobytes()[: len(jpeg) // 2])
    ok, png = cv2.imencode(".png", face((40, 40), seed=2))
    (root / "sad" / "cut.png").write_bytes(png.tobytes()[:-40])
    (root / "sad" / "notes.png").write_text("this is not an image")
    (root / "sad" / "readme.txt").write_text("hello")
    (root / "sad" / "empty.jpg").write_bytes(b"")
    cv2.imwrite(str(root / "sad" / "fine.png"), face(seed=3))
    (root / "loose.png").write_bytes(png.tobytes())
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        fs = data.load_image_folder(root)
    messages = [str(w.message) for w in record if issubclass(w.category, DataWarning)]
    assert len(messages) == 2, messages
    files, empty = messages
    for name in ("cut.jpg", "cut.png", "notes.png", "readme.txt", "empty.jpg", "loose.png"):
        assert name in files
    assert "truncated JPEG" in files and "truncated PNG" in files and "not an image" in files
    assert "good.jpg" not in files and "fine.png" not in files
    assert "fear/" in empty
    assert fs.class_names == ("happy", "sad") and len(fs) == 2
    with pytest.raises(DataError, match="cut.jpg"):
        data.load_image_folder(root, strict=True)


def test_image_folder_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        data.load_image_folder(tmp_path / "missing")
    (tmp_path / "flat.png").write_bytes(b"x")
    with pytest.raises(DataError, match="no class sub-folders"):
        data.load_image_folder(tmp_path)
    (tmp_path / "happy").mkdir()
    (tmp_path / "happy" / "bad.jpg").write_text("nope")
    with pytest.warns(DataWarning), pytest.raises(DataError, match="no usable image"):
        data.load_image_folder(tmp_path)
    with pytest.raises(ValueError, match="channels"):
        data.load_image_folder(tmp_path, channels=2)


def test_csv_loaders_name_a_file_that_is_not_utf8_text(tmp_path):
    binary = tmp_path / "faces.csv"
    binary.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(DataError, match="faces.csv: not a UTF-8 text CSV"):
        data.load_fer2013(binary)
    with pytest.raises(DataError, match="faces.csv: not a UTF-8 text CSV"):
        data.load_au_csv(binary)


def test_image_folder_class_folders_differing_in_case_are_not_silently_merged(tmp_path):
    face = np.full((20, 20), 128, np.uint8)
    for name in ("Happy", "happy"):
        (tmp_path / name).mkdir()
        cv2.imwrite(str(tmp_path / name / "a.png"), face)
    with pytest.raises(DataError, match="Happy/, happy/ differ only in case"):
        data.load_image_folder(tmp_path)


def test_split_of_too_few_faces_names_the_problem():
    fs = random_faceset(1, extras=False)
    with pytest.raises(ValueError, match="1 face.s. are too few"):
        data.split(fs, val=0.1, test=0.1)
    train, val, test = data.split(fs, val=0, test=0)
    assert len(train) == 1 and len(val) == len(test) == 0


def test_image_folder_round_trip(tmp_path):
    fs = random_faceset(21, extras=False)
    data.write_image_folder(fs, tmp_path / "out")
    back = data.load_image_folder(tmp_path / "out", size=48, channels=1)
    assert back.class_names == data.EXPRESSIONS
    order = np.argsort(fs.labels, kind="stable")
    np.testing.assert_array_equal(back.images, fs.images[order])
    np.testing.assert_array_equal(back.labels, fs.labels[order])


# ---------------------------------------------------------------------------------------------
# AU CSV
# ---------------------------------------------------------------------------------------------

def write_au_set(tmp_path, n=4, landmarks=True):
    (tmp_path / "img").mkdir(exist_ok=True)
    header = ["image", "expression", "AU12", "AU6", "AU45"]
    if landmarks:
        header += [f"{a}{k}" for k in range(68) for a in "xy"]
    rows = []
    rng = np.random.default_rng(0)
    for i in range(n):
        cv2.imwrite(str(tmp_path / "img" / f"{i}.png"), face((100, 80), seed=i))
        row = [f"img/{i}.png", ["happy", "sad"][i % 2], "3", "1.5", "0"]
        if landmarks:
            row += [f"{v:.2f}" for v in rng.uniform(10, 70, 136)]
        rows.append(",".join(row))
    return header, rows


def test_au_csv_keeps_file_au_names_and_moves_landmarks(tmp_path):
    header, rows = write_au_set(tmp_path)
    (tmp_path / "aus.csv").write_text(",".join(header) + "\n" + "\n".join(rows) + "\n")
    fs = data.load_au_csv(tmp_path / "aus.csv", size=40)
    assert fs.au_names == ("AU12", "AU6", "AU45") and fs.aus.shape == (4, 3)
    assert fs.class_names == ("happy", "sad") and list(fs.labels) == [0, 1, 0, 1]
    assert fs.image_shape == (40, 40, 1) and fs.landmarks.shape == (4, 68, 2)
    # 100×80 image → centre 80×80 crop (rows 10..90) → 40×40: x' = x/2, y' = (y - 10)/2.
    x0, y0 = (float(v) for v in rows[0].split(",")[5:7])
    np.testing.assert_allclose(fs.landmarks[0, 0], [x0 / 2, (y0 - 10) / 2], atol=1e-4)
    assert list(fs.au_present[0]) == [1, 1, 0]


def test_au_csv_bad_rows_and_errors(tmp_path):
    header, rows = write_au_set(tmp_path, n=2, landmarks=False)
    (tmp_path / "img" / "trunc.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 50)
    bad = ["img/missing.png,happy,1,1,1",       # line 4
           "img/0.png,happy,x,1,1",             # line 5
           "img/0.png,happy,7,1,1",             # line 6
           "img/trunc.jpg,sad,1,1,1",           # line 7
           "img/0.png,bored,1,1,1",             # line 8
           "img/0.png,happy"]                   # line 9
    (tmp_path / "aus.csv").write_text(",".join(header) + "\n" + "\n".join(rows + bad) + "\n")
    with pytest.warns(DataWarning) as record:
        fs = data.load_au_csv(tmp_path / "aus.csv", class_names=("happy", "sad"))
    message = one_warning(record)
    assert len(fs) == 2
    for line, reason in [(4, "not found"), (5, "not a number"), (6, "outside"), (7, "truncated"),
                         (8, "bored"), (9, "field")]:
        assert f"line {line}: " in message and reason in message.split(f"line {line}: ")[1]
    with pytest.raises(DataError, match="line 4"):
        data.load_au_csv(tmp_path / "aus.csv", strict=True)
    (tmp_path / "noimg.csv").write_text("AU1,AU2\n1,2\n")
    with pytest.raises(DataError, match="image-path column"):
        data.load_au_csv(tmp_path / "noimg.csv")
    (tmp_path / "marks.csv").write_text("image,x0,y0\nimg/0.png,1,2\n")
    with pytest.raises(DataError, match="landmark columns are incomplete"):
        data.load_au_csv(tmp_path / "marks.csv")


def test_au_csv_without_labels_or_aus(tmp_path):
    write_au_set(tmp_path, n=2, landmarks=False)
    (tmp_path / "plain.csv").write_text("path\nimg/0.png\nimg/1.png\n")
    fs = data.load_au_csv(tmp_path / "plain.csv")
    assert fs.class_names == ("unlabelled",) and fs.aus is None and len(fs) == 2


# ---------------------------------------------------------------------------------------------
# load_dataset, subsample, split, summary
# ---------------------------------------------------------------------------------------------

def test_load_dataset_dispatches_and_subsamples(tmp_path):
    from fer_utils import config

    fs = random_faceset(210, extras=False, split=True)
    csv_path = data.write_fer2013_csv(fs, tmp_path / "fer.csv")
    settings = config.get_settings({"FER_PROFILE": "ci", "FER_DATA_DIR": str(tmp_path),
                                    "FER_DATASET": f"fer2013:{csv_path}"})
    assert settings.dataset.startswith("fer2013:")
    small = data.load_dataset(settings=settings, profile=config.Profile(
        "tiny", num_images=70, image_size=48, vgg_size=48, epochs=1, finetune_epochs=1,
        batch_size=8, synthetic_size=70))
    assert len(small) == 70 and small.split is not None
    # stratified: every class keeps its share (210 → 70 is one third of each class).
    np.testing.assert_allclose(small.class_counts(), fs.class_counts() / 3, atol=1)
    folder = data.write_image_folder(fs.subset(np.arange(14)), tmp_path / "folder")
    got = data.load_dataset(f"folder:{folder}", profile="ci", settings=settings)
    assert len(got) == 14
    with pytest.raises(config.SettingsError, match="nonsense"):
        data.load_dataset("nonsense:1", settings=settings)


def test_load_dataset_synthetic_uses_the_profile(tmp_path):
    from fer_utils import config

    settings = config.get_settings({"FER_PROFILE": "ci", "FER_DATA_DIR": str(tmp_path),
                                    "FER_DATASET": "synthetic"})
    profile = config.Profile("tiny", num_images=14, image_size=48, vgg_size=48, epochs=1,
                             finetune_epochs=1, batch_size=8, synthetic_size=21)
    fs = data.load_dataset(settings=settings, profile=profile, progress=False)
    assert len(fs) == 14 and fs.image_shape == (48, 48, 1) and list(fs.class_counts()) == [2] * 7
    assert fs.aus is not None and fs.landmarks is not None


def test_stratified_subsample_and_split_keep_proportions():
    fs = random_faceset(counts=[300, 30, 100, 200, 120, 80, 170], extras=False)
    sub = data.stratified_subsample(fs, 500, seed=1)
    assert len(sub) == 500
    np.testing.assert_allclose(sub.class_counts(), fs.class_counts() / 2, atol=1)
    train, val, test = data.split(fs, val=0.1, test=0.2, seed=3)
    assert len(train) + len(val) + len(test) == len(fs)
    np.testing.assert_allclose(val.class_counts(), fs.class_counts() * 0.1, atol=1)
    np.testing.assert_allclose(test.class_counts(), fs.class_counts() * 0.2, atol=1)
    assert set(train.split) == {"train"} and set(test.split) == {"test"}
    again = data.split(fs, val=0.1, test=0.2, seed=3)[1]
    np.testing.assert_array_equal(again.images, val.images)
    with pytest.raises(ValueError, match="val"):
        data.split(fs, val=1.2)


def test_split_keeps_an_existing_split_column():
    fs = random_faceset(200, extras=False, split=True)
    train, val, test = data.split(fs, seed=0)
    assert len(train) == (fs.split == "train").sum() and len(test) == (fs.split == "test").sum()
    only_train_test = FaceSet(images=fs.images, labels=fs.labels,
                              split=np.where(fs.split == "val", "train", fs.split))
    train, val, test = data.split(only_train_test, val=0.1, seed=0)
    assert len(test) == (fs.split == "test").sum() and 0.08 < len(val) / len(fs) < 0.12


def test_summary_and_class_balance():
    fs = random_faceset(70, extras=False, split=True)
    frame = data.summary(fs)
    assert list(frame.index) == list(data.EXPRESSIONS) and frame["total"].sum() == 70
    balance = data.class_balance(fs)
    assert balance["count"].sum() == 70 and balance["ratio_to_largest"].max() == 1


# ---------------------------------------------------------------------------------------------
# Normalisation helpers
# ---------------------------------------------------------------------------------------------

def test_normalisation_helpers():
    images = np.zeros((4, 6, 6, 3), np.uint8)
    images[..., 0], images[..., 1], images[..., 2] = 10, 20, 30
    images[1] += 40
    np.testing.assert_allclose(data.channel_mean(images), [20, 30, 40])
    assert data.mean_image(images).shape == (6, 6, 3)
    assert data.scale_01(images).max() == pytest.approx(70 / 255)
    centred = data.subtract_mean(images, "channel")
    np.testing.assert_allclose(centred.mean(axis=(0, 1, 2)), 0, atol=1e-5)
    vgg = data.subtract_mean(images, "vgg")
    np.testing.assert_allclose(vgg[0, 0, 0], np.array([10, 20, 30]) - data.VGG_MEAN_RGB, atol=1e-4)
    assert data.resize_images(images, 12).shape == (4, 12, 12, 3)
    assert data.resize_images(images[..., 0], (3, 9)).shape == (4, 3, 9)
    with pytest.raises(ValueError, match="mean"):
        data.subtract_mean(images, "median")


# ---------------------------------------------------------------------------------------------
# tf.data
# ---------------------------------------------------------------------------------------------

def test_to_tf_dataset_shapes_dtypes_and_targets():
    import keras
    import tensorflow as tf

    fs = random_faceset(50)
    x, y = next(iter(data.to_tf_dataset(fs, batch_size=8, shuffle=False)))
    assert x.shape == (8, 48, 48, 1) and x.dtype == tf.float32 and y.dtype == tf.int32
    np.testing.assert_allclose(x.numpy(), fs.images[:8] / 255.0, atol=1e-6)
    np.testing.assert_array_equal(y.numpy(), fs.labels[:8])
    x, y = next(iter(data.to_tf_dataset(fs, batch_size=8, shuffle=False, image_size=96,
                                        channels=3, preprocess="vgg", target="onehot")))
    assert x.shape == (8, 96, 96, 3) and y.shape == (8, 7)
    rgb = tf.image.resize(tf.image.grayscale_to_rgb(tf.cast(fs.images[:8], tf.float32)), (96, 96))
    expected = keras.applications.vgg16.preprocess_input(rgb.numpy())
    np.testing.assert_allclose(x.numpy(), expected, atol=1e-3)
    x, y = next(iter(data.to_tf_dataset(fs, batch_size=8, shuffle=False, preprocess=None,
                                        target="aus")))
    assert float(tf.reduce_max(x)) > 200 and y.shape == (8, 12)
    np.testing.assert_array_equal(y.numpy(), fs.au_present[:8])
    x, y = next(iter(data.to_tf_dataset(fs, batch_size=8, target="label+intensity", seed=1)))
    assert set(y) == {"expression", "intensity"} and y["intensity"].dtype == tf.float32
    batches = list(data.to_tf_dataset(fs, batch_size=8, seed=2))
    assert len(batches) == 7 and len(batches[-1][1]) == 2
    seen = np.sort(np.concatenate([b[1].numpy() for b in batches]))
    np.testing.assert_array_equal(seen, np.sort(fs.labels))  # shuffled, every face once
    assert len(list(data.to_tf_dataset(fs, batch_size=8, drop_remainder=True))) == 6
    in_order = [b[1].numpy() for b in data.to_tf_dataset(fs, batch_size=3, shuffle=False)]
    np.testing.assert_array_equal(np.concatenate(in_order), fs.labels)  # lines up for predict()
    with pytest.raises(ValueError, match="target"):
        data.to_tf_dataset(fs, target="bogus")
    with pytest.raises(ValueError, match="aus"):
        data.to_tf_dataset(random_faceset(10, extras=False), target="aus")


def test_to_tf_dataset_balanced_batches_are_even():
    fs = random_faceset(counts=[200, 4, 20, 60, 30, 10, 40], extras=False)
    ds = data.to_tf_dataset(fs, batch_size=14, balanced=True, seed=0)
    for _, y in ds.take(20):
        assert list(np.bincount(y.numpy(), minlength=7)) == [2] * 7


def test_to_tf_dataset_augment_and_attention():
    pytest.importorskip("fer_utils.augment")
    fs = random_faceset(16)
    x, y = next(iter(data.to_tf_dataset(fs, batch_size=8, augment=True, attention=True,
                                        image_size=64, channels=3, seed=0)))
    assert set(x) == {"image", "attention", "centers"}
    assert x["image"].shape == (8, 64, 64, 3) and x["attention"].shape == (8, 64, 64, 1)
    assert x["centers"].shape == (8, 20, 2)
    centers = x["centers"].numpy()
    assert centers.min() >= 0 and centers.max() <= 1
    maps = x["attention"].numpy()
    assert maps.max() <= 1 and maps.min() >= 0 and maps.max() > 0.5


def test_read_image_errors_name_the_file(tmp_path):
    (tmp_path / "fake.png").write_text("text")
    with pytest.raises(DataError, match="fake.png.*not an image"):
        data.read_image(tmp_path / "fake.png")
    with pytest.raises(FileNotFoundError, match="gone.png"):
        data.read_image(tmp_path / "gone.png")
