"""Evaluation metrics agree with scikit-learn and catch the accuracy trap (fer_utils.metrics)."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn import metrics as skm

from fer_utils import metrics


@pytest.fixture
def labels():
    rng = np.random.default_rng(3)
    y_true = rng.integers(0, 4, 200)
    y_pred = np.where(rng.random(200) < 0.6, y_true, rng.integers(0, 4, 200))
    return y_true, y_pred


def test_macro_f1_agrees_with_sklearn(labels):
    y_true, y_pred = labels
    expected = skm.f1_score(y_true, y_pred, average="macro")
    assert metrics.macro_f1(y_true, y_pred) == pytest.approx(expected)
    # probabilities: argmax is taken
    prob = np.eye(4)[y_pred] * 0.7 + 0.075
    assert metrics.macro_f1(y_true, prob) == pytest.approx(expected)
    # a class never predicted nor present still counts (F1 = 0) when num_classes says so
    assert metrics.macro_f1(y_true, y_pred, num_classes=5) == pytest.approx(expected * 4 / 5)


def test_classification_report_frame_matches_sklearn(labels):
    y_true, y_pred = labels
    names = ["a", "b", "c", "d"]
    frame = metrics.classification_report_frame(y_true, y_pred, names)
    report = skm.classification_report(y_true, y_pred, target_names=names, output_dict=True)
    for name in names + ["macro avg", "weighted avg"]:
        assert frame.loc[name, "precision"] == pytest.approx(report[name]["precision"])
        assert frame.loc[name, "recall"] == pytest.approx(report[name]["recall"])
        assert frame.loc[name, "f1"] == pytest.approx(report[name]["f1-score"])
        assert frame.loc[name, "support"] == report[name]["support"]
    assert frame.attrs["accuracy"] == pytest.approx(report["accuracy"])
    with pytest.raises(ValueError, match="0..2"):
        metrics.classification_report_frame(y_true, y_pred, names[:3])


def test_confusion_matrix(labels):
    y_true, y_pred = labels
    cm = metrics.confusion_matrix(y_true, y_pred, num_classes=5)
    assert cm.shape == (5, 5) and cm.sum() == len(y_true)
    np.testing.assert_array_equal(cm[:4, :4], skm.confusion_matrix(y_true, y_pred))
    assert cm[4].sum() == 0 and cm[:, 4].sum() == 0
    with pytest.raises(ValueError, match="num_classes=2"):
        metrics.confusion_matrix(y_true, y_pred, num_classes=2)


def test_prediction_report_agrees_with_sklearn(labels):
    y_true, y_pred = labels
    names = ["a", "b", "c", "d"]
    report = metrics.prediction_report(y_true, y_pred, names)
    assert report["faces"] == 200 and not report["collapsed"]
    assert report["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
    assert report["macro_f1"] == pytest.approx(skm.f1_score(y_true, y_pred, average="macro"))
    recall = skm.recall_score(y_true, y_pred, average=None)
    assert [report["recall"][n] for n in names] == pytest.approx(list(recall))
    assert report["confusion_matrix"] == skm.confusion_matrix(y_true, y_pred).tolist()
    assert [report["prediction_share"][n] for n in names] == pytest.approx(
        list(np.bincount(y_pred, minlength=4) / 200))
    assert [report["true_share"][n] for n in names] == pytest.approx(
        list(np.bincount(y_true, minlength=4) / 200))


def test_prediction_report_flags_a_collapse_above_90_percent():
    y_true = np.arange(100) % 4
    y_pred = np.where(np.arange(100) < 91, 2, y_true)  # 91 % "c", the rest right
    report = metrics.prediction_report(y_true, y_pred, ["a", "b", "c", "d"])
    assert report["collapsed"] and report["dominant_class"] == "c"
    assert report["dominant_share"] == pytest.approx(0.93)  # 91 + the 2 true "c" of the rest
    y_pred = np.where(np.arange(100) < 85, 2, y_true)  # 85 % + a few right: not collapsed
    assert not metrics.prediction_report(y_true, y_pred, ["a", "b", "c", "d"])["collapsed"]
    # A class absent from the labels has no recall (None), not a made-up 0.
    absent = metrics.prediction_report([0, 0, 1], [0, 1, 1], ["a", "b", "c"])
    assert absent["recall"] == {"a": 0.5, "b": 1.0, "c": None}


def test_all_zero_predictions_trap():
    """90 % of a rare AU's labels are 0: predicting 0 everywhere scores 90 % and F1 = 0."""
    y_true = np.array([1] * 10 + [0] * 90)
    all_zero = np.zeros(100, dtype=int)
    assert metrics.accuracy(y_true, all_zero) == pytest.approx(0.9)
    series = metrics.per_au_f1(y_true[:, None], all_zero[:, None], au_names=["AU9"])
    assert series["AU9"] == 0.0


