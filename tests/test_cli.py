"""`python -m fer_utils` end to end, in subprocesses: train, predict, export, data, bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXPRESSIONS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
# dlib's HOG box of the astronaut's face in skimage.data.astronaut() (x, y, w, h).
ASTRONAUT_FACE = (175, 76, 91, 91)


def run_cli(args, workdir: Path, timeout: int = 600, **env_overrides):
    """Run `python -m fer_utils ARGS` in `workdir` with ci settings pointing into it."""
    env = dict(os.environ)
    env.update(FER_PROFILE="ci", FER_DATASET="synthetic", FER_WEIGHTS="none",
               FER_DATA_DIR=str(workdir / "data"), FER_LOG_DIR=str(workdir / "logs"),
               TF_CPP_MIN_LOG_LEVEL="2", MPLBACKEND="Agg", KERAS_HOME=str(workdir / "keras"),
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p))
    env.update(env_overrides)
    return subprocess.run([sys.executable, "-m", "fer_utils", *map(str, args)], cwd=workdir,
                          env=env, capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(result, *needles, status=1):
    """Non-zero exit, a single `error:` line naming every needle, and no traceback."""
    assert result.returncode == status, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert "error:" in lines[0]
    for needle in needles:
        assert str(needle) in lines[0], (needle, lines[0])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def trained(workdir):
    """One small CNN trained for one epoch in the ci profile (shared by the tests below)."""
    out = workdir / "run"
    # --tta on: the saved model averages each face with its mirror image, so predict and
    # export below run the flip layer too
    result = run_cli(["train", "--out", out, "--epochs", "1", "--tta", "on"], workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


@pytest.fixture(scope="module")
def pictures(workdir):
    """The astronaut photo, a picture without a face, a text file named .jpg."""
    import cv2
    import skimage.data

    astronaut = workdir / "astronaut.png"
    cv2.imwrite(str(astronaut), cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR))
    blank = workdir / "blank.png"
    cv2.imwrite(str(blank), np.full((120, 160, 3), 128, np.uint8))
    fake = workdir / "notes.jpg"
    fake.write_text("this is not a picture\n")
    return {"astronaut": astronaut, "blank": blank, "fake": fake}


def test_train_writes_model_meta_and_tensorboard_logs(trained):
    out, result = trained
    assert (out / "model.keras").is_file()
    meta = json.loads((out / "meta.json").read_text())
    assert meta["class_names"] == EXPRESSIONS
    assert meta["input_size"] == [48, 48] and meta["channels"] == 1
    assert meta["preprocess"] == "scale" and meta["model"] == "small"
    # The built-in set has landmarks: the crop convention is its measured landmark template.
    assert meta["crop"]["method"] == "landmarks"
    template = np.array(meta["crop"]["template"])
    assert template.shape == (68, 2) and 0 < template.min() and template.max() < 1
    assert template[36:42, 1].mean() < template[48:68, 1].mean()  # eyes above the mouth
    assert meta["epochs"] == 1 and meta["training"]["path"] == "full"
    # the small CNN's recipe augments every batch, so every layer runs every step
    assert "full path: augmentation changes the images" in result.stdout
    assert meta["recipe"]["augment"] == "flip-shift" and meta["recipe"]["schedule"] == "cosine"
    assert meta["recipe"]["batch_size"] == 32  # the ci profile's own batch
    assert meta["flip_tta"] == {"mode": "on", "used": True}
    # the schedule: 1 epoch of 15 steps planned from the start (--epochs), none resumed
    assert meta["schedule"]["epochs"] == 1 and meta["schedule"]["steps"] == 15
    assert meta["schedule"]["steps_done"] == 15 and meta["resumed"] == []
    assert "bf16" in meta["cpu"] and not (out / "backup").exists()
    assert meta["split_faces"] == {"train": 479, "val": 61, "test": 60}  # the ci profile: 600
    # What the model predicts on the test faces: spread, recall, confusion matrix.
    report = meta["test_report"]
    cm = np.array(report["confusion_matrix"])
    assert cm.shape == (7, 7) and cm.sum() == meta["test_faces"] == report["faces"]
    assert meta["test_accuracy"] == pytest.approx(np.trace(cm) / cm.sum(), abs=1e-4)
    assert list(report["prediction_share"]) == EXPRESSIONS
    assert [report["prediction_share"][n] for n in EXPRESSIONS] == pytest.approx(
        list(cm.sum(axis=0) / cm.sum()))
    assert [report["recall"][n] for n in EXPRESSIONS] == pytest.approx(
        list(np.diag(cm) / cm.sum(axis=1)))
    assert report["collapsed"] == (max(report["prediction_share"].values()) > 0.9)
    assert list(out.rglob("events.out.tfevents*")), "no TensorBoard logs under --out"
    assert f"test: accuracy {meta['test_accuracy']:.4f}" in result.stdout
    assert "recall per class: angry" in result.stdout and "Traceback" not in result.stderr
    assert f"minutes in all" in result.stdout and "peak memory" in result.stdout
    assert "mini-Xception" not in result.stdout  # the reference belongs to FER2013 only


def test_predict_astronaut_and_a_picture_without_faces(trained, pictures, workdir):
    out, _ = trained
    pred = workdir / "pred"
    result = run_cli(["predict", pictures["astronaut"], pictures["blank"], "--model", out,
                      "--out", pred, "--save-crops"], workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((pred / "astronaut.json").read_text())
    assert record["image"].endswith("astronaut.png")
    assert len(record["faces"]) >= 1
    face = record["faces"][0]
    assert np.allclose(face["box"], ASTRONAUT_FACE, atol=20), face["box"]
    probs = face["probabilities"]
    assert list(probs) == EXPRESSIONS
    assert face["label"] == max(probs, key=probs.get)
    # The probabilities are the saved model's on the saved crop (what the model saw).
    import cv2
    import keras

    from fer_utils.models import layers  # noqa: F401 (registers HorizontalFlip for loading)

    crop = cv2.imread(str(pred / "astronaut_face0.png"), cv2.IMREAD_UNCHANGED)
    assert crop.shape[:2] == (48, 48)
    model = keras.models.load_model(out / "model.keras")
    x = crop[None, :, :, None].astype("float32")  # raw pixels: the model scales them itself
    expected = model.predict(x, verbose=0)[0]
    np.testing.assert_allclose([probs[n] for n in EXPRESSIONS], expected, atol=1e-4)
    # the saved model is the flip average: the mirrored crop gets the same answer
    np.testing.assert_allclose(model.predict(x[:, :, ::-1], verbose=0)[0], expected, atol=1e-5)
    inner = model.get_layer("small_cnn")
    np.testing.assert_allclose(expected, (inner.predict(x, verbose=0)[0]
                                          + inner.predict(x[:, :, ::-1], verbose=0)[0]) / 2,
                               atol=1e-5)
    scores = [f["score"] for f in record["faces"]]
    assert scores == sorted(scores, reverse=True)

    annotated = cv2.imread(str(pred / "astronaut_annotated.png"))
    original = cv2.imread(str(pictures["astronaut"]))
    assert annotated.shape == original.shape
    assert np.any(annotated != original)  # boxes and labels were drawn

    empty = json.loads((pred / "blank.json").read_text())
    assert empty["faces"] == [] and "no face" in empty["note"]
    assert (pred / "blank_annotated.png").is_file()


def test_export_tflite_agrees_with_keras(trained, workdir):
    out, _ = trained
    result = run_cli(["export", "--model", out, "--out", workdir / "exported", "--faces", "16"],
                     workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("model.keras", "model.tflite", "meta.json", "model_savedmodel/saved_model.pb"):
        assert (workdir / "exported" / name).is_file(), name
    assert "same label for 100.0%" in result.stdout, result.stdout


def test_data_counts_grid_and_fer2013_round_trip(workdir):
    csv = workdir / "synth.csv"
    result = run_cli(["data", "synthetic", "--out", workdir / "report", "--convert", "fer2013",
                      "--to", csv], workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (workdir / "report" / "samples.png").stat().st_size > 1000
    import pandas as pd

    counts = pd.read_csv(workdir / "report" / "counts.csv", index_col=0)
    assert list(counts.index) == EXPRESSIONS
    assert {"train", "val", "test"} <= set(counts.columns)
    assert counts[["train", "val", "test"]].to_numpy().sum() == 600  # the ci profile's size
    rows = pd.read_csv(csv)
    assert list(rows.columns) == ["emotion", "pixels", "Usage"] and len(rows) == 600
    back = run_cli(["data", f"fer2013:{csv}", "--out", workdir / "report2"], workdir)
    assert back.returncode == 0, back.stderr[-3000:]
    again = pd.read_csv(workdir / "report2" / "counts.csv", index_col=0)
    assert again.loc[:, ["train", "val", "test"]].equals(counts.loc[:, ["train", "val", "test"]])


@pytest.fixture(scope="module")
def vgg_notop(workdir):
    """A Keras VGG16 notop .h5 file (random numbers): 'pretrained' weights for FER_WEIGHTS."""
    import keras
    from vgg_weights import write_keras_notop_h5

    from fer_utils.models import vgg

    keras.utils.set_random_seed(0)
    return write_keras_notop_h5(workdir / "vgg16_notop.h5",
                                vgg.vgg16_base((32, 32, 3), weights=None))


def test_train_vgg16_with_pretrained_weights_runs_the_cached_path(vgg_notop, pictures, workdir):
    out = workdir / "vgg-cached"
    result = run_cli(["train", "--model", "vgg16", "--size", "32", "--epochs", "1",
                      "--precision", "fp32", "--tta", "off", "--out", out], workdir,
                     FER_WEIGHTS=str(vgg_notop))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "VGG16 weights: file:vgg16_notop.h5; 10 conv layers frozen" in result.stdout
    assert "cached path: the layers up to block4_pool are frozen" in result.stdout
    meta = json.loads((out / "meta.json").read_text())
    assert meta["training"]["path"] == "cached" and meta["preprocess"] == "vgg"
    assert meta["input_size"] == [32, 32] and meta["channels"] == 3
    import keras

    for name in ("model.keras", "best.keras"):  # both hold the image-to-label model
        model = keras.models.load_model(out / name)
        assert model.input_shape == (None, 32, 32, 3) and model.output_shape == (None, 7)
        assert not model.get_layer("block4_conv3").trainable
        assert model.get_layer("block5_conv1").trainable
    pred = workdir / "pred-vgg"
    result = run_cli(["predict", pictures["astronaut"], "--model", out, "--out", pred],
                     workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    face = json.loads((pred / "astronaut.json").read_text())["faces"][0]
    assert np.allclose(face["box"], ASTRONAUT_FACE, atol=20)
    assert face["label"] == max(face["probabilities"], key=face["probabilities"].get)


def test_vgg_checkpoint_and_tflite_export_predict_without_meta_json(vgg_notop, workdir):
    """Preprocessing is inside the saved models: a lone best.keras or model.tflite predicts
    exactly what the run folder (with meta.json) predicts on the same crops."""
    import shutil

    from fer_utils import data, export, inference

    out = workdir / "vgg-cached"  # trained by the test above
    exported = workdir / "vgg-export"
    result = run_cli(["export", "--model", out, "--out", exported, "--faces", "8"], workdir,
                     FER_WEIGHTS=str(vgg_notop))
    assert result.returncode == 0, result.stderr[-3000:]
    alone = workdir / "alone"
    alone.mkdir()
    shutil.copy(out / "best.keras", alone / "best.keras")
    shutil.copy(exported / "model.tflite", alone / "model.tflite")
    faces = data.load_dataset("synthetic", limit=12, progress=False)
    model, meta = inference.load_model(out)
    expected = inference.predict_faces(model, faces.images, meta)
    best, best_meta = inference.load_any_model(alone / "best.keras")
    assert "no meta.json" in best_meta["note"] and best_meta["preprocess"] == "vgg"
    checkpoint, _ = inference.load_model(out / "best.keras")
    np.testing.assert_allclose(inference.predict_faces(best, faces.images, best_meta),
                               inference.predict_faces(checkpoint, faces.images, meta),
                               atol=1e-5)
    tflite, tflite_meta = inference.load_any_model(alone / "model.tflite")
    assert isinstance(tflite, export.TFLiteModel) and tflite_meta["input_size"] == [32, 32]
    np.testing.assert_allclose(inference.predict_faces(tflite, faces.images, tflite_meta),
                               expected, atol=1e-4)


@pytest.fixture(scope="module")
def blank_faces_csv(workdir):
    """A FER2013 CSV whose 70 faces are all the same grey picture: any model collapses."""
    pixels = " ".join(["128"] * 48 * 48)
    usage = ["Training"] * 50 + ["PublicTest"] * 10 + ["PrivateTest"] * 10
    rows = [f"{i % 7},{pixels},{u}" for i, u in enumerate(usage)]
    path = workdir / "blank_faces.csv"
    path.write_text("emotion,pixels,Usage\n" + "\n".join(rows) + "\n")
    return path


def test_train_vgg16_without_weights_trains_everything_and_reports_collapse(blank_faces_csv,
                                                                            workdir):
    out = workdir / "vgg-none"
    result = run_cli(["train", "--model", "vgg16", "--size", "32", "--epochs", "1",
                      "--batch-size", "16", "--out", out], workdir,
                     FER_WEIGHTS="none", FER_DATASET=f"fer2013:{blank_faces_csv}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "VGG16 weights: random (weights=none); nothing frozen: every layer trains" \
        in result.stdout
    assert "full path: nothing is frozen (block1_conv1 trains)" in result.stdout
    assert "warning: collapse on the test set: 100% of the 10 faces are predicted" \
        in result.stderr
    meta = json.loads((out / "meta.json").read_text())
    assert meta["test_report"]["collapsed"] and meta["test_report"]["dominant_share"] == 1.0
    assert meta["val_report"]["collapsed"]
    import keras

    model = keras.models.load_model(out / "model.keras")
    assert all(layer.trainable for layer in model.layers if layer.weights)


def _write_split_folder(root: Path, per_class: dict, seed: int = 0) -> Path:
    """FER2013's folder layout with random 48 px grey PNGs: {split: faces per class}."""
    import cv2

    rng = np.random.default_rng(seed)
    for split, count in per_class.items():
        for name in EXPRESSIONS:
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                cv2.imwrite(str(folder / f"{i}.png"), rng.integers(0, 256, (48, 48), np.uint8))
    return root


