"""Training helpers: per-layer learning rates, resumable runs, class weights, devices."""

import csv
import json
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from fer_utils import data, train
from fer_utils.models import small_cnn, vgg


def _tiny_model(seed=0):
    keras.utils.set_random_seed(seed)
    return small_cnn((12, 12, 1), 3, filters=(4, 4), dropout=0.0)


def _data(n=32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 12, 12, 1), dtype=np.float32), rng.integers(0, 3, n)


def test_rate_for_path_longest_prefix_wins():
    rates = {"block": 1.0, "block1": 0.0, "block1_conv2": 0.5, "outer": 9.0}
    assert train.rate_for_path("block1_conv1/kernel", rates, 0.1) == (0.0, "block1")
    assert train.rate_for_path("block1_conv2/bias", rates, 0.1) == (0.5, "block1_conv2")
    assert train.rate_for_path("block2_conv1/kernel", rates, 0.1) == (1.0, "block")
    assert train.rate_for_path("predictions/kernel", rates, 0.1) == (0.1, None)
    # a nested model: the inner layer's longer prefix beats the outer model's name
    assert train.rate_for_path("outer/block1_conv2/kernel", rates, 0.1)[0] == 0.5
    assert train.rate_for_path("outer/predictions/kernel", rates, 0.1)[0] == 9.0


def test_each_layer_moves_by_its_own_rate_under_sgd():
    """One plain-SGD step: every variable changes by exactly -rate × gradient."""
    model = _tiny_model()
    x, y = _data()
    rates = {"block1": 0.0, "block2": 0.02}  # predictions: the base rate 0.01
    opt = train.layerwise_optimizer(rates, base_learning_rate=0.01, optimizer="sgd")
    model.compile(opt, loss="sparse_categorical_crossentropy")
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    with tf.GradientTape() as tape:
        loss = loss_fn(y, model(x, training=True))
    grads = {v.path: g.numpy() for v, g in zip(model.trainable_variables,
                                                tape.gradient(loss, model.trainable_variables))}
    before = {v.path: v.numpy().copy() for v in model.trainable_variables}
    model.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
    moved = {}
    for v in model.trainable_variables:
        expected_rate = 0.0 if v.path.startswith("block1") else \
            0.02 if v.path.startswith("block2") else 0.01
        delta = v.numpy() - before[v.path]
        np.testing.assert_allclose(delta, -expected_rate * grads[v.path], rtol=2e-3, atol=1e-7)
        moved[v.path] = np.abs(delta).sum()
        assert opt.rate_of(v.path) == pytest.approx(expected_rate)
    assert moved["block1_conv1/kernel"] == 0 and moved["block1_conv2/bias"] == 0
    assert moved["block2_conv1/kernel"] > 0 and moved["predictions/kernel"] > 0
    assert opt.assignments["block1_conv1/kernel"] == ("block1", 0.0)
    assert opt.assignments["predictions/kernel"] == ("base", None)


def test_rate_zero_freezes_under_adam_over_several_epochs(tmp_path):
    model = _tiny_model(1)
    x, y = _data(48, 1)
    opt = train.layerwise_optimizer({"block1": 0, "block2_conv2": 1e-3}, 1e-2)
    model.compile(opt, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    frozen = [v.numpy().copy() for v in model.get_layer("block1_conv1").weights]
    trained = model.get_layer("block2_conv1").kernel.numpy().copy()
    model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    for before, v in zip(frozen, model.get_layer("block1_conv1").weights):
        np.testing.assert_array_equal(before, v.numpy())
    assert not np.allclose(trained, model.get_layer("block2_conv1").kernel.numpy())
    # the compiled model (optimizer state included) saves and loads
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded.optimizer) is train.LayerwiseOptimizer  # a registered top-level class
    assert loaded.optimizer.get_config()["learning_rates"] == {"block1": 0.0,
                                                               "block2_conv2": 1e-3}
    for a, b in zip(loaded.optimizer.variables, model.optimizer.variables):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b))


def test_setting_learning_rate_rescales_every_group():
    opt = train.layerwise_optimizer({"a": 0.0, "b": 4e-3}, 2e-3, optimizer="sgd", momentum=0.9)
    assert float(np.asarray(opt.learning_rate)) == pytest.approx(2e-3)
    opt.learning_rate = 1e-3  # what ReduceLROnPlateau / LearningRateScheduler do
    assert opt.rate_of("b_layer/kernel") == pytest.approx(2e-3)
    assert opt.rate_of("a_layer/kernel") == 0.0
    assert opt.rate_of("other/kernel") == pytest.approx(1e-3)


