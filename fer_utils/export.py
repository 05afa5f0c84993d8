"""Export a trained model: Keras `.keras`, TensorFlow SavedModel and TFLite, and check them.

- `.keras` (one zip: architecture + weights + optimizer) is what Keras reloads for more training.
- A SavedModel (`model.export`) is what TensorFlow Serving and the TFLite converter read.
- TFLite (`.tflite`, one flat buffer) runs on phones and small boards; `compare_keras_tflite`
  checks that it still predicts what the Keras model predicts on the same faces.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import warnings
from pathlib import Path

import numpy as np

__all__ = ["save_model", "to_tflite", "tflite_interpreter", "tflite_predict",
           "compare_keras_tflite", "TFLiteModel"]


@contextlib.contextmanager
def _quiet():
    """Silence the export summaries and deprecation chatter TensorFlow prints to stdout/stderr."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with contextlib.redirect_stdout(io.StringIO()):
            yield


def save_model(model, directory, name: str = "model") -> dict:
    """Save a Keras model as `<name>.keras` and as a SavedModel folder `<name>_savedmodel/`.

    Args:
        model: a built Keras model.
        directory: output folder (created).
        name: base name of the files.

    Returns:
        {"keras": Path of the .keras file, "saved_model": Path of the SavedModel folder}.
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"cannot save the model into {directory}: it is a file, not a folder")
    directory.mkdir(parents=True, exist_ok=True)
    keras_path = directory / f"{name}.keras"
    saved_path = directory / f"{name}_savedmodel"
    model.save(keras_path)
    with _quiet():
        model.export(str(saved_path), format="tf_saved_model", verbose=False)
    return {"keras": keras_path, "saved_model": saved_path}


def to_tflite(model, path, quantize: bool = False) -> Path:
    """Convert a Keras model (or a .keras file or SavedModel folder) to a TFLite flat buffer.

    The Keras model is exported to a temporary SavedModel first and converted from there,
    the route that works with Keras 3 on TensorFlow 2.21 (CPU).

    Args:
        model: a Keras model, a `.keras` path, or a SavedModel folder.
        path: the `.tflite` file to write (its folder is created).
        quantize: apply TFLite's default post-training (dynamic-range, 8-bit weight)
            quantization: about 4× smaller, slightly different probabilities.

    Returns:
        The path written.
    """
    import tensorflow as tf

    path = Path(path)
    if path.suffix != ".tflite":
        raise ValueError(f"the TFLite file name should end in .tflite, got {path}")
    with tempfile.TemporaryDirectory() as tmp:
        if isinstance(model, (str, Path)):
            source = Path(model)
            if not source.exists():
                raise FileNotFoundError(f"model not found: {source}")
            if source.is_dir():
                saved = source
            else:
                import keras

                model = keras.saving.load_model(source, compile=False)
                saved = None
        else:
            saved = None
        if saved is None:
            saved = Path(tmp) / "saved_model"
            with _quiet():
                model.export(str(saved), format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
        if quantize:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        with _quiet():
            flat = converter.convert()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(flat)
    return path


def tflite_interpreter(path):
    """A TFLite interpreter for `path`: LiteRT's when installed, else TensorFlow's own."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"TFLite model not found: {path}")
    try:  # the successor package; not pinned in requirements.txt
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    with _quiet():
        try:
            return Interpreter(model_path=str(path))
        except ValueError as err:
            raise ValueError(f"cannot read TFLite model {path}: {err}") from None


def tflite_predict(path_or_interpreter, x) -> np.ndarray:
    """Run a TFLite model on a batch `x` (float32 N×H×W×C) and return its output N×K."""
    interpreter = (tflite_interpreter(path_or_interpreter)
                   if isinstance(path_or_interpreter, (str, Path)) else path_or_interpreter)
    x = np.asarray(x)
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    expected = tuple(int(v) for v in inp["shape_signature"][1:])
    if tuple(x.shape[1:]) != expected:
        shape = ", ".join(map(str, expected))
        raise ValueError(f"the TFLite model expects inputs of shape (N, {shape}), got {x.shape}")
    interpreter.resize_tensor_input(inp["index"], list(x.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], x.astype(inp["dtype"]))
    interpreter.invoke()
    return np.array(interpreter.get_tensor(out["index"]))


class TFLiteModel:
    """A .tflite file as a callable batch → probabilities, usable by `inference.predict_image`."""

    def __init__(self, path):
        """Load the flat buffer once."""
        self.path = Path(path)
        self.interpreter = tflite_interpreter(self.path)
        self.input_shape = tuple(int(v) for v in
                                 self.interpreter.get_input_details()[0]["shape_signature"])
        self.num_outputs = int(self.interpreter.get_output_details()[0]["shape"][-1])

    def __call__(self, x) -> np.ndarray:
        """Predict a float32 batch."""
        return tflite_predict(self.interpreter, x)


def compare_keras_tflite(model, tflite_path, x) -> dict:
    """Compare a Keras model with its TFLite conversion on the same batch.

    Args:
        model: the Keras model.
        tflite_path: its `.tflite` file (from `to_tflite`).
        x: a float32 batch of model inputs (e.g. `inference.preprocess_faces(crops, meta)`).

    Returns:
        {"n": faces compared, "max_abs_diff": largest absolute probability difference,
        "label_agreement": fraction of faces with the same top class, "keras": N×K
        probabilities, "tflite": N×K probabilities}.
    """
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 4 or len(x) == 0:
        raise ValueError(f"x must be a non-empty N×H×W×C batch, got shape {x.shape}")
    keras_probs = np.asarray(model(x, training=False), dtype=np.float32)
    tflite_probs = tflite_predict(tflite_path, x).astype(np.float32)
    return {
        "n": int(len(x)),
        "max_abs_diff": float(np.abs(keras_probs - tflite_probs).max()),
        "label_agreement": float(np.mean(keras_probs.argmax(1) == tflite_probs.argmax(1))),
        "keras": keras_probs,
        "tflite": tflite_probs,
    }