def test_train_reads_a_real_sets_whole_split_in_the_laptop_profile(tmp_path, monkeypatch,
                                                                   capsys):
    """The laptop profile caps its faces (4,000; 40 here), but a real set is read whole."""
    import dataclasses
    import resource

    from fer_utils import config
    from fer_utils import data
    from fer_utils.__main__ import main
    from fer_utils.train import SMALL_TRAINING
    from fer_utils.models import layers  # noqa: F401 (registers HorizontalFlip for loading)

    faces = _write_split_folder(tmp_path / "faces", {"train": 10, "validation": 3, "test": 3})
    laptop = dataclasses.replace(config.PROFILE_TABLE["laptop"], num_images=40)
    monkeypatch.setitem(config.PROFILE_TABLE, "laptop", laptop)
    for key, value in dict(FER_PROFILE="laptop", FER_DATASET=f"folder:{faces}",
                           FER_LOG_DIR=str(tmp_path / "logs"),
                           FER_DATA_DIR=str(tmp_path / "data")).items():
        monkeypatch.setenv(key, value)
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--epochs", "1", "--minutes", "10"]) == 0
    stdout = capsys.readouterr().out
    assert "split: 70 train / 21 val / 21 test faces" in stdout and "(the whole set)" in stdout
    meta = json.loads((out / "meta.json").read_text())
    assert meta["split_faces"] == {"train": 70, "val": 21, "test": 21}
    assert meta["recipe"] == {"batch_size": 128, "learning_rate": 0.002, "schedule": "cosine",
                              "augment": "flip-shift",
                              "class_weights": SMALL_TRAINING["class_weights"],
                              "filters": [32, 64, 128, 256], "width_reason": "full width"}
    # the closing output: accuracy, macro-F1, recall per class, the confusion matrix table
    report = meta["test_report"]
    recall = ", ".join(f"{n} {report['recall'][n]:.2f}" for n in EXPRESSIONS)
    assert f"macro-F1 {report['macro_f1']:.4f} on 21 faces; recall per class: {recall}" \
        in stdout
    table = stdout.split("test confusion matrix (rows: true class, columns: predicted):\n")[1]
    rows = table.splitlines()[1:8]
    assert [row.split()[0] for row in rows] == EXPRESSIONS
    assert [[int(v) for v in row.split()[1:]] for row in rows] == report["confusion_matrix"]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert 0 < meta["peak_memory_mb"] <= peak + 0.1  # meta.json rounds to 0.1 MB
    assert f"peak memory {meta['peak_memory_mb']:,.0f} MB" in stdout
    # test-time flips chosen on the validation split, both figures recorded and printed
    tta = meta["flip_tta"]
    assert tta["mode"] == "auto" and set(tta["val_accuracy"]) == {"plain", "flips"}
    assert tta["used"] == (tta["val_accuracy"]["flips"] > tta["val_accuracy"]["plain"])
    assert (f"accuracy {tta['val_accuracy']['plain']:.4f} without, "
            f"{tta['val_accuracy']['flips']:.4f} with") in stdout
    import keras

    model = keras.models.load_model(out / "model.keras")
    assert ("mirror" in [layer.name for layer in model.layers]) == tta["used"]
    # The flip decision and the validation report are the SAVED model's own figures.
    val = data.split(data.load_dataset(f"folder:{faces}", limit=None), seed=1234)[1]
    x = val.images.astype("float32")
    saved_accuracy = float(np.mean(model.predict(x, verbose=0).argmax(1) == val.labels))
    chosen = tta["val_accuracy"]["flips" if tta["used"] else "plain"]
    assert saved_accuracy == pytest.approx(chosen, abs=1e-4)
    assert meta["val_report"]["accuracy"] == pytest.approx(saved_accuracy, abs=1e-4)