def test_per_au_f1_agrees_with_sklearn_per_column():
    rng = np.random.default_rng(0)
    y_true = (rng.random((150, 3)) < [0.1, 0.5, 0.3]).astype(int)
    y_prob = np.clip(y_true * 0.4 + rng.random((150, 3)) * 0.7, 0, 1)
    series = metrics.per_au_f1(y_true, y_prob, thresholds=0.5, au_names=["AU1", "AU2", "AU4"])
    for j, name in enumerate(["AU1", "AU2", "AU4"]):
        assert series[name] == pytest.approx(skm.f1_score(y_true[:, j], y_prob[:, j] >= 0.5))
    assert series["mean"] == pytest.approx(series.drop("mean").mean())
    per_column = metrics.per_au_f1(y_true, y_prob, thresholds=[0.3, 0.5, 0.7])
    assert per_column["AU0"] == pytest.approx(skm.f1_score(y_true[:, 0], y_prob[:, 0] >= 0.3))


def test_choose_thresholds_maximises_f1():
    rng = np.random.default_rng(1)
    y_true = (rng.random((300, 2)) < [0.08, 0.4]).astype(int)
    y_prob = np.clip(y_true * 0.25 + rng.random((300, 2)) * 0.6, 0, 1)  # rarely above 0.5
    chosen = metrics.choose_thresholds(y_true, y_prob, au_names=["AU9", "AU12"])
    assert set(chosen) == {"AU9", "AU12"}
    tuned = metrics.per_au_f1(y_true, y_prob, chosen, au_names=["AU9", "AU12"])
    fixed = metrics.per_au_f1(y_true, y_prob, 0.5, au_names=["AU9", "AU12"])
    assert tuned["mean"] >= fixed["mean"]
    for j, name in enumerate(["AU9", "AU12"]):  # brute force over every candidate threshold
        best = max(skm.f1_score(y_true[:, j], y_prob[:, j] >= t) for t in np.unique(y_prob[:, j]))
        assert tuned[name] == pytest.approx(best)
    # an AU without any positive example keeps the default
    none = metrics.choose_thresholds(np.zeros((10, 1)), np.random.rand(10, 1), default=0.42)
    assert none == {"AU0": 0.42}


@pytest.mark.parametrize("call, words", [
    (lambda: metrics.macro_f1([0, 1, 2], [0, 1]), ["3", "2"]),
    (lambda: metrics.macro_f1([], []), ["empty"]),
    (lambda: metrics.macro_f1([0.5, 1], [0, 1]), ["whole", "0.5"]),
    (lambda: metrics.per_au_f1(np.ones((4, 2)), np.ones((4, 3))), ["(4, 2)", "(4, 3)"]),
    (lambda: metrics.per_au_f1(np.full((4, 2), 3.0), np.ones((4, 2))), ["0/1", "3.0"]),
    (lambda: metrics.per_au_f1(np.ones((4, 2)), np.ones((4, 2)), [0.5] * 3), ["2", "3"]),
    (lambda: metrics.per_au_f1(np.ones((4, 2)), np.ones((4, 2)), au_names=["a"]), ["1", "2"]),
])
def test_bad_input_is_named(call, words):
    with pytest.raises(ValueError) as info:
        call()
    for word in words:
        assert word in str(info.value)


def test_predict_labels_from_a_dataset():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="out")(inputs))
    x = np.random.rand(10, 3).astype("float32")
    y = np.arange(10) % 2
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    y_true, y_prob = metrics.predict_labels(model, dataset)
    np.testing.assert_array_equal(y_true, y)
    np.testing.assert_allclose(y_prob, model.predict(x, verbose=0), rtol=1e-5)
    dict_ds = tf.data.Dataset.from_tensor_slices((x, {"out": y})).batch(4)
    with pytest.raises(ValueError, match="output="):
        metrics.predict_labels(model, dict_ds)
    y2, _ = metrics.predict_labels(model, dataset.repeat(), steps=2)
    assert len(y2) == 8