@pytest.mark.parametrize("kwargs, words", [
    ({"learning_rates": [("a", 1)]}, ["dict"]),
    ({"learning_rates": {"a": -1}}, ["'a'", "-1"]),
    ({"learning_rates": {"": 1}}, ["prefix", "''"]),
    ({"learning_rates": {}, "base_learning_rate": "fast"}, ["base_learning_rate", "fast"]),
    ({"learning_rates": {}, "optimizer": "lbfgs"}, ["lbfgs", "adam"]),
])
def test_layerwise_optimizer_rejects_bad_arguments(kwargs, words):
    with pytest.raises(ValueError) as info:
        train.layerwise_optimizer(**kwargs)
    for word in words:
        assert word in str(info.value)


class _Crash(Exception):
    pass


class _CrashAt(keras.callbacks.Callback):
    """Raise at the start of epoch `epoch` (simulates a crash / kernel interrupt)."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise _Crash(f"crash at epoch {epoch}")


class _Recorder(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append(epoch)


def test_rerun_after_a_crash_resumes_at_the_next_epoch(tmp_path):
    x, y = _data(32, 2)
    xv, yv = _data(16, 3)
    model = _tiny_model(2)
    model.compile(train.layerwise_optimizer({"block1": 1e-4}, 1e-3),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    first = _Recorder()
    callbacks = train.make_callbacks("run1", log_dir=tmp_path)
    with pytest.raises(_Crash):
        model.fit(x, y, validation_data=(xv, yv), epochs=4, batch_size=16, verbose=0,
                  callbacks=callbacks + [first, _CrashAt(2)])
    assert first.epochs == [0, 1, 2]
    assert (tmp_path / "run1" / "backup").is_dir()
    weights_after_epoch_2 = [w.copy() for w in model.get_weights()]
    optimizer_state = [np.asarray(v).copy() for v in model.optimizer.variables]

    # a fresh process would rebuild the model: its weights differ until the backup is restored
    model2 = _tiny_model(7)
    model2.compile(train.layerwise_optimizer({"block1": 1e-4}, 1e-3),
                   loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    restored = []

    class _Check(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if not restored:
                restored.append([w.copy() for w in self.model.get_weights()])
                restored.append([np.asarray(v).copy() for v in self.model.optimizer.variables])

    second = _Recorder()
    history = model2.fit(x, y, validation_data=(xv, yv), epochs=4, batch_size=16, verbose=0,
                         callbacks=train.make_callbacks("run1", log_dir=tmp_path)
                         + [second, _Check()])
    assert second.epochs == [2, 3]
    for a, b in zip(restored[0], weights_after_epoch_2):
        np.testing.assert_allclose(a, b)
    assert len(restored[1]) == len(optimizer_state)  # per-rate Adam moments restored too
    for a, b in zip(restored[1], optimizer_state):
        np.testing.assert_allclose(a, b)
    assert len(history.history["loss"]) == 2
    # the backup is removed once a fit finishes; the CSV log holds all four epochs
    assert not (tmp_path / "run1" / "backup").exists()
    with open(tmp_path / "run1" / "history.csv") as f:
        epochs = [int(row["epoch"]) for row in csv.DictReader(f)]
    assert epochs == [0, 1, 2, 3]
    # a fresh run under the same name (nothing to resume) starts a fresh CSV log
    model2.fit(x, y, epochs=1, batch_size=16, verbose=0,
               callbacks=train.make_callbacks("run1", log_dir=tmp_path, tensorboard=False,
                                              checkpoint=False))
    with open(tmp_path / "run1" / "history.csv") as f:
        assert [int(row["epoch"]) for row in csv.DictReader(f)] == [0]
    best = keras.models.load_model(tmp_path / "run1" / "best.keras")
    assert best.output_shape == (None, 3)
    assert list((tmp_path / "run1").glob("train/events.out.tfevents*"))


def test_make_callbacks_options_and_confusion_matrix_image(tmp_path):
    x, y = _data(24, 4)
    model = _tiny_model(4)
    model.compile("adam", loss="sparse_categorical_crossentropy")
    callbacks = train.make_callbacks("cm", log_dir=tmp_path, backup=False, checkpoint=False,
                                     csv=False, confusion_matrix_data=(x, y),
                                     class_names=["a", "b", "c"], progress=True)
    kinds = [type(c).__name__ for c in callbacks]
    assert kinds == ["TensorBoard", "ConfusionMatrixLogger", "TqdmProgress"]
    model.fit(x, y, epochs=1, batch_size=12, verbose=0, callbacks=callbacks)
    logger = callbacks[1]
    assert logger.last_matrix.shape == (3, 3) and logger.last_matrix.sum() == len(y)
    assert list((tmp_path / "cm" / "confusion_matrix").glob("events.out.tfevents*"))
    with pytest.raises(ValueError, match="run_name"):
        train.make_callbacks("a/b", log_dir=tmp_path)
    with pytest.raises(ValueError, match="mode"):
        train.make_callbacks("x", log_dir=tmp_path, mode="largest")


def test_make_callbacks_defaults_to_the_settings_log_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("FER_LOG_DIR", str(tmp_path / "logs"))
    callbacks = train.make_callbacks("defaults", tensorboard=False, backup=False)
    assert (tmp_path / "logs" / "defaults").is_dir()
    assert {type(c).__name__ for c in callbacks} == {"Float32Checkpoint", "CSVLogger"}


def test_class_weights_balanced_like_sklearn():
    from sklearn.utils.class_weight import compute_class_weight

    labels = np.array([0] * 50 + [1] * 5 + [2] * 45)
    weights = train.class_weights(labels)
    expected = compute_class_weight("balanced", classes=np.arange(3), y=labels)
    assert weights == pytest.approx({0: expected[0], 1: expected[1], 2: expected[2]})
    assert weights[1] == pytest.approx(100 / (3 * 5))  # the rare class weighs 10× more
    assert train.class_weights(labels, num_classes=4)[3] == 1.0
    assert train.class_weights(np.eye(3)[labels]) == pytest.approx(weights)
    with pytest.raises(ValueError, match="num_classes=2"):
        train.class_weights(labels, num_classes=2)
    with pytest.raises(ValueError, match="class indices"):
        train.class_weights([0.5, 1.0])


def test_distribution_strategy(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    strategy = train.distribution_strategy("auto")
    assert strategy.num_replicas_in_sync == 1
    one = train.distribution_strategy("one")
    assert isinstance(one, tf.distribute.OneDeviceStrategy)
    with pytest.raises(ValueError, match="'ring'"):
        train.distribution_strategy("ring")
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match="TF_CONFIG"):
        train.distribution_strategy("auto")


def test_cpu_bf16_detection_and_policy_choice(monkeypatch):
    from fer_utils.train import precision

    assert train.cpu_supports_bf16("flags : fpu avx512f avx512_bf16 sse", environ={})
    assert train.cpu_supports_bf16("flags : fpu amx_bf16 amx_tile", environ={})
    assert not train.cpu_supports_bf16("flags : fpu avx2 avx512f", environ={})
    # oneDNN capped below AVX512-BF16 (an AVX2 laptop's setting): no bf16, as on such a CPU
    capped = {"ONEDNN_MAX_CPU_ISA": "AVX2"}
    assert not train.cpu_supports_bf16("flags : avx512f avx512_bf16", environ=capped)
    assert train.cpu_supports_bf16("flags : avx512f avx512_bf16",
                                   environ={"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX"})
    assert train.cpu_description("flags : avx2 avx512f avx512_bf16", capped) == \
        "AVX2 (capped by ONEDNN_MAX_CPU_ISA), no bf16"
    assert train.cpu_description("flags : avx2 fma", {}) == "AVX2, no bf16"
    try:
        assert train.enable_mixed_precision("fp32", verbose=False) == "float32"
        assert keras.mixed_precision.global_policy().name == "float32"
        with pytest.raises(ValueError, match="'fp8'"):
            train.enable_mixed_precision("fp8")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    if tf.config.list_logical_devices("GPU"):
        return
    # The one decision: bf16 only when the CPU has it AND a step measures faster with it.
    monkeypatch.setattr(precision, "_MEASURED", {})
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda cpuinfo=None, environ=None: False)
    assert train.mixed_precision_policy() == "float32"
    chosen, why = train.resolve_precision("auto")
    assert chosen == "fp32" and why.startswith("auto: this CPU has no native bfloat16")
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda cpuinfo=None, environ=None: True)
    assert train.mixed_precision_policy(measure=False) == "float32"
    for bf16_s, expected in ((0.5, "mixed_bfloat16"), (0.99, "float32")):
        monkeypatch.setattr(precision, "_MEASURED", {})
        monkeypatch.setattr(precision, "measure_precision_speed",
                            lambda **kw: {"fp32": 1.0, "bf16": bf16_s})
        assert train.mixed_precision_policy() == expected
    chosen, why = train.resolve_precision("auto")
    assert chosen == "fp32" and "1000 ms in fp32 and 990 ms in bf16" in why


def test_one_precision_vocabulary_with_aliases():
    assert train.resolve_precision("fp32") == ("fp32", "asked for")
    for alias in ("bf16", "bfloat16", "mixed_bfloat16"):
        assert train.resolve_precision(alias)[0] == "bf16"
    assert train.precision_name("float16") == "fp16"
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, bf16, fp16 .* "
                                         "got 'fp8'"):
        train.resolve_precision("fp8")


def test_measure_precision_speed_restores_the_policy():
    keras.mixed_precision.set_global_policy("float32")
    speed = train.measure_precision_speed(("bf16",), batch_size=4, image_size=16,
                                          steps=2, warmup=1, filters=(4,))
    assert set(speed) == {"bf16"} and np.isfinite(speed["bf16"])
    assert keras.mixed_precision.global_policy().name == "float32"


def test_layerwise_optimizer_under_float16_loss_scaling():
    """With mixed_float16, compile wraps it in a LossScaleOptimizer: rates still apply."""
    try:
        keras.mixed_precision.set_global_policy("mixed_float16")
        model = _tiny_model(5)
        model.compile(train.layerwise_optimizer({"block1": 0.0}, 1e-3),
                      "sparse_categorical_crossentropy")
        assert type(model.optimizer).__name__ == "LossScaleOptimizer"
        frozen = model.get_layer("block1_conv1").kernel.numpy().copy()
        trained = model.get_layer("block2_conv1").kernel.numpy().copy()
        model.fit(*_data(64, 5), epochs=2, batch_size=8, verbose=0)  # scaling may skip a step
        np.testing.assert_array_equal(frozen, model.get_layer("block1_conv1").kernel.numpy())
        assert not np.array_equal(trained, model.get_layer("block2_conv1").kernel.numpy())
    finally:
        keras.mixed_precision.set_global_policy("float32")


# --------------------------------------------------------------------------- fit_classifier


def _faces(n=24, size=36, seed=0, classes=3, constant=False):
    """A FaceSet of random (or constant) uint8 grey faces with balanced labels."""
    rng = np.random.default_rng(seed)
    images = np.full((n, size, size, 1), 120, np.uint8) if constant else \
        rng.integers(0, 256, (n, size, size, 1), dtype=np.uint8)
    names = tuple(f"c{i}" for i in range(classes))
    return data.FaceSet(images=images, labels=np.arange(n) % classes, class_names=names)


def _vgg(seed=1, trainable_from="block5_conv1", num_classes=3):
    """A 32 px VGG16 classifier with blocks 1-4 frozen (random weights: warning silenced)."""
    keras.utils.set_random_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return vgg.vgg16_classifier((32, 32, 3), num_classes=num_classes, weights=None,
                                    head=(8,), dropout=0.0, trainable_from=trainable_from,
                                    verbose=False)


def test_cached_and_full_paths_train_the_same_weights_in_float32():
    faces = _faces(12)
    a, b = _vgg(), _vgg()
    b.set_weights(a.get_weights())
    before = a.get_layer("block5_conv1").kernel.numpy().copy()
    kwargs = dict(epochs=2, batch_size=4, learning_rate=1e-3, verbose=0, seed=3)
    ra = train.fit_classifier(a, faces, faces, **kwargs)
    rb = train.fit_classifier(b, faces, faces, cache=False, **kwargs)
    assert (ra.path, rb.path) == ("cached", "full")
    assert np.abs(a.get_layer("block5_conv1").kernel.numpy() - before).max() > 1e-6  # trained
    for name in ("block5_conv1", "block5_conv3", "fc6", "predictions"):
        np.testing.assert_allclose(a.get_layer(name).kernel.numpy(),
                                   b.get_layer(name).kernel.numpy(), atol=1e-6, err_msg=name)
    np.testing.assert_array_equal(a.get_layer("block1_conv1").kernel.numpy(),
                                  b.get_layer("block1_conv1").kernel.numpy())
    np.testing.assert_allclose(ra.history["loss"], rb.history["loss"], rtol=1e-5)
    assert ra.val_report["confusion_matrix"] == rb.val_report["confusion_matrix"]
    assert ra.images_per_second == pytest.approx(12 * 2 / ra.seconds)


def test_the_path_is_chosen_and_said(capsys):
    faces = _faces(8)
    model = _vgg()
    result = train.fit_classifier(model, faces, epochs=1, batch_size=4, augment=True)
    out = capsys.readouterr().out
    assert result.path == "full" and "full path: augmentation changes the images" in out
    result = train.fit_classifier(model, faces, epochs=1, batch_size=4)
    out = capsys.readouterr().out
    assert result.path == "cached" and "cached path: the layers up to block4_pool are frozen" in out
    assert "precision fp32" in out
    result = train.fit_classifier(model, faces, epochs=1, batch_size=4, verbose=0,
                                  max_cache_mb=0.001)
    assert result.path == "full" and "more than max_cache_mb" in result.reason
    scratch = small_cnn((36, 36, 1), 3, filters=(4,), dropout=0.0)
    result = train.fit_classifier(scratch, faces, epochs=1, batch_size=4, verbose=0)
    assert result.path == "full" and "nothing is frozen" in result.reason
    with pytest.raises(ValueError, match="cache=True, but nothing of"):
        train.fit_classifier(scratch, faces, epochs=1, verbose=0, cache=True)


def test_a_random_layer_before_the_trainable_ones_prevents_caching():
    inputs = keras.Input((16, 16, 1))
    x = keras.layers.Rescaling(1 / 255, name="scale")(inputs)
    x = keras.layers.Conv2D(2, 3, name="frozen_conv")(x)
    x = keras.layers.GaussianNoise(0.1, name="noise")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="out")(x))
    model.get_layer("frozen_conv").trainable = False
    with pytest.raises(ValueError, match="'noise' before the first trainable layer is random"):
        train.split_frozen(model)
    result = train.fit_classifier(model, _faces(6, 16), epochs=1, verbose=0)
    assert result.path == "full" and "'noise'" in result.reason


def test_split_frozen_shares_layers_and_computes_the_same():
    model = _vgg()
    frozen, tail = train.split_frozen(model)
    assert frozen.output_shape == (None, 2, 2, 512) and tail.input_shape == (None, 2, 2, 512)
    assert tail.get_layer("block5_conv1") is model.get_layer("block5_conv1")
    x = np.random.default_rng(0).normal(0, 50, (3, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(tail(frozen(x)), model(x), rtol=1e-5, atol=1e-6)


class _CrashAtEpoch(keras.callbacks.Callback):
    """Raise at the start of an epoch (a crash in the middle of training)."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise _Crash(f"crash at epoch {epoch}")