def test_train_options_follow_the_profile_and_the_set(tmp_path):
    from fer_utils import config
    from fer_utils.train import Recipe, plan_run

    def plan(profile, dataset, **options):
        settings = config.get_settings({"FER_PROFILE": profile, "FER_DATASET": dataset,
                                        "FER_LOG_DIR": str(tmp_path),
                                        "FER_DATA_DIR": str(tmp_path)})
        return plan_run(Recipe(**options), settings)

    real = f"folder:{tmp_path}"
    laptop = plan("laptop", real)
    assert laptop.limit is None and laptop.epochs is None  # the budget plans the epochs
    assert laptop.batch_size == 128 and laptop.schedule == "cosine"
    assert plan("laptop", real, epochs=3).epochs == 3
    assert plan("full", real).epochs is None
    synthetic = plan("laptop", "synthetic")  # the built-in set keeps the profile's size
    assert synthetic.limit == "profile" and synthetic.epochs == 12
    ci = plan("ci", real)  # the ci profile stays tiny
    assert ci.limit == "profile" and ci.epochs == 2 and ci.batch_size == 32
    vgg = plan("laptop", real, model="vgg16")
    assert vgg.limit == "profile" and vgg.augment == "none" and vgg.schedule == "constant"
    assert vgg.class_weights == "balanced" and vgg.channels == 3
    assert plan("laptop", real, augment="full").augment == "full"
    assert plan("laptop", real, class_weights="sqrt").class_weights == "sqrt"
    assert plan("laptop", real, precision="bfloat16").precision == "bf16"
    for options, message in ((dict(model="resnet"), "model must be one of small, vgg16"),
                             (dict(augment="mixup"), "augment must be one of"),
                             (dict(model="vgg16", size=24), "size 24 is too small for VGG16"),
                             (dict(precision="fp8"), "precision must be one of"),
                             (dict(width=1.5), r"width must be in \(0, 1\]")):
        with pytest.raises(ValueError, match=message):
            plan("laptop", real, **options)


