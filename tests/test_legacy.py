"""fer_utils.legacy: tflearn 0.5.0 imports and trains on the pinned TensorFlow (appendix 90)."""

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

# Runs in a fresh interpreter: tflearn switches its process to graph mode for good.
TRAIN_ONE_STEP = textwrap.dedent("""
    import json, sys, warnings
    import numpy as np
    from fer_utils.legacy import GraphModeWarning, import_tflearn

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tflearn = import_tflearn()
    import tensorflow as tf

    tf.compat.v1.set_random_seed(0)  # the same initial weights on every run
    # The source's recipe in miniature: frozen conv, trained conv + fc, new softmax head.
    pre = tflearn.data_preprocessing.ImagePreprocessing()
    pre.add_featurewise_zero_center(mean=[123.68, 116.779, 103.939], per_channel=True)
    net = tflearn.input_data(shape=[None, 16, 16, 3], data_preprocessing=pre, name="input")
    net = tflearn.conv_2d(net, 4, 3, activation="relu", scope="conv1_1", trainable=False)
    net = tflearn.max_pool_2d(net, 2, strides=2, name="maxpool1")
    net = tflearn.conv_2d(net, 4, 3, activation="relu", scope="conv5_1")
    net = tflearn.fully_connected(net, 8, activation="relu", scope="fc6")
    softmax = tflearn.fully_connected(net, 3, activation="softmax", scope="fc8", restore=False)
    net = tflearn.regression(softmax, optimizer="adam", loss="categorical_crossentropy",
                             learning_rate=0.0001)  # the source's rate
    model = tflearn.DNN(net, tensorboard_verbose=0, tensorboard_dir=sys.argv[1])

    def weights(scope):
        return model.get_weights(tflearn.variables.get_layer_variables_by_scope(scope)[0])

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(8, 16, 16, 3)).astype(np.float32)
    y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, size=8)]
    train_op = model.trainer.train_ops[0]
    feed = {model.inputs[0]: pre.apply(x.copy()), model.targets[0]: y}

    def loss():  # the real cross-entropy (tflearn's display shows a moving average)
        return float(model.session.run(train_op.loss, feed_dict=feed))

    before = {s: weights(s) for s in ("conv1_1", "conv5_1", "fc8")}
    loss_before = loss()
    # The same cross-entropy computed from the network's probabilities by hand.
    probs_before = model.session.run(softmax, feed_dict=feed)
    manual = float(np.mean(-np.log(np.sum(probs_before * y, axis=1))))
    model.fit(x, y, n_epoch=1, batch_size=8, show_metric=False, snapshot_epoch=False,
              run_id="one_step")
    after = {s: weights(s) for s in ("conv1_1", "conv5_1", "fc8")}

    # Keras VGG16 conv weights (Keras' notop .h5, written by the test) into the source's
    # conv1_1 ... conv5_3 scopes, full size, on an 8 px input.
    from fer_utils.legacy import load_vgg16_conv_weights, tflearn_conv_scope

    expected = np.load(sys.argv[3])
    filters = {"1": 64, "2": 128, "3": 256, "4": 512, "5": 512}
    with tf.Graph().as_default():
        net2 = tflearn.input_data(shape=[None, 8, 8, 3])
        for block, convs in (("1", 2), ("2", 2), ("3", 3), ("4", 3), ("5", 3)):
            for i in range(1, convs + 1):
                net2 = tflearn.conv_2d(net2, filters[block], 3, scope=f"conv{block}_{i}")
        net2 = tflearn.fully_connected(net2, 3, activation="softmax", scope="fc8")
        model2 = tflearn.DNN(tflearn.regression(net2))
        status = load_vgg16_conv_weights(model2, sys.argv[2])

        def var(scope, i):
            return model2.get_weights(tflearn.variables.get_layer_variables_by_name(scope)[i])

        loaded = {
            "status": status,
            "scope": tflearn_conv_scope("block5_conv3"),
            "conv1_1_rgb": bool(np.array_equal(var("conv1_1", 0),
                                               expected["block1_conv1"][:, :, ::-1, :])),
            "conv5_3": bool(np.array_equal(var("conv5_3", 0), expected["block5_conv3"])),
        }
    print("RESULT " + json.dumps({
        "eager": tf.executing_eagerly(),
        "graph_mode_warned": any(issubclass(w.category, GraphModeWarning) for w in caught),
        "loss_before": loss_before,
        "manual_loss_before": manual,
        "loss_after": loss(),
        "steps": int(model.trainer.training_state.step),
        "changed": {s: float(np.abs(after[s] - before[s]).max()) for s in after},
        "loaded": loaded,
    }))
""")