def _image_batches(faces):
    return data.to_tf_dataset(faces, batch_size=8, shuffle=False, image_size=32, channels=3,
                              preprocess="vgg")


def test_checkpoints_of_the_cached_path_hold_the_image_to_label_model(tmp_path):
    faces = _faces(16, seed=4)
    model = _vgg(5)
    with pytest.raises(_Crash):
        train.fit_classifier(model, faces, faces, epochs=3, batch_size=8, verbose=0,
                             run_name="cached", log_dir=tmp_path, callbacks=[_CrashAtEpoch(1)])
    # best.keras was written after epoch 0, in the middle of training: it takes images.
    best = keras.models.load_model(tmp_path / "cached" / "best.keras")
    assert best.input_shape == (None, 32, 32, 3) and best.output_shape == (None, 3)
    np.testing.assert_allclose(best.predict(_image_batches(faces), verbose=0),
                               model.predict(_image_batches(faces), verbose=0), atol=1e-5)
    assert (tmp_path / "cached" / "backup" / "latest.weights.h5").is_file()
    # A re-run (a fresh model, as after a crash) restores the backup and resumes at epoch 1.
    again = _vgg(6)
    result = train.fit_classifier(again, faces, faces, epochs=3, batch_size=8, verbose=0,
                                  run_name="cached", log_dir=tmp_path)
    assert result.path == "cached" and result.epochs == 2
    with open(tmp_path / "cached" / "history.csv") as f:
        assert [int(row["epoch"]) for row in csv.DictReader(f)] == [0, 1, 2]
    assert not (tmp_path / "cached" / "backup").exists()
    np.testing.assert_array_equal(again.get_layer("block1_conv1").kernel.numpy(),
                                  model.get_layer("block1_conv1").kernel.numpy())  # restored