def test_the_small_cnn_is_narrower_where_fp32_fills_the_budget(tmp_path, monkeypatch):
    from fer_utils import config, cpu
    from fer_utils.train import Recipe, plan_run

    def plan(profile="laptop", dataset=f"folder:{tmp_path}", **options):
        settings = config.get_settings({"FER_PROFILE": profile, "FER_DATASET": dataset,
                                        "FER_LOG_DIR": str(tmp_path),
                                        "FER_DATA_DIR": str(tmp_path)})
        return plan_run(Recipe(**options), settings)

    full, narrow = (32, 64, 128, 256), (24, 48, 96, 192)
    monkeypatch.setattr(cpu, "cpu_supports_bf16", lambda *a, **k: False)  # an AVX2 laptop
    assert plan().filters == narrow and "no bfloat16" in plan().width_reason
    assert plan(precision="fp32").filters == narrow
    assert plan(precision="bf16").filters == full  # asked for bf16: the measured recipe
    assert plan(epochs=5).filters == full  # fixed epochs: no budget to fill
    assert plan(dataset="synthetic").filters == full
    assert plan(width=0.5).filters == (16, 32, 64, 128)
    assert plan(width=1.0).filters == full
    monkeypatch.setattr(cpu, "cpu_supports_bf16", lambda *a, **k: True)  # AVX512-BF16
    assert plan().filters == full and plan(precision="fp32").filters == narrow
    assert plan(model="vgg16").filters is None