@pytest.fixture(scope="module")
def one_step(tmp_path_factory):
    """Train one step of a tiny tflearn network in a subprocess; return its RESULT dict."""
    import keras
    from vgg_weights import write_keras_notop_h5

    from fer_utils.models import vgg

    log_dir = tmp_path_factory.mktemp("tflearn_logs")
    folder = tmp_path_factory.mktemp("weights")
    keras.utils.set_random_seed(0)
    base = vgg.vgg16_base((32, 32, 3), weights=None)
    h5_path = write_keras_notop_h5(folder / "vgg16_notop.h5", base)
    expected = folder / "expected.npz"
    np.savez(expected, **{name: base.get_layer(name).kernel.numpy()
                          for name in ("block1_conv1", "block5_conv3")})
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
        TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-c", TRAIN_ONE_STEP, str(log_dir), str(h5_path),
                           str(expected)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    # tflearn's progress display writes terminal codes, possibly on the same line.
    lines = re.findall(r"RESULT (\{.*\})", proc.stdout)
    assert proc.returncode == 0 and lines, (
        f"tflearn subprocess failed (rc={proc.returncode}):\n{proc.stdout[-3000:]}\n"
        f"{proc.stderr[-3000:]}")
    result = json.loads(lines[-1])
    result["log_dir"] = log_dir
    return result


def test_tflearn_trains_one_step(one_step):
    assert one_step["steps"] == 1
    # tflearn's loss is the cross-entropy of its softmax probabilities
    assert one_step["loss_before"] == pytest.approx(one_step["manual_loss_before"], rel=1e-4)
    assert one_step["loss_after"] != one_step["loss_before"]  # the step changed the model
    assert one_step["changed"]["conv5_1"] > 1e-6  # trainable layers moved
    assert one_step["changed"]["fc8"] > 1e-6
    assert one_step["changed"]["conv1_1"] == 0  # trainable=False layers stayed put


def test_tflearn_switches_to_graph_mode_and_says_so(one_step):
    assert one_step["eager"] is False
    assert one_step["graph_mode_warned"] is True


def test_tflearn_writes_tensorboard_logs(one_step):
    events = list(Path(one_step["log_dir"]).rglob("events.out.tfevents.*"))
    assert events, f"no TensorBoard event file under {one_step['log_dir']}"


def test_keras_vgg16_weights_load_into_the_sources_conv_scopes(one_step):
    assert one_step["loaded"] == {"status": "file:vgg16_notop.h5", "scope": "conv5_3",
                                  "conv1_1_rgb": True, "conv5_3": True}


def test_tflearn_conv_scope_names():
    from fer_utils.legacy import tflearn_conv_scope

    assert tflearn_conv_scope("block5_conv1") == "conv5_1"
    with pytest.raises(ValueError, match="'fc6' is not a Keras VGG16 conv layer name"):
        tflearn_conv_scope("fc6")


def test_import_tflearn_checks_its_argument():
    from fer_utils.legacy import import_tflearn

    with pytest.raises(TypeError, match="quiet must be True or False, got 'yes'"):
        import_tflearn(quiet="yes")


def test_importing_legacy_does_not_import_tflearn():
    code = ("import sys, fer_utils.legacy as legacy; "
            "print('tflearn' in sys.modules, 'tensorflow' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.stdout.split() == ["False", "False"], proc.stderr
