"""`predict` reads photos through the loaders' reader, says when there is no face, draws bars."""

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data

import fer_utils as fu

ROOT = Path(__file__).resolve().parents[1]
ASTRONAUT_FACE = (175, 76, 91, 91)  # dlib's HOG box of the astronaut's face (x, y, w, h)


def run_cli(args, workdir: Path, timeout: int = 300):
    env = dict(os.environ, FER_PROFILE="ci", FER_DATASET="synthetic", TF_CPP_MIN_LOG_LEVEL="2",
               FER_DATA_DIR=str(workdir / "data"), FER_LOG_DIR=str(workdir / "logs"),
               MPLBACKEND="Agg",
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH"))
                                          if p))
    return subprocess.run([sys.executable, "-m", "fer_utils", *map(str, args)], cwd=workdir,
                          env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("predict")


@pytest.fixture(scope="module")
def model_dir(workdir):
    """A tiny untrained 48×48 grey classifier saved with its meta.json (no training needed)."""
    import keras

    inputs = keras.Input((48, 48, 1))
    x = fu.models.Preprocess("scale")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(x))
    model = keras.Model(inputs, keras.layers.Dense(7, activation="softmax")(x))
    out = workdir / "model"
    out.mkdir()
    model.save(out / "model.keras")
    faces = fu.data.FaceSet(images=np.zeros((7, 48, 48, 1), np.uint8), labels=np.arange(7))
    fu.inference.save_meta(fu.inference.make_meta(faces, 48, 1), out / "meta.json")
    return out


@pytest.fixture(scope="module")
def photos(workdir):
    """The astronaut as JPEG and PNG, cut-short copies of both, a text file, a plain picture."""
    bgr = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)
    files = {"jpg": workdir / "astronaut.jpg", "png": workdir / "astronaut.png"}
    for kind, path in list(files.items()):
        cv2.imwrite(str(path), bgr)
        data = path.read_bytes()
        files[f"cut_{kind}"] = workdir / f"cut.{kind}"
        files[f"cut_{kind}"].write_bytes(data[: len(data) * 2 // 3])
    files["text"] = workdir / "notes.jpg"
    files["text"].write_text("this is not a picture\n")
    files["blank"] = workdir / "wall.png"
    cv2.imwrite(str(files["blank"]), np.full((120, 160, 3), 128, np.uint8))
    return files


def one_error_line(result) -> str:
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines  # no OpenCV warning, no traceback
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.mark.parametrize("kind, reason", [("cut_jpg", "truncated JPEG"),
                                          ("cut_png", "truncated PNG"),
                                          ("text", "not an image")])
def test_a_bad_photo_is_one_line_naming_it(kind, reason, photos, model_dir, workdir):
    line = one_error_line(run_cli(["predict", photos[kind], "--model", model_dir,
                                   "--out", workdir / "bad"], workdir))
    assert photos[kind].name in line and reason in line, line


def test_opencv_alone_would_warn_on_the_cut_jpeg(photos):
    """Why the reader matters: OpenCV decodes a cut JPEG with a warning and grey filler."""
    script = f"import cv2; print(cv2.imread({str(photos['cut_jpg'])!r}) is not None)"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60)
    assert "True" in result.stdout  # decoded although a third is missing
    assert result.stderr.strip()  # ... with a libjpeg warning line on stderr


def test_several_bad_photos_get_one_line_each(photos, model_dir, workdir):
    result = run_cli(["predict", photos["cut_jpg"], photos["png"], photos["text"], "--model",
                      model_dir, "--out", workdir / "bad2"], workdir)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 2 and "cut.jpg" in lines[0] and "notes.jpg" in lines[1], lines
    assert not (workdir / "bad2" / "astronaut.json").exists()  # nothing predicted


def test_predict_draws_bars_and_says_when_there_is_no_face(photos, model_dir, workdir):
    out = workdir / "pred"
    result = run_cli(["predict", photos["jpg"], photos["blank"], "--model", model_dir,
                      "--out", out], workdir)
    assert result.returncode == 0, result.stderr
    record = json.loads((out / "astronaut.json").read_text())
    assert record["detector"] == "hog"
    assert np.allclose(record["faces"][0]["box"], ASTRONAUT_FACE, atol=20)
    empty = json.loads((out / "wall.json").read_text())
    assert empty["faces"] == [] and "no face found" in empty["note"]
    lines = result.stdout.splitlines()
    assert any("wall.png: no face found" in line for line in lines), lines
    # The bars: a white panel right of the face box holding one bar row per class.
    picture = cv2.imread(str(out / "astronaut_annotated.png"))
    photo = cv2.imread(str(photos["jpg"]))
    assert picture.shape == photo.shape
    x, y, w, h = record["faces"][0]["box"]
    panel = picture[y:y + 120, x + w + 4:x + w + 150]
    assert (panel == 255).all(axis=-1).mean() > 0.3  # mostly white background
    changed = np.any(picture != photo, axis=-1)
    assert changed[y:y + h, x + w + 4:].mean() > 0.5


def test_probability_panel_bar_lengths_follow_the_probabilities():
    probs = {"a": 0.0, "b": 0.25, "c": 1.0}
    panel = fu.inference.probability_panel(probs, colour=(255, 0, 0), font_scale=0.5)
    panel = panel[:, 1:-1]  # without the frame
    rows = np.array_split(np.arange(panel.shape[0] - 8) + 4, 3)
    red = (panel[..., 0] == 255) & (panel[..., 1] == 0) & (panel[..., 2] == 0)
    grey = np.all(panel == 150, axis=-1)
    lengths = [(red | grey)[r].sum(axis=1).max() for r in rows]
    assert lengths[0] == 0 and lengths[2] > 3 * lengths[1] > 0, lengths
    assert red[rows[2]].any() and not red[rows[1]].any()  # the top class is drawn in colour


def test_cnn_detector_finds_the_astronaut():
    faces = fu.attention.detect_faces(skimage.data.astronaut(), detector="cnn")
    assert len(faces) == 1  # the HOG detector also reports the mission patch
    assert np.allclose(faces[0][:4], ASTRONAUT_FACE, atol=15), faces
    with pytest.raises(ValueError, match="'haar'"):
        fu.attention.detect_faces(skimage.data.astronaut(), detector="haar")


def test_predict_with_the_cnn_detector(photos, model_dir, workdir):
    out = workdir / "cnn"
    result = run_cli(["predict", photos["png"], "--model", model_dir, "--out", out,
                      "--detector", "cnn"], workdir)
    assert result.returncode == 0, result.stderr
    record = json.loads((out / "astronaut.json").read_text())
    assert record["detector"] == "cnn" and len(record["faces"]) == 1