def test_no_class_weights_contradicting_class_weights_is_one_line_error(workdir):
    result = run_cli(["train", "--no-class-weights", "--class-weights", "sqrt"], workdir)
    assert_one_line_error(result, "--no-class-weights contradicts --class-weights sqrt")


def test_missing_picture_is_one_line_error(trained, workdir):
    result = run_cli(["predict", "missing.jpg", "--model", trained[0]], workdir)
    assert_one_line_error(result, "missing.jpg")


def test_text_file_named_jpg_is_one_line_error(trained, pictures, workdir):
    result = run_cli(["predict", pictures["fake"], "--model", trained[0]], workdir)
    assert_one_line_error(result, "notes.jpg", "not an image")


def test_missing_model_is_one_line_error(pictures, workdir):
    result = run_cli(["predict", pictures["astronaut"], "--model", "nowhere/model.keras"],
                     workdir)
    assert_one_line_error(result, "nowhere/model.keras")


def test_bad_profile_is_one_line_error(workdir):
    result = run_cli(["train", "--out", workdir / "never"], workdir, FER_PROFILE="huge")
    assert_one_line_error(result, "FER_PROFILE", "huge", "ci, laptop, full")
    assert not (workdir / "never" / "model.keras").exists()


def test_bad_data_spec_and_bad_option_values(workdir):
    assert_one_line_error(run_cli(["data", "imagenet"], workdir), "SPEC", "imagenet")
    assert_one_line_error(run_cli(["data", "folder:/no/such/folder"], workdir),
                          "/no/such/folder")
    assert_one_line_error(run_cli(["train", "--epochs", "zero"], workdir), "--epochs", "'zero'",
                          status=2)
    # Without SPEC, `data` reads the FER_DATASET setting.
    assert_one_line_error(run_cli(["data"], workdir, FER_DATASET="folder:/no/such/set"),
                          "/no/such/set")