def test_bfloat16_trains_and_hands_back_a_float32_model(tmp_path):
    model = _vgg()
    before = model.get_layer("fc6").kernel.numpy().copy()
    result = train.fit_classifier(model, _faces(8), _faces(8, seed=1), epochs=1, batch_size=4,
                                  verbose=0, precision="bf16", run_name="bf16", log_dir=tmp_path)
    assert result.precision == "bf16" and result.path == "cached"
    assert not np.array_equal(before, model.get_layer("fc6").kernel.numpy())
    assert {layer.dtype_policy.name for layer in model.layers} == {"float32"}
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert loaded.get_layer("block5_conv1").compute_dtype == "float32"
    # the checkpoint saved while the model computed in bfloat16 reloads as float32 too
    best = keras.models.load_model(tmp_path / "bf16" / "best.keras")
    assert {layer.dtype_policy.name for layer in best.layers} == {"float32"}
    x = next(iter(train.classifier_batches(model, _faces(4), 4)))[0]
    np.testing.assert_allclose(best.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-5)


def test_a_collapsed_model_is_reported():
    faces = _faces(12, constant=True)  # identical faces: one answer for all of them
    model = small_cnn((36, 36, 1), 3, filters=(4,), dropout=0.0)
    with pytest.warns(train.CollapseWarning, match="100% of the 12 faces are predicted"):
        result = train.fit_classifier(model, faces, faces, epochs=1, verbose=0)
    report = result.val_report
    assert report["collapsed"] and report["dominant_share"] == 1.0
    assert sorted(report["prediction_share"].values()) == [0.0, 0.0, 1.0]
    assert report["recall"][report["dominant_class"]] == 1.0
    assert result.val_accuracy == pytest.approx(1 / 3)


