"""Training helpers: per-layer learning rates, resumable runs, class weights, devices."""

import csv

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from fer_utils import train  # noqa: E402
from fer_utils.models import small_cnn  # noqa: E402


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
    assert type(loaded.optimizer).__name__ == "LayerwiseOptimizer"
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
    assert {type(c).__name__ for c in callbacks} == {"ModelCheckpoint", "CSVLogger"}


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


def test_cpu_bf16_detection_and_policy_choice():
    assert train.cpu_supports_bf16("flags : fpu avx512f avx512_bf16 sse")
    assert train.cpu_supports_bf16("flags : fpu amx_bf16 amx_tile")
    assert not train.cpu_supports_bf16("flags : fpu avx2 avx512f")
    try:
        assert train.enable_mixed_precision("float32", verbose=False) == "float32"
        assert keras.mixed_precision.global_policy().name == "float32"
        with pytest.raises(ValueError, match="'fp8'"):
            train.enable_mixed_precision("fp8")
        # without measuring, a CPU never opts into bfloat16
        if not tf.config.list_logical_devices("GPU"):
            assert train.mixed_precision_policy(measure=False) == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_measure_precision_speed_restores_the_policy():
    speed = train.measure_precision_speed(("float32",), batch_size=4, image_size=16, steps=2,
                                          warmup=1, filters=(4,))
    assert set(speed) == {"float32"} and speed["float32"] > 0
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