def test_fetch_weights_fails_fast_without_network(workdir):
    # An empty Keras cache (KERAS_HOME in workdir) and a tiny timeout: the download cannot
    # finish, whether or not this machine is online.
    result = run_cli(["fetch-weights", "--timeout", "0.001"], workdir, timeout=60)
    assert_one_line_error(result, "VGG16")


def test_output_names_are_unique_even_when_an_input_looks_renamed():
    from fer_utils.cli.predict import _output_names

    names = _output_names([Path("a.jpg"), Path("b/a.png"), Path("a_2.jpg"), Path(".png")],
                          Path("out"))
    assert names == ["a", "a_2", "a_2_2", ".png"]


def test_help_lists_every_command():
    result = subprocess.run([sys.executable, "-m", "fer_utils", "--help"], capture_output=True,
                            text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0
    for command in ("train", "predict", "export", "data", "bench", "fetch-weights"):
        assert command in result.stdout
    train_help = subprocess.run([sys.executable, "-m", "fer_utils", "train", "--help"],
                                capture_output=True, text=True, cwd=ROOT, timeout=60).stdout
    assert "TF_CONFIG" in train_help and "multiworker" in train_help


def _free_ports(n: int) -> list[int]:
    import socket

    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _run_two_workers(workdir, name: str, *options) -> list:
    """`train --out workdir/NAME{0,1}` on two local workers (worker 0 the chief); their
    (stdout, stderr), each asserted to have exited with 0."""
    env = dict(os.environ)
    env.update(FER_PROFILE="ci", FER_DATASET="synthetic", FER_WEIGHTS="none",
               FER_DATA_DIR=str(workdir / "data"), FER_LOG_DIR=str(workdir / "logs"),
               TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p))
    hosts = [f"localhost:{port}" for port in _free_ports(2)]
    workers = []
    for index in (1, 0):
        env["TF_CONFIG"] = json.dumps({"cluster": {"worker": hosts},
                                       "task": {"type": "worker", "index": index}})
        workers.append(subprocess.Popen(
            [sys.executable, "-m", "fer_utils", "train", "--out", str(workdir / f"{name}{index}"),
             *options], cwd=workdir, env=dict(env), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True))
    outputs = [w.communicate(timeout=600) for w in workers]
    for worker, (stdout, stderr) in zip(workers, outputs):
        assert worker.returncode == 0, stderr[-3000:]
    return outputs