def test_the_time_budget_stops_after_the_step_that_spends_it(capsys):
    model = small_cnn((36, 36, 1), 3, filters=(4,), dropout=0.0)
    result = train.fit_classifier(model, _faces(8), epochs=5, batch_size=4, minutes=1e-4)
    assert result.epochs == 1 and len(result.history["loss"]) == 1
    assert result.stopped.startswith("time budget: stopped after 1 steps of 10")
    assert result.stopped in capsys.readouterr().out


def test_a_logits_head_is_refused_with_the_reason():
    model = small_cnn((36, 36, 1), 3, filters=(4,), dropout=0.0, head="logits")
    with pytest.raises(ValueError, match="activation 'linear', not softmax .*head='logits'"):
        train.fit_classifier(model, _faces(8), epochs=1, verbose=0)
    sigmoid = small_cnn((36, 36, 1), 3, filters=(4,), dropout=0.0, head="sigmoid")
    with pytest.raises(ValueError, match="activation 'sigmoid', not softmax"):
        train.fit_classifier(sigmoid, _faces(8), epochs=1, verbose=0)


def test_a_model_without_preprocessing_is_refused():
    inputs = keras.Input((36, 36, 1))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(2, 3)(inputs))
    bare = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    with pytest.raises(ValueError, match="has no preprocessing layer, but the kit feeds raw"):
        train.fit_classifier(bare, _faces(8), epochs=1, verbose=0)


