"""Export (.keras, SavedModel, TFLite) and the inference pipeline's cropping, in process."""

import json

import numpy as np
import pytest

import fer_utils as fu


@pytest.fixture(scope="module")
def model():
    """A small CNN whose weights are random but fixed (no training needed to compare exports)."""
    import keras

    keras.utils.set_random_seed(0)
    return fu.models.small_cnn(input_shape=(48, 48, 1), num_classes=7, filters=(8, 16))


@pytest.fixture(scope="module")
def faces():
    """Forty uint8 48×48 grey faces of the built-in renderer, 0-1 scaled for the model."""
    images = np.stack([fu.synth.render_face(expression=fu.data.EXPRESSIONS[i % 7],
                                            identity_seed=i, size=48)[0] for i in range(40)])
    return images


def test_tflite_predicts_like_keras(model, faces, tmp_path):
    path = fu.export.to_tflite(model, tmp_path / "m.tflite")
    assert path.stat().st_size > 1000
    x = faces.astype(np.float32) / 255.0
    check = fu.export.compare_keras_tflite(model, path, x)
    assert check["n"] == 40
    assert check["max_abs_diff"] < 1e-4, check["max_abs_diff"]
    assert check["label_agreement"] == 1.0
    assert np.allclose(check["tflite"].sum(axis=1), 1, atol=1e-5)
    # the batch size is free: one face at a time gives the same numbers
    one = fu.export.tflite_predict(path, x[:1])
    assert np.allclose(one, check["tflite"][:1], atol=1e-6)


def test_quantized_tflite_is_smaller_and_close(model, faces, tmp_path):
    plain = fu.export.to_tflite(model, tmp_path / "plain.tflite")
    small = fu.export.to_tflite(model, tmp_path / "small.tflite", quantize=True)
    assert small.stat().st_size < plain.stat().st_size
    check = fu.export.compare_keras_tflite(model, small, faces.astype(np.float32) / 255.0)
    assert check["max_abs_diff"] < 0.1  # 8-bit weights: close, not identical


def test_save_model_reloads_identically(model, faces, tmp_path):
    import keras
    import tensorflow as tf

    paths = fu.export.save_model(model, tmp_path / "out")
    x = faces[:8].astype(np.float32) / 255.0
    expected = np.asarray(model(x, training=False))
    reloaded = keras.saving.load_model(paths["keras"])
    assert np.allclose(reloaded(x, training=False), expected, atol=1e-6)
    serving = tf.saved_model.load(str(paths["saved_model"]))
    assert np.allclose(serving.serve(tf.constant(x)), expected, atol=1e-5)
    # a SavedModel folder converts to TFLite too
    tfl = fu.export.to_tflite(paths["saved_model"], tmp_path / "from_saved.tflite")
    assert np.allclose(fu.export.tflite_predict(tfl, x), expected, atol=1e-4)


def test_export_errors_name_the_problem(model, tmp_path):
    with pytest.raises(ValueError, match=r"\.tflite"):
        fu.export.to_tflite(model, tmp_path / "m.bin")
    with pytest.raises(FileNotFoundError, match="nothing.keras"):
        fu.export.to_tflite(tmp_path / "nothing.keras", tmp_path / "m.tflite")
    path = fu.export.to_tflite(model, tmp_path / "m.tflite")
    with pytest.raises(ValueError, match=r"\(N, 48, 48, 1\)"):
        fu.export.tflite_predict(path, np.zeros((2, 32, 32, 1), np.float32))
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        fu.export.save_model(model, tmp_path / "file")


