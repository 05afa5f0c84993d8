"""Reference baseline for the fine-tune speed goal (the project's copy of the reference script
shared with the course's design notes; `bench_finetune.py` runs it unchanged in its own
process) — the recipe a user would otherwise follow: the TensorFlow docs transfer-learning recipe
(image_dataset_from_directory + Keras augmentation layers in the model + frozen base, fp32),
with the source's choice of trainable layers (VGG16 block5 + new head), on a folder of images.
Prints images/s over EPOCHS epochs (after a warm-up epoch).
Usage: python tfdocs_recipe.py FOLDER SIZE EPOCHS [noaug]  (noaug: the same recipe without its augmentation layers)"""
import os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf, keras
folder, size, epochs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
noaug = len(sys.argv) > 4 and sys.argv[4] == "noaug"
ds = keras.utils.image_dataset_from_directory(folder, image_size=(size, size), batch_size=32, seed=1, label_mode="int")
n = sum(int(b[0].shape[0]) for b in ds)
ds = ds.prefetch(tf.data.AUTOTUNE)
aug = keras.Sequential([keras.layers.RandomFlip("horizontal"), keras.layers.RandomRotation(0.05)])
base = keras.applications.VGG16(include_top=False, weights=None, input_shape=(size, size, 3))
for l in base.layers: l.trainable = l.name.startswith("block5")
i = keras.Input((size, size, 3)); x = i if noaug else aug(i); x = keras.applications.vgg16.preprocess_input(x); x = base(x)
x = keras.layers.GlobalAveragePooling2D()(x); x = keras.layers.Dropout(0.2)(x); o = keras.layers.Dense(7, activation="softmax")(x)
m = keras.Model(i, o); m.compile(keras.optimizers.Adam(1e-4), "sparse_categorical_crossentropy", metrics=["accuracy"])
m.fit(ds, epochs=1, verbose=0)
t = time.perf_counter(); m.fit(ds, epochs=epochs, verbose=0); dt = time.perf_counter() - t
print(f"tfdocs-recipe{' (no augmentation)' if noaug else ''} size={size} images={n} epochs={epochs}: {n*epochs/dt:.1f} img/s")