def test_class_weights_pairs_and_bad_arguments():
    model = small_cnn((36, 36, 1), 3, filters=(4,), dropout=0.0)
    rng = np.random.default_rng(0)
    pair = (rng.integers(0, 256, (9, 36, 36, 1), dtype=np.uint8), np.array([0] * 7 + [1, 2]))
    result = train.fit_classifier(model, pair, epochs=1, verbose=0, class_weight="balanced")
    assert result.images == 9 and result.path == "full"
    for kwargs, message in ((dict(epochs=0), "epochs must be a positive integer, got 0"),
                            (dict(epochs=1, precision="fp8"), "got 'fp8'"),
                            (dict(epochs=1, minutes=0), "minutes must be a number > 0"),
                            (dict(epochs=1, cache=True, augment=True), "cannot be combined"),
                            (dict(epochs=1, cache="yes"), "cache must be True, False")):
        with pytest.raises(ValueError, match=message):
            train.fit_classifier(model, pair, verbose=0, **kwargs)
    with pytest.raises(ValueError, match=r"labels must lie in 0..2 .* got 0..5"):
        train.fit_classifier(model, (pair[0], np.arange(9) % 6), epochs=1, verbose=0)
    with pytest.raises(ValueError, match="images must be uint8"):
        train.fit_classifier(model, (pair[0].astype("float32"), pair[1]), epochs=1, verbose=0)


# --------------------------------------------------------------------------- the recipe


class _Clock:
    """A fake `time` module for the schedule and the fit: the clock moves only when told to."""

    def __init__(self):
        self.now = 1000.0

    def perf_counter(self):
        return self.now


class _Tick(keras.callbacks.Callback):
    """Advance the fake clock by `seconds` per training batch: it runs after the schedule's
    `on_train_batch_begin` (which sets the rate) and before its `on_train_batch_end`."""

    def __init__(self, clock, seconds):
        super().__init__()
        self.clock, self.seconds = clock, seconds

    def on_train_batch_begin(self, batch, logs=None):
        self.clock.now += self.seconds


