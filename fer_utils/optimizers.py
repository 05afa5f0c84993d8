"""Per-layer learning rates: `layerwise_optimizer`, one inner Keras optimizer per rate.

The source's recipe trains low, middle and high layers at different rates (or not at all);
`LayerwiseOptimizer` routes each variable to the optimizer of its rate by layer-name prefix.
"""

from __future__ import annotations

import keras
import numpy as np

__all__ = ["OPTIMIZERS", "LayerwiseOptimizer", "layerwise_optimizer", "rate_for_path"]

OPTIMIZERS = ("adam", "sgd", "nesterov", "rmsprop", "adamw", "nadam", "adagrad")


def _layer_names_of(path: str) -> list[str]:
    """The layer names in a variable path ("outer/block1_conv1/kernel" -> both names)."""
    parts = [p for p in str(path).split("/") if p]
    return parts[:-1] if len(parts) > 1 else parts


def rate_for_path(path: str, learning_rates: dict, base_learning_rate: float):
    """The learning rate of a variable: the longest prefix matching one of its layer names.

    A prefix matches when a layer name in the variable's path (e.g. "block1_conv1" in
    "block1_conv1/kernel", or the outer model's name for a nested model) starts with it;
    the longest matching prefix wins; no match gives `base_learning_rate`.

    Returns:
        (rate, matched prefix or None).
    """
    best, best_rate = None, base_learning_rate
    names = _layer_names_of(path)
    for prefix, rate in learning_rates.items():
        if any(name.startswith(prefix) for name in names) or str(path).startswith(prefix):
            if best is None or len(prefix) > len(best):
                best, best_rate = prefix, rate
    return float(best_rate), best


def _make_inner(optimizer: str, rate, options: dict, name: str):
    """One Keras optimizer of the kind `optimizer` with learning rate `rate`."""
    kind = optimizer.lower()
    opts = dict(options, name=name)
    if kind == "sgd":
        return keras.optimizers.SGD(learning_rate=rate, **opts)
    if kind == "nesterov":
        opts.setdefault("momentum", 0.9)
        return keras.optimizers.SGD(learning_rate=rate, nesterov=True, **opts)
    classes = {"adam": keras.optimizers.Adam, "rmsprop": keras.optimizers.RMSprop,
               "adamw": keras.optimizers.AdamW, "nadam": keras.optimizers.Nadam,
               "adagrad": keras.optimizers.Adagrad}
    return classes[kind](learning_rate=rate, **opts)


@keras.saving.register_keras_serializable(package="fer_utils")
class LayerwiseOptimizer(keras.optimizers.MultiOptimizer):
    """Per-layer learning rates: one inner optimizer per distinct rate.

    Every trainable variable is routed, by the layer names in `variable.path`, to the
    inner optimizer of its rate (longest matching prefix wins, else the base rate), so
    each group has its own learning rate *and* its own optimizer state. A rate of 0
    leaves a layer unchanged (it is frozen in effect). Setting `learning_rate`
    (e.g. by `ReduceLROnPlateau` or `LearningRateScheduler`) rescales every group
    proportionally; a schedule given as base rate is followed by the base group.
    """

    def __init__(self, learning_rates=None, base_learning_rate=1e-3, optimizer="adam",
                 optimizer_options=None, name="layerwise", **kwargs):
        kwargs.pop("optimizer_map", None)  # from a MultiOptimizer config: rebuilt below
        learning_rates = dict(learning_rates or {})
        options = dict(optimizer_options or {})
        base_opt = _make_inner(optimizer, base_learning_rate, options, "lr_base")
        base_is_number = isinstance(base_learning_rate, (int, float))
        table = {}
        for rate in sorted({float(r) for r in learning_rates.values()}):
            if base_is_number and rate == float(base_learning_rate):
                table[rate] = base_opt  # same rate as the base: share its optimizer
            else:
                table[rate] = _make_inner(optimizer, rate, options, f"lr_{len(table)}")

        def selector(variable):
            """The inner optimizer of the variable's learning rate."""
            rate, prefix = rate_for_path(variable.path, learning_rates, 0.0)
            return base_opt if prefix is None else table[rate]

        super().__init__(selector, name=name, **kwargs)
        self.learning_rates = learning_rates
        self.base_learning_rate = base_learning_rate
        self.optimizer_kind = optimizer
        self.optimizer_options = options
        self._base_opt = base_opt
        self._opt_for_rate = table
        for opt in [base_opt, *table.values()]:
            if opt not in self._inner_optimizers:
                self._inner_optimizers.append(opt)
        self.assignments = {}

    def build(self, var_list):
        """Route every variable to the optimizer of its rate; remember who got what."""
        if self.built:
            return
        super().build(var_list)
        self.assignments = {}
        for v in var_list:
            rate, prefix = rate_for_path(v.path, self.learning_rates, -1.0)
            self.assignments[v.path] = ("base" if prefix is None else prefix,
                                        None if prefix is None else rate)

    def rate_of(self, path: str) -> float:
        """The current learning rate applied to the variable (or layer) at `path`."""
        rate, prefix = rate_for_path(path if "/" in path else f"{path}/kernel",
                                     self.learning_rates, -1.0)
        opt = self._base_opt if prefix is None else self._opt_for_rate[rate]
        return float(np.asarray(opt.learning_rate))

    @property
    def learning_rate(self):
        """The base learning rate (what schedulers and ReduceLROnPlateau read)."""
        return self._base_opt.learning_rate

    @learning_rate.setter
    def learning_rate(self, value):
        """Set the base rate; every other group keeps its ratio to it."""
        base = self._base_opt
        if not isinstance(self.base_learning_rate, (int, float)):
            raise TypeError("LayerwiseOptimizer: the base learning rate is a schedule; "
                            "it cannot also be set by a callback")
        old = float(np.asarray(base.learning_rate))
        new = float(np.asarray(value))
        base.learning_rate = new
        if old > 0:  # keep every group's ratio to the base rate
            for opt in self._opt_for_rate.values():
                if opt is not base:
                    opt.learning_rate = float(np.asarray(opt.learning_rate)) * new / old

    def get_config(self):
        """The rates, inner optimizer kind and options, for saving."""
        from keras.saving import serialize_keras_object

        base = self.base_learning_rate
        if not isinstance(base, (int, float)):
            base = serialize_keras_object(base)
        return {"learning_rates": {str(k): float(v) for k, v in self.learning_rates.items()},
                "base_learning_rate": base, "optimizer": self.optimizer_kind,
                "optimizer_options": self.optimizer_options, "name": self.name}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        """Rebuild from `get_config` (a schedule as base rate included)."""
        from keras.saving import deserialize_keras_object

        config = dict(config)
        if isinstance(config.get("base_learning_rate"), dict):
            config["base_learning_rate"] = deserialize_keras_object(
                config["base_learning_rate"], custom_objects=custom_objects)
        return cls(**config)


