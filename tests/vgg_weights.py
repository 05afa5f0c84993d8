"""Test helper: VGG16 weights files in the formats the kit reads (written by the tests)."""

import h5py


def write_keras_notop_h5(path, base):
    """Write a conv base's weights the way Keras' published VGG16 `..._notop.h5` stores them.

    One group per layer (pooling layers included, without weights), `layer_names` and
    `weight_names` attributes, datasets named `{layer}_W_1:0` and `{layer}_b_1:0`.
    """
    with h5py.File(path, "w") as f:
        names = [layer.name for layer in base.layers[1:]]
        f.attrs["layer_names"] = [n.encode() for n in names]
        for name in names:
            group = f.create_group(name)
            weights = base.get_layer(name).get_weights()
            wnames = [f"{name}_W_1:0", f"{name}_b_1:0"] if weights else []
            group.attrs["weight_names"] = [n.encode() for n in wnames]
            for wname, array in zip(wnames, weights):
                group.create_dataset(wname, data=array)
    return path