@pytest.mark.slow
def test_multiworker_training_on_two_local_workers(trained, workdir):
    """Two workers (two processes here, two hosts in real use) train one model in sync."""
    outputs = _run_two_workers(workdir, "mw", "--epochs", "1")
    epoch_lines = [[line for line in stdout.splitlines() if line.startswith("epoch 1/1")]
                   for stdout, _ in outputs]
    assert epoch_lines[0] and epoch_lines[0] == epoch_lines[1]  # the same synchronised model
    assert (workdir / "mw0" / "model.keras").is_file()  # the chief writes the results
    assert not (workdir / "mw1" / "model.keras").exists()
    assert list((workdir / "mw1" / "workers").rglob("events.out.tfevents*"))


@pytest.mark.slow
def test_multiworker_training_honours_the_time_budget(trained, workdir):
    """Multi-worker runs keep the recipe: the budget stops every worker at the same step,
    the rate follows the schedule, the chief writes a float32 best checkpoint."""
    outputs = _run_two_workers(workdir, "mwb", "--epochs", "500", "--minutes", "2",
                               "--precision", "bf16")
    meta = json.loads((workdir / "mwb0" / "meta.json").read_text())
    assert meta["minutes"] < 2.0 + 0.5  # the whole command, exit included, near the budget
    schedule = meta["schedule"]
    assert meta["training"]["stopped"].startswith("time budget: stopped after") and \
        schedule["steps_done"] < schedule["steps"]
    epochs = [[line for line in stdout.splitlines() if line.startswith("epoch ")]
              for stdout, _ in outputs]
    assert epochs[0] and epochs[0] == epochs[1]  # the same steps and numbers on both workers
    assert len(epochs[0]) == meta["epochs"] < 500
    assert meta["training"]["precision"] == "bf16"
    import keras

    from fer_utils import models  # noqa: F401 (registers the Preprocess layer for loading)

    best = keras.models.load_model(workdir / "mwb0" / "best.keras")
    assert {layer.dtype_policy.name for layer in best.layers} == {"float32"}