def layerwise_optimizer(learning_rates: dict, base_learning_rate=1e-3, optimizer: str = "adam",
                        **optimizer_options):
    """A Keras optimizer with a learning rate per layer, chosen by layer-name prefix.

    Args:
        learning_rates: {layer-name prefix: learning rate}, e.g. `{"block1": 0,
            "block2": 1e-5, "block5": 1e-4, "fc": 1e-3}`. The longest prefix that matches a
            layer name in a variable's path wins; a rate of 0 leaves those layers unchanged.
        base_learning_rate: the rate of layers no prefix matches (a float or a Keras
            LearningRateSchedule).
        optimizer: "adam", "sgd", "nesterov" (SGD, momentum 0.9), "rmsprop", "adamw",
            "nadam" or "adagrad".
        **optimizer_options: passed to every inner optimizer (e.g. momentum=0.9).

    Returns:
        A `LayerwiseOptimizer` (a `keras.optimizers.MultiOptimizer`) for `model.compile`.
    """
    if not isinstance(learning_rates, dict):
        raise ValueError(f"layerwise_optimizer: learning_rates must be a dict "
                         f"{{layer-name prefix: rate}}, got {learning_rates!r}")
    for prefix, rate in learning_rates.items():
        if not isinstance(prefix, str) or not prefix:
            raise ValueError(f"layerwise_optimizer: every key must be a non-empty layer-name "
                             f"prefix, got {prefix!r}")
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not np.isfinite(rate) \
                or rate < 0:
            raise ValueError(f"layerwise_optimizer: the rate of {prefix!r} must be a number "
                             f">= 0, got {rate!r}")
    if isinstance(base_learning_rate, (int, float)) and not isinstance(base_learning_rate, bool):
        if not np.isfinite(base_learning_rate) or base_learning_rate < 0:
            raise ValueError(f"layerwise_optimizer: base_learning_rate must be >= 0, "
                             f"got {base_learning_rate!r}")
    elif not callable(base_learning_rate):
        raise ValueError(f"layerwise_optimizer: base_learning_rate must be a number or a "
                         f"LearningRateSchedule, got {base_learning_rate!r}")
    if not isinstance(optimizer, str) or optimizer.lower() not in OPTIMIZERS:
        raise ValueError(f"layerwise_optimizer: optimizer={optimizer!r} is not supported; "
                         f"allowed: {', '.join(OPTIMIZERS)}")
    return LayerwiseOptimizer(learning_rates, base_learning_rate, optimizer.lower(),
                              optimizer_options)