@pytest.fixture
def clock(monkeypatch):
    """The fake clock, in the schedule and in fit_classifier."""
    from fer_utils.train import fit, schedule

    fake = _Clock()
    monkeypatch.setattr(schedule, "time", fake)
    monkeypatch.setattr(fit, "time", fake)
    return fake


def _cosine(first, step, total):
    return first * 0.5 * (1 + np.cos(np.pi * step / total))


def test_the_budget_stops_mid_epoch_when_it_is_spent(clock, capsys):
    faces = _faces(40)  # 10 batches of 4 per epoch
    model = small_cnn((36, 36, 1), 3, filters=(4,), dropout=0.0)
    # 50 planned epochs (500 steps), 1 minute of budget, 7.5 s per batch: time is up after 8
    with warnings.catch_warnings():  # 8 steps on random faces teach nothing: no warning
        warnings.simplefilter("ignore", train.CollapseWarning)
        result = train.fit_classifier(model, faces, faces, epochs=50, batch_size=4,
                                      learning_rate=0.01, minutes=1, schedule="cosine",
                                      callbacks=[_Tick(clock, 7.5)], verbose=1)
    assert result.epochs == 1
    assert result.stopped.startswith("time budget: stopped after 8 steps of 500, 1.0 of 1 "
                                     "minutes used (the time budget is spent)")
    assert result.stopped in capsys.readouterr().out
    # the rate follows the steps (the cosine over the 500 planned), not the clock
    logged = float(result.history["learning_rate"][-1])
    assert logged == pytest.approx(_cosine(0.01, 7, 500), rel=1e-6)
    assert result.val_report is not None  # the stopped epoch was still validated
    assert result.schedule["steps"] == 500 and result.schedule["steps_done"] == 8