def test_majority_baseline_is_the_most_common_training_class():
    train = np.array([0] * 5 + [1] * 9 + [2] * 2)
    test = np.array([0] * 6 + [1] * 3 + [2] * 1)
    base = metrics.majority_baseline(train, test, num_classes=4)
    p = 0.3  # class 1's share of the test labels
    assert base["class"] == 1
    assert base["accuracy"] == pytest.approx(p)
    assert base["macro_f1"] == pytest.approx(2 * p / (1 + p) / 4)  # one class F1, three 0
    tie = metrics.majority_baseline([2, 2, 1, 1], [1, 2], num_classes=3)
    assert tie["class"] == 1  # ties: the first of the most common classes
    with pytest.raises(ValueError, match="empty"):
        metrics.majority_baseline([], [1], 3)


def _runs(differences, base=0.5):
    rows = []
    for seed, d in enumerate(differences, start=1):
        rows += [{"arm": "new", "seed": seed, "f1": base + d + 0.01 * seed},
                 {"arm": "old", "seed": seed, "f1": base + 0.01 * seed}]
    return rows


def test_compare_seeds_pairs_the_seeds_and_judges_by_the_spread():
    consistent = metrics.compare_seeds(_runs([0.05, 0.06, 0.07]), "new", "old", "f1")
    assert consistent.differences == pytest.approx((0.05, 0.06, 0.07))
    assert consistent.mean == pytest.approx(0.06) and consistent.sd == pytest.approx(0.01)
    assert consistent.tolerance == pytest.approx(2 * 0.01 / np.sqrt(3))
    assert consistent.outcome == "higher"
    assert metrics.compare_seeds(_runs([0.05, 0.06, 0.07]), "old", "new", "f1").outcome == "lower"
    noisy = metrics.compare_seeds(_runs([0.08, -0.05, 0.01]), "new", "old", "f1")
    assert noisy.outcome == "within the spread" and "no difference beyond" in str(noisy)
    single = metrics.compare_seeds(_runs([0.2]), "new", "old", "f1")
    assert single.outcome == "one seed" and np.isnan(single.sd)


def test_seed_comparison_check_raises_only_on_a_contradiction():
    consistent = metrics.compare_seeds(_runs([0.05, 0.06, 0.07]), "new", "old", "f1")
    consistent.check("higher")
    consistent.check(None)  # no claim recorded for this data set
    with pytest.raises(AssertionError, match="expected 'new' within the spread"):
        consistent.check("within the spread")
    metrics.compare_seeds(_runs([-0.3]), "new", "old", "f1").check("higher")  # one seed: no spread
    with pytest.raises(ValueError, match="claim must be"):
        consistent.check("better")


def test_compare_seeds_against_a_fixed_baseline():
    runs = _runs([0.05, 0.06, 0.07])
    above = metrics.compare_seeds(runs, "new", 0.5, "f1")
    assert above.differences == pytest.approx((0.06, 0.08, 0.10)) and above.outcome == "higher"
    assert metrics.compare_seeds(runs, "old", 0.52, "f1").outcome == "within the spread"
    with pytest.raises(ValueError, match="finite number"):
        metrics.compare_seeds(runs, "new", float("nan"), "f1")


def test_compare_seeds_rejects_bad_runs():
    with pytest.raises(ValueError, match="no arm 'gone'"):
        metrics.compare_seeds(_runs([0.1, 0.2]), "gone", "old", "f1")
    with pytest.raises(ValueError, match="no column"):
        metrics.compare_seeds(_runs([0.1, 0.2]), "new", "old", "accuracy")
    with pytest.raises(ValueError, match="twice with the same seed"):
        metrics.compare_seeds(_runs([0.1]) * 2, "new", "old", "f1")


def test_seed_summary_shows_mean_and_sd_per_arm():
    rows = _runs([0.05, 0.06, 0.07]) + [{"arm": "once", "seed": 1, "f1": 0.25}]
    table = metrics.seed_summary(rows, "f1")
    new = np.array([0.56, 0.58, 0.60])
    assert list(table.index) == ["new", "old", "once"]
    assert table.loc["new", "f1"] == f"{new.mean():.3f} ± {new.std(ddof=1):.3f}"
    assert table.loc["once", "f1"] == "0.250" and table.loc["old", "seeds"] == 3
