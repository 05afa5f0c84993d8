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
    np.testing.assert_allclose(x.numpy(), fs.images[:8], atol=1e-6)  # raw pixels by default
    np.testing.assert_array_equal(y.numpy(), fs.labels[:8])
    x, _ = next(iter(data.to_tf_dataset(fs, batch_size=8, shuffle=False, preprocess="scale")))
    np.testing.assert_allclose(x.numpy(), fs.images[:8] / 255.0, atol=1e-6)
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


# ---------------------------------------------------------------------------------------------
# FaceSet: groups, non-finite landmarks
# ---------------------------------------------------------------------------------------------

def test_faceset_groups_are_carried_by_subset_and_shown():
    fs = random_faceset(6, extras=False)
    fs = FaceSet(images=fs.images, labels=fs.labels, groups=[1, 1, 2, 2, 3, 3])
    assert fs.groups.dtype.kind == "U" and list(fs.groups) == ["1", "1", "2", "2", "3", "3"]
    assert list(fs.subset([1, 4]).groups) == ["1", "3"]
    assert "groups (3)" in repr(fs)
    with pytest.raises(ValueError, match="groups must have 6"):
        FaceSet(images=fs.images, labels=fs.labels, groups=["a"])


def test_faceset_rejects_nan_and_infinite_landmarks():
    fs = random_faceset(4)
    marks = fs.landmarks.copy()
    marks[2, 5, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite.*index 2"):
        FaceSet(images=fs.images, labels=fs.labels, landmarks=marks)
    marks[2, 5, 0], marks[3, 0, 1] = 1.0, np.inf
    with pytest.raises(ValueError, match="index 3"):
        FaceSet(images=fs.images, labels=fs.labels, landmarks=marks)


# ---------------------------------------------------------------------------------------------
# Split folders (train/, val/|validation/|PublicTest/, test/|PrivateTest/)
# ---------------------------------------------------------------------------------------------

def write_faces(folder, n, seed=0, size=(30, 30), colour=False, prefix=""):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        image = rng.integers(0, 256, (*size, 3) if colour else size, dtype=np.uint8)
        cv2.imwrite(str(folder / f"{prefix}{i:03d}.png"), image)


@pytest.mark.parametrize("names", [("train", "validation", "test"), ("Train", "VAL", "Test"),
                                   ("Training", "PublicTest", "PrivateTest")])
def test_split_folders_are_recognised_and_kept(tmp_path, names):
    counts = {"train": 5, "val": 2, "test": 3}
    train, val, test = names
    if train == "Training":
        train = "train"  # Kaggle's folder copies name it train/
    for folder, split_name in zip((train, val, test), ("train", "val", "test")):
        for k, cls in enumerate(("happy", "sad", "angry")):
            write_faces(tmp_path / folder / cls, counts[split_name], seed=k)
    fs = data.load_image_folder(tmp_path)
    assert fs.class_names == ("angry", "happy", "sad")  # classes, not "test, train, val"
    assert {s: int((fs.split == s).sum()) for s in ("train", "val", "test")} == \
        {s: 3 * c for s, c in counts.items()}
    assert data.scan_folder(tmp_path).layout == "split"
    described = data.describe_folder(tmp_path)
    assert described.startswith("split folders") and f"{val}/ → val" in described
    train_part, val_part, test_part = data.split(fs)
    assert len(val_part) == 6 and len(test_part) == 9  # the folders' split, not a new one


def test_split_folders_with_different_classes_name_the_difference(tmp_path):
    for split_name, classes in (("train", ("happy", "sad", "fear")), ("test", ("happy", "sad"))):
        for cls in classes:
            write_faces(tmp_path / split_name / cls, 1)
    with pytest.raises(DataError, match=r"test/ lacks fear/"):
        data.load_image_folder(tmp_path)


def test_a_mix_of_split_and_class_folders_is_an_error_naming_both(tmp_path):
    write_faces(tmp_path / "train" / "happy", 1)
    write_faces(tmp_path / "sad", 1)
    with pytest.raises(DataError, match=r"split folders \(train/\) and class folders \(sad/\)"):
        data.load_image_folder(tmp_path)


def test_flat_class_folders_still_work_and_say_so(tmp_path):
    write_faces(tmp_path / "happy", 2)
    write_faces(tmp_path / "sad", 3)
    fs = data.load_image_folder(tmp_path)
    assert fs.split is None and list(fs.class_counts()) == [2, 3]
    assert data.describe_folder(tmp_path).startswith("class folders")


def test_write_image_folder_writes_split_folders_that_load_back(tmp_path):
    fs = random_faceset(42, extras=False, split=True)
    data.write_image_folder(fs, tmp_path / "out", by_split=True)
    assert (tmp_path / "out" / "train" / "happy").is_dir()
    back = data.load_image_folder(tmp_path / "out")
    order = np.lexsort((np.arange(len(fs)), fs.labels))  # label order, then file name order
    np.testing.assert_array_equal(np.sort(back.split), np.sort(fs.split))
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(np.sort(back.labels[back.split == name]),
                                      np.sort(fs.labels[fs.split == name]))
    assert back.images.sum() == fs.images[order].sum()


# ---------------------------------------------------------------------------------------------
# Groups: FER_GROUPS, au-csv subject, group-aware split
# ---------------------------------------------------------------------------------------------

def write_people(root, people=12, frames=6, classes=("happy", "sad", "surprise")):
    """A CK+-like folder: several frames per person (S001_00.png ...) in each class folder."""
    for p in range(people):
        for f in range(frames):
            cls = classes[(p + f) % len(classes)]
            write_faces(root / cls, 1, seed=p * 100 + f, size=(20, 20),
                        prefix=f"S{p:03d}_{f:02d}_")
    return root


def people_on_both_sides(parts):
    sides = [set(part.groups) for part in parts]
    return (sides[0] & sides[1]) | (sides[0] & sides[2]) | (sides[1] & sides[2])


def test_split_with_groups_keeps_every_person_on_one_side(tmp_path):
    root = write_people(tmp_path / "ck")
    fs = data.load_image_folder(root, groups=r"S(\d+)_")
    assert len(fs) == 72 and len(np.unique(fs.groups)) == 12
    parts = data.split(fs, val=0.2, test=0.2, seed=0)
    assert sum(len(p) for p in parts) == 72 and all(len(p) for p in parts)
    assert people_on_both_sides(parts) == set()
    # The same faces split per image do put people on both sides: the test above can fail.
    plain = FaceSet(images=fs.images, labels=fs.labels)
    parts = data.split(plain, val=0.2, test=0.2, seed=0)
    where = {image.tobytes(): i for i, image in enumerate(fs.images)}  # every frame differs
    sides = [{fs.groups[where[image.tobytes()]] for image in part.images} for part in parts]
    assert (sides[0] & sides[1]) or (sides[0] & sides[2])


def test_unmatched_files_are_named_in_a_warning(tmp_path):
    root = write_people(tmp_path / "ck", people=3, frames=2)
    write_faces(root / "happy", 1, prefix="nobody_")
    with pytest.warns(DataWarning, match=r"matches no person id in 1 file.*nobody_000.png"):
        fs = data.load_image_folder(root, groups=r"S(\d+)_")
    assert len(np.unique(fs.groups)) == 4
    with pytest.raises(ValueError, match="no \\(group\\)"):
        data.load_image_folder(root, groups=r"S\d+_")
    with pytest.raises(ValueError, match="not a regular expression"):
        data.load_image_folder(root, groups=r"S(\d+")


def test_load_dataset_takes_groups_from_fer_groups(tmp_path):
    from fer_utils import config

    root = write_people(tmp_path / "ck", people=4, frames=3)
    settings = config.get_settings({"FER_DATASET": f"folder:{root}", "FER_GROUPS": r"S(\d+)_",
                                    "FER_DATA_DIR": str(tmp_path)})
    fs = data.load_dataset(settings=settings, progress=False)
    assert sorted(np.unique(fs.groups)) == ["000", "001", "002", "003"]


def test_au_csv_subject_column_gives_groups(tmp_path):
    header, rows = write_au_set(tmp_path, n=4, landmarks=False)
    header = header + ["subject"]
    rows = [row + f",P{i // 2}" for i, row in enumerate(rows)]
    (tmp_path / "aus.csv").write_text(",".join(header) + "\n" + "\n".join(rows) + "\n")
    fs = data.load_au_csv(tmp_path / "aus.csv")
    assert list(fs.groups) == ["P0", "P0", "P1", "P1"]


def test_own_split_that_puts_a_person_on_both_sides_is_reported(tmp_path):
    fs = random_faceset(6, extras=False)
    fs = FaceSet(images=fs.images, labels=fs.labels, groups=list("aabbcc"),
                 split=["train", "test", "train", "train", "val", "val"], source="x")
    with pytest.warns(DataWarning, match="1 group.*a"):
        data.split(fs)
    assert data.group_report(fs)["crossing"] == ["a"]


# ---------------------------------------------------------------------------------------------
# Duplicates
# ---------------------------------------------------------------------------------------------

def test_exact_duplicates_that_cross_splits_are_found():
    fs = random_faceset(10, extras=False)
    images = fs.images.copy()
    images[3] = images[0]          # train/test duplicate
    images[5] = images[4]          # both in train: not crossing
    images[9] = images[8]
    images[9, 0, 0, 0] ^= 1        # one pixel differs: not a duplicate
    split = ["train", "train", "val", "test", "train", "train", "val", "val", "train", "test"]
    fs = FaceSet(images=images, labels=fs.labels, split=split)
    groups = data.find_duplicates(fs)
    assert sorted(map(list, groups)) == [[0, 3], [4, 5]]
    assert [list(g) for g in data.crossing_duplicates(fs)] == [[0, 3]]
    report = data.duplicate_report(fs)
    assert report["crossing"] == 1 and report["pairs"] == {"train/test": 1}


# ---------------------------------------------------------------------------------------------
# load_dataset: size and channels for the model, limit, memory note
# ---------------------------------------------------------------------------------------------

def tiny_profile(**changes):
    from fer_utils import config

    values = dict(name="tiny", num_images=None, image_size=48, vgg_size=64, epochs=1,
                  finetune_epochs=1, batch_size=8, synthetic_size=14)
    values.update(changes)
    return config.Profile(**values)


def folder_settings(tmp_path, spec):
    from fer_utils import config

    return config.get_settings({"FER_DATASET": spec, "FER_DATA_DIR": str(tmp_path / "d")})


def test_load_dataset_reads_at_the_size_and_channels_the_model_needs(tmp_path):
    write_faces(tmp_path / "colour" / "happy", 3, size=(100, 120), colour=True)
    write_faces(tmp_path / "colour" / "sad", 3, size=(100, 120), colour=True)
    write_faces(tmp_path / "grey" / "happy", 3, size=(100, 100))
    write_faces(tmp_path / "small" / "happy", 3, size=(40, 40), colour=True)
    profile = tiny_profile()
    get = (lambda name, model: data.load_dataset(
        f"folder:{tmp_path / name}", profile=profile, progress=False, for_model=model,
        settings=folder_settings(tmp_path, "synthetic")))
    assert get("colour", "small").image_shape == (48, 48, 1)
    assert get("colour", "vgg").image_shape == (64, 64, 3)  # vgg_size, RGB
    assert get("grey", "vgg").image_shape == (64, 64, 1)  # grey files stay one channel
    assert get("small", "vgg").image_shape == (40, 40, 3)  # never enlarged in memory
    fer = random_faceset(14, extras=False, split=True)
    csv_path = data.write_fer2013_csv(fer, tmp_path / "fer.csv")
    fs = data.load_dataset(f"fer2013:{csv_path}", profile=profile, for_model="vgg",
                           progress=False, settings=folder_settings(tmp_path, "synthetic"))
    assert fs.image_shape == (48, 48, 1)  # FER2013's CSV is 48 px grey whatever the consumer
    with pytest.raises(ValueError, match="for_model='resnet'"):
        data.load_dataset("synthetic", for_model="resnet")


def test_load_dataset_limit(tmp_path):
    for cls in ("happy", "sad"):
        write_faces(tmp_path / "f" / "train" / cls, 10)
        write_faces(tmp_path / "f" / "test" / cls, 4)
    settings = folder_settings(tmp_path, f"folder:{tmp_path / 'f'}")
    get = (lambda **kw: data.load_dataset(settings=settings, progress=False, **kw))
    assert len(get(profile=tiny_profile(num_images=14))) == 14  # "profile": stratified
    part = get(profile=tiny_profile(num_images=14))
    assert (part.split == "test").sum() == 4 and list(part.class_counts()) == [7, 7]
    assert len(get(profile=tiny_profile(num_images=14), limit=None)) == 28
    assert len(get(profile=tiny_profile(num_images=14), limit=7)) == 7
    for bad in (0, "all", 2.5, True):
        with pytest.raises(ValueError, match="limit"):
            get(limit=bad)


def test_load_dataset_states_the_memory_before_reading(tmp_path, capsys, monkeypatch):
    from fer_utils.data import loaders

    monkeypatch.setattr(loaders, "_ANNOUNCE_FROM", 3)
    write_faces(tmp_path / "f" / "happy", 5)
    data.load_dataset(f"folder:{tmp_path / 'f'}", profile=tiny_profile(), progress=True,
                      settings=folder_settings(tmp_path, "synthetic"))
    assert "reading 5 images at 48×48×1: about 0 MB" in capsys.readouterr().out
    from fer_utils.data.reports import memory_note

    assert memory_note(35887, 48, 48, 1) == "reading 35,887 images at 48×48×1: about 83 MB"
    assert memory_note(35887, 224, 224, 3).endswith("about 5.40 GB")


# ---------------------------------------------------------------------------------------------
# fit="face": raw photos cropped exactly as predict crops them
# ---------------------------------------------------------------------------------------------

def test_fit_face_crops_like_predict_and_names_photos_without_a_face(tmp_path):
    import skimage.data

    from fer_utils import faces

    root = tmp_path / "web"
    (root / "happy").mkdir(parents=True)
    (root / "sad").mkdir()
    astronaut = skimage.data.astronaut()
    cv2.imwrite(str(root / "happy" / "astronaut.jpg"), cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(root / "sad" / "wall.jpg"), np.full((200, 300, 3), 90, np.uint8))
    cv2.imwrite(str(root / "sad" / "coffee.jpg"),
                cv2.cvtColor(skimage.data.coffee(), cv2.COLOR_RGB2BGR))
    with pytest.warns(DataWarning, match=r"2 photo\(s\) without a face.*coffee.jpg.*wall.jpg"):
        fs = data.load_image_folder(root, size=64, channels=3, fit="face")
    assert len(fs) == 1 and fs.class_names == ("happy",) and fs.image_shape == (64, 64, 3)
    photo = data.read_image(root / "happy" / "astronaut.jpg")
    crops, boxes = faces.crop_faces(photo, convention=faces.crop_convention(
        method="box", size=64, channels=3), min_score=faces.DEFAULT_MIN_SCORE)
    np.testing.assert_array_equal(fs.images[0], crops[0])  # exactly predict's crop
    assert len(boxes) == 1  # the mission patch (score < 0.5) is not a second face
    with pytest.raises(ValueError, match="fit"):
        data.load_au_csv(tmp_path / "x.csv", fit="face")


def test_au_csv_for_vgg_is_read_in_colour_at_vgg_size(tmp_path):
    header, rows = write_au_set(tmp_path, n=2)  # 100×80 colour pictures with landmarks
    (tmp_path / "aus.csv").write_text(",".join(header) + "\n" + "\n".join(rows) + "\n")
    settings = folder_settings(tmp_path, "synthetic")
    small = data.load_dataset(f"au-csv:{tmp_path / 'aus.csv'}", profile=tiny_profile(),
                              settings=settings, progress=False)
    vgg = data.load_dataset(f"au-csv:{tmp_path / 'aus.csv'}", profile=tiny_profile(),
                            settings=settings, progress=False, for_model="vgg")
    assert small.image_shape == (48, 48, 1) and vgg.image_shape == (64, 64, 3)
    np.testing.assert_allclose(vgg.landmarks, small.landmarks * 64 / 48, atol=1e-3)