def test_landmark_crop_reproduces_the_training_framing():
    """A built-in face rendered big in a photo, cropped by the meta's convention, looks like
    the same face rendered at training size: detection + alignment frame it like training."""
    train = fu.synth.make_dataset(200, seed=3, size=48, channels=1, cache=False, progress=False)
    convention = fu.inference.crop_convention(train)
    assert convention["method"] == "landmarks" and convention["size"] == [48, 48]
    import cv2

    aligned, loose = [], []
    for seed in range(6):
        expression = fu.data.EXPRESSIONS[seed]
        big, _ = fu.synth.render_face(expression=expression, identity_seed=seed, size=192,
                                      channels=3)
        small, _ = fu.synth.render_face(expression=expression, identity_seed=seed, size=48)
        photo = cv2.copyMakeBorder(big, 100, 100, 150, 150, cv2.BORDER_REPLICATE)
        crops, boxes = fu.inference.crop_faces(photo, convention=convention)
        assert len(crops) >= 1, f"no face detected in rendered face {seed}"
        assert crops.shape[1:] == (48, 48, 1) and crops.dtype == np.uint8
        x, y, w, h, _ = boxes[0]
        assert 150 <= x + w / 2 <= 342 and 100 <= y + h / 2 <= 292  # the face, not elsewhere
        aligned.append(np.corrcoef(crops[0].ravel(), small.ravel())[0, 1])
        tight, _ = fu.inference.crop_faces(photo, faces=boxes[:1], convention={
            "method": "box", "scale": 1.0, "align": False, "size": [48, 48], "channels": 1})
        loose.append(np.corrcoef(tight[0].ravel(), small.ravel())[0, 1])
    assert np.median(aligned) > 0.8, aligned
    assert np.median(aligned) > np.median(loose), (aligned, loose)


def test_predict_image_with_meta_round_trip(model, tmp_path):
    import skimage.data

    train = fu.synth.make_dataset(100, seed=4, size=48, channels=1, cache=False, progress=False)
    meta = fu.inference.make_meta(train, input_size=48, channels=1, preprocess="scale",
                                  model_name="small")
    path = fu.inference.save_meta(meta, tmp_path / "meta.json")
    loaded = fu.inference.load_meta(path)
    assert loaded == json.loads(json.dumps(meta))
    results = fu.inference.predict_image(model, skimage.data.astronaut(), loaded, min_score=0.5)
    assert len(results) == 1
    assert np.allclose(results[0]["box"], (175, 76, 91, 91), atol=20)
    assert abs(sum(results[0]["probabilities"].values()) - 1) < 1e-4
    # the TFLite model plugs into the same pipeline and gives the same answer
    tflite = fu.export.TFLiteModel(fu.export.to_tflite(model, tmp_path / "m.tflite"))
    again = fu.inference.predict_image(tflite, skimage.data.astronaut(), loaded, min_score=0.5)
    assert again[0]["label"] == results[0]["label"]
    assert np.allclose(list(again[0]["probabilities"].values()),
                       list(results[0]["probabilities"].values()), atol=1e-4)
    picture = fu.inference.annotate(skimage.data.astronaut(), results)
    assert picture.shape == (512, 512, 3) and np.any(picture != skimage.data.astronaut())


def test_meta_errors_name_the_file(tmp_path):
    assert not hasattr(fu.inference, "read_image")  # one reader: fu.data.read_image
    (tmp_path / "meta.json").write_text("{not json")
    with pytest.raises(ValueError, match="meta.json"):
        fu.inference.load_meta(tmp_path / "meta.json")
    (tmp_path / "meta2.json").write_text(json.dumps({"class_names": ["a", "b"]}))
    with pytest.raises(ValueError, match="input_size"):
        fu.inference.load_meta(tmp_path / "meta2.json")
    (tmp_path / "meta3.json").write_text("null")
    with pytest.raises(ValueError, match="meta3.json: expected a JSON object"):
        fu.inference.load_meta(tmp_path / "meta3.json")
    (tmp_path / "meta4.json").write_text(json.dumps(
        {"class_names": ["a", "b"], "input_size": [48, 48], "channels": 1,
         "preprocess": "scale", "crop": "box"}))
    with pytest.raises(ValueError, match="meta4.json: crop must be a JSON object"):
        fu.inference.load_meta(tmp_path / "meta4.json")


def test_load_model_reads_its_meta_and_rejects_another_models(model, tmp_path):
    train = fu.synth.make_dataset(30, seed=5, size=48, channels=1, cache=False, progress=False)
    model.save(tmp_path / "model.keras")
    meta = fu.inference.make_meta(train, input_size=48, channels=1, model_name="small")
    fu.inference.save_meta(meta, tmp_path / "meta.json")
    loaded, loaded_meta = fu.inference.load_model(tmp_path)  # the folder `train` writes
    assert loaded_meta["crop"]["method"] == "landmarks" and "note" not in loaded_meta
    # another file name in the same folder does not pick up model.keras' meta.json
    model.save(tmp_path / "other.keras")
    assert "note" in fu.inference.load_model(tmp_path / "other.keras")[1]
    fu.inference.save_meta({**meta, "channels": 3}, tmp_path / "meta.json")
    with pytest.raises(ValueError, match="another model"):
        fu.inference.load_model(tmp_path / "model.keras")