def test_the_budget_becomes_whole_epochs_after_the_first(clock):
    faces = _faces(40)  # 10 batches of 4 per epoch
    model = small_cnn((36, 36, 1), 3, filters=(4,), dropout=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", train.CollapseWarning)
        result = train.fit_classifier(model, faces, faces, epochs=None, batch_size=4,
                                      learning_rate=0.01, minutes=1, schedule="cosine",
                                      callbacks=[_Tick(clock, 2.0)], verbose=0)
    # epoch 1 took 20 s of the 60: two more whole epochs fit, 30 steps in all
    assert result.epochs == 3 and result.stopped is None
    plan = result.schedule
    assert (plan["epochs"], plan["steps"], plan["steps_done"]) == (3, 30, 30)
    assert plan["planned"].startswith("planned after epoch 1: 20 s per epoch and 0.7 of 1 "
                                      "training minutes left give 3 epochs (30 steps)")
    rates = result.history["learning_rate"]  # each epoch's last step
    np.testing.assert_allclose(rates, [0.01, _cosine(0.01, 19, 30), _cosine(0.01, 29, 30)],
                               rtol=1e-6)
    assert clock.now - 1000.0 == pytest.approx(60.0)


def test_a_resumed_run_continues_the_schedule_and_the_budget(clock, tmp_path):
    faces = _faces(40)

    def attempt(crash_at=None):
        model = small_cnn((36, 36, 1), 3, filters=(4,), dropout=0.0)
        extra = [_Tick(clock, 2.0)] + ([_CrashAt(crash_at)] if crash_at else [])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", train.CollapseWarning)
            return train.fit_classifier(model, faces, faces, epochs=None, batch_size=4,
                                        learning_rate=0.01, minutes=1, schedule="cosine",
                                        run_name="run", log_dir=tmp_path, callbacks=extra,
                                        verbose=0)

    with pytest.raises(_Crash):
        attempt(crash_at=2)  # killed after epoch 2 of the 3 planned (40 s used)
    state = json.loads((tmp_path / "run" / "backup" / "schedule.json").read_text())
    assert (state["epochs"], state["steps_done"], state["training_seconds"]) == (3, 20, 40.0)
    clock.now += 500  # the machine was off for a while: that time is not training time
    result = attempt()
    assert result.epochs == 1  # only epoch 3 was left
    plan = result.schedule
    assert plan["steps_done"] == 30 and plan["training_seconds"] == pytest.approx(60.0)
    assert [a["from_epoch"] for a in plan["attempts"]] == [0, 2]
    # the rate continued at step 20 of 30 instead of starting over
    assert result.history["learning_rate"][-1] == pytest.approx(_cosine(0.01, 29, 30),
                                                                rel=1e-6)
    with open(tmp_path / "run" / "history.csv") as f:
        assert [int(row["epoch"]) for row in csv.DictReader(f)] == [0, 1, 2]


def test_budget_schedule_arguments_are_checked():
    for kwargs, message in ((dict(learning_rate=0), "learning_rate must be a number > 0"),
                            (dict(learning_rate=1e-3, minutes=-1), "minutes must be"),
                            (dict(learning_rate=1e-3, shape="step"), "shape must be one of"),
                            (dict(learning_rate=1e-3, epochs=None, minutes=None),
                             "give epochs, minutes or both")):
        with pytest.raises(ValueError, match=message):
            train.BudgetSchedule(**kwargs)


def test_sqrt_class_weights_are_the_roots_of_balanced():
    labels = np.array([0] * 60 + [1] * 30 + [2] * 10)
    balanced = train.class_weights(labels)
    root = train.class_weights(labels, kind="sqrt")
    assert root == pytest.approx({c: np.sqrt(w) for c, w in balanced.items()})
    assert root[2] > root[1] > 1 > root[0]
    with pytest.raises(ValueError, match="kind='square'"):
        train.class_weights(labels, kind="square")
    model = small_cnn((36, 36, 1), 3, filters=(4,), dropout=0.0)
    with pytest.raises(ValueError, match="class_weight must be None, a dict or one of"):
        train.fit_classifier(model, _faces(6), epochs=1, verbose=0, class_weight="root")


def test_flip_shift_mirrors_and_shifts_with_reflected_borders():
    from fer_utils.augment import tf_flip_shift

    rng = np.random.default_rng(0)
    x = rng.random((64, 10, 12, 2)).astype("float32")
    out = tf_flip_shift(x, seed=5, max_shift=3).numpy()
    padded = np.pad(x, ((0, 0), (3, 3), (3, 3), (0, 0)), mode="reflect")
    mirrored = np.pad(x[:, :, ::-1], ((0, 0), (3, 3), (3, 3), (0, 0)), mode="reflect")
    kinds = []
    for i in range(len(x)):  # every output is one window of the (mirrored) padded image
        found = [(m, dy, dx) for m, p in ((False, padded), (True, mirrored))
                 for dy in range(7) for dx in range(7)
                 if np.array_equal(out[i], p[i, dy:dy + 10, dx:dx + 12])]
        assert found, i
        kinds.append(found[0])
    assert 16 < sum(m for m, _, _ in kinds) < 48  # about half are mirrored
    assert len({(dy, dx) for _, dy, dx in kinds}) > 10  # each image its own shift
    np.testing.assert_array_equal(tf_flip_shift(x, seed=5, max_shift=3).numpy(), out)
    assert not np.array_equal(tf_flip_shift(x, seed=6, max_shift=3).numpy(), out)
    np.testing.assert_array_equal(tf_flip_shift(x, seed=1, max_shift=0, flip=False).numpy(), x)
    with pytest.raises(ValueError, match="max_shift must be an int >= 0"):
        tf_flip_shift(x, max_shift=1.5)
    with pytest.raises(ValueError, match="larger than 12 px"):
        tf_flip_shift(x, max_shift=12)


def test_flip_shift_batches_for_training():
    faces = _faces(16, size=24)
    model = small_cnn((24, 24, 1), 3, filters=(4,), dropout=0.0)
    plain = np.concatenate([x for x, _ in train.classifier_batches(model, faces, 8)])
    shifted, labels = zip(*train.classifier_batches(model, faces, 8, seed=2,
                                                    augment="flip-shift"))
    shifted = np.concatenate(shifted)
    np.testing.assert_array_equal(np.concatenate(labels), faces.labels)
    np.testing.assert_allclose(plain, faces.images, atol=1e-6)  # raw pixels: the model scales
    assert shifted.shape == plain.shape and not np.allclose(shifted, plain)
    # same pixels, moved: a shift of 2 px (24 / 12) at most, with reflected borders
    padded = np.pad(plain, ((0, 0), (2, 2), (2, 2), (0, 0)), mode="reflect")
    for i in range(len(plain)):
        windows = [p[dy:dy + 24, dx:dx + 24] for p in (padded[i], padded[i][:, ::-1])
                   for dy in range(5) for dx in range(5)]
        assert any(np.allclose(shifted[i], w) for w in windows)
    result = train.fit_classifier(model, faces, epochs=1, batch_size=8, verbose=0,
                                  augment="flip-shift", schedule="cosine")
    assert result.path == "full" and "augmentation" in result.reason
    with pytest.raises(ValueError, match="augment must be one of"):
        train.fit_classifier(model, faces, epochs=1, verbose=0, augment="mixup")
    with pytest.raises(ValueError, match=r"schedule must be one of \('cosine', 'constant'\)"):
        train.fit_classifier(model, faces, epochs=1, verbose=0, schedule="step")
