"""Settings of the course kit: profiles, data set, weights and folders (the README's "Settings")."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

from .cpu import cpu_description

PROJECT_ROOT = Path(__file__).resolve().parents[1]

PROFILES = ("ci", "laptop", "full")
DATASET_KINDS = ("synthetic", "fer2013", "folder", "au-csv")
WEIGHTS_CHOICES = ("imagenet", "none")
DEFAULT_SEED = 1234
# The ImageNet VGG16 weights file (no top) as keras.applications names it in the Keras cache.
IMAGENET_NOTOP_FILE = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"

# The choices of the training recipe (`fer_utils.train`, `python -m fer_utils train`): here,
# where the command line reads them without loading TensorFlow.
MODELS = ("small", "vgg16")
AUGMENTS = ("none", "flip-shift", "full")
CLASS_WEIGHT_CHOICES = ("none", "balanced", "sqrt")
TTA_CHOICES = ("auto", "on", "off")
# What trains when a run starts from a trained model (`train --init-from`): the source notes'
# recipe is "last-block" (the early blocks frozen, the last block and a new head train).
FINE_TUNE_MODES = ("head", "last-block", "layerwise", "all")
STRATEGIES = ("auto", "one", "mirrored", "multiworker")
# One precision vocabulary for the whole kit; float32/bfloat16/float16 are accepted aliases.
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


class SettingsError(ValueError):
    """A setting (environment variable or argument) has a value the kit does not accept."""


@dataclasses.dataclass(frozen=True)
class Profile:
    """How big a run is: images, sizes, epochs and batch for one profile."""

    name: str
    num_images: int | None  # None: the whole data set
    image_size: int  # small-CNN input size (the data set's own size is kept when None)
    vgg_size: int  # VGG16 / EAC-Net input size
    epochs: int  # epochs of a from-scratch small CNN
    finetune_epochs: int  # epochs of a VGG16 fine-tune
    batch_size: int
    synthetic_size: int  # how many faces the built-in set renders for this profile


PROFILE_TABLE = {
    # Tiny: the whole course executes in minutes on 2 CPU cores (CI, nbval).
    "ci": Profile("ci", num_images=600, image_size=48, vgg_size=48, epochs=2,
                  finetune_epochs=1, batch_size=32, synthetic_size=600),
    # A few thousand images: each notebook in minutes on a laptop CPU.
    "laptop": Profile("laptop", num_images=4000, image_size=48, vgg_size=96, epochs=12,
                      finetune_epochs=5, batch_size=64, synthetic_size=4000),
    # Everything, real epoch counts; a GPU is expected.
    "full": Profile("full", num_images=None, image_size=48, vgg_size=224, epochs=60,
                    finetune_epochs=20, batch_size=64, synthetic_size=35887),
}


@dataclasses.dataclass(frozen=True)
class Settings:
    """The resolved settings of one run (see `get_settings`)."""

    profile: Profile
    dataset: str  # "synthetic", "fer2013:PATH", "folder:PATH", "au-csv:PATH"
    weights: str  # "imagenet", "none" or a path to VGG16 weights
    data_dir: Path
    log_dir: Path
    seed: int = DEFAULT_SEED
    groups: str | None = None  # FER_GROUPS: regex whose first group is the person id

    @property
    def dataset_kind(self) -> str:
        """The data-set kind without its path ("synthetic", "fer2013", ...)."""
        return self.dataset.split(":", 1)[0]

    @property
    def dataset_path(self) -> Path | None:
        """The path part of the data-set spec, or None for the built-in set."""
        kind, _, path = self.dataset.partition(":")
        return Path(path) if path else None

    def banner(self) -> str:
        """One line: TensorFlow version, devices (and the CPU's vector instructions: whether
        it has bfloat16), profile, data set, weights, seed."""
        try:
            import tensorflow as tf

            devices = ",".join(d.device_type for d in tf.config.list_logical_devices()) or "none"
            tf_version = tf.__version__
        except ImportError:  # pragma: no cover - TensorFlow is a hard requirement
            devices, tf_version = "?", "not installed"
        groups = f" | groups: {self.groups}" if self.groups else ""
        return (f"TensorFlow {tf_version} | devices: {devices} ({cpu_description()}) | profile: "
                f"{self.profile.name} | dataset: {self.dataset}{groups} | weights: "
                f"{self.weights_status()} | seed: {self.seed}")

    def weights_status(self) -> str:
        """The weights setting and what it gives: "imagenet" only when the file is on disk."""
        if self.weights != "imagenet":
            return self.weights
        if imagenet_weights_path() is None:
            return "imagenet (not in the Keras cache: VGG models start from random weights)"
        return "imagenet"


def keras_homes() -> list[Path]:
    """Where Keras keeps downloads: $KERAS_HOME or ~/.keras, then its fallback /tmp/.keras."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return [Path(home), Path("/tmp/.keras")]


def imagenet_weights_path() -> Path | None:
    """The ImageNet VGG16 notop file in the Keras cache (`<home>/models/`), or None; no download."""
    candidates = [home / "models" / IMAGENET_NOTOP_FILE for home in keras_homes()]
    return next((path for path in candidates if path.is_file()), None)


def base_dir() -> Path:
    """Where relative paths start: the project root in a checkout, else the current folder.

    In a checkout (pyproject.toml next to fer_utils/) `data/` means the project's data folder
    wherever the notebook or command runs; once the package is installed (site-packages), a
    relative path means what it means in a shell: relative to the current folder.
    """
    if (PROJECT_ROOT / "pyproject.toml").is_file() and (PROJECT_ROOT / "fer_utils").is_dir():
        return PROJECT_ROOT
    return Path.cwd()


def resolve_path(path) -> Path:
    """`path` with ~ expanded, made absolute from `base_dir()` when relative."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else base_dir() / path


def _choice_error(variable: str, value: str, allowed: str) -> SettingsError:
    return SettingsError(f"{variable}={value!r} is not a valid setting; allowed: {allowed}")


def parse_profile(value: str, variable: str = "FER_PROFILE") -> Profile:
    """Return the Profile named by `value`, or raise SettingsError naming `variable`."""
    name = value.strip().lower()
    if name not in PROFILE_TABLE:
        raise _choice_error(variable, value, ", ".join(PROFILES))
    return PROFILE_TABLE[name]


def parse_dataset(value: str, data_dir: Path, variable: str = "FER_DATASET") -> str:
    """Normalise a data-set spec: `synthetic`, `fer2013[:PATH]`, `folder:PATH`, `au-csv:PATH`."""
    allowed = "synthetic, fer2013, fer2013:PATH, folder:PATH, au-csv:PATH"
    spec = value.strip()
    kind, sep, path = spec.partition(":")
    kind = kind.lower()
    if kind not in DATASET_KINDS:
        raise _choice_error(variable, value, allowed)
    if kind == "synthetic":
        if path:
            raise SettingsError(f"{variable}={value!r}: the built-in 'synthetic' set takes no path; "
                                f"allowed: {allowed}")
        return "synthetic"
    if kind == "fer2013" and not path:
        path = str(data_dir / "fer2013.csv")
    if not path:
        raise SettingsError(f"{variable}={value!r}: '{kind}' needs a path, as in '{kind}:PATH'; "
                            f"allowed: {allowed}")
    return f"{kind}:{resolve_path(path)}"


def parse_weights(value: str, variable: str = "FER_WEIGHTS") -> str:
    """Return `imagenet`, `none` or an existing weights file; otherwise raise SettingsError."""
    choice = value.strip()
    if choice.lower() in WEIGHTS_CHOICES:
        return choice.lower()
    path = resolve_path(choice)
    if not path.is_file():
        raise SettingsError(f"{variable}={value!r} is neither a weights file that exists nor one of "
                            f"the allowed values: imagenet, none, or a path to VGG16 weights (.h5)")
    return str(path)


def parse_seed(value: str, variable: str = "FER_SEED") -> int:
    """Parse a non-negative integer seed, or raise SettingsError naming `variable`."""
    try:
        seed = int(value)
    except ValueError:
        raise _choice_error(variable, value, "a non-negative integer") from None
    if seed < 0:
        raise _choice_error(variable, value, "a non-negative integer")
    return seed


def parse_groups(value: str | None, variable: str = "FER_GROUPS") -> str | None:
    """A regular expression with at least one group (its first is the person id), or None."""
    if value is None or not value.strip():
        return None
    try:
        pattern = re.compile(value)
    except re.error as error:
        raise SettingsError(f"{variable}={value!r} is not a valid regular expression ({error}); "
                            f"allowed: a regular expression whose first group is the person id, "
                            f"e.g. 'S(\\d+)_' for CK+") from None
    if pattern.groups < 1:
        raise SettingsError(f"{variable}={value!r} has no group; allowed: a regular expression "
                            f"whose first (group) is the person id, e.g. 'S(\\d+)_' for CK+")
    return value


def _folder(env: dict, variable: str, default: str) -> Path:
    raw = env.get(variable, "") or default
    path = resolve_path(raw)
    if path.exists() and not path.is_dir():
        raise SettingsError(f"{variable}={raw!r} exists but is not a folder; allowed: a folder path")
    return path


def get_settings(environ: dict | None = None) -> Settings:
    """Read the FER_* environment variables (or `environ`) and return validated Settings.

    Args:
        environ: a mapping to read instead of `os.environ` (tests pass their own).

    Returns:
        Settings. Any unknown value raises SettingsError naming the variable, the bad value
        and the allowed values.
    """
    env = dict(os.environ if environ is None else environ)
    data_dir = _folder(env, "FER_DATA_DIR", "data")
    log_dir = _folder(env, "FER_LOG_DIR", "logs")
    profile = parse_profile(env.get("FER_PROFILE") or "laptop")
    default_dataset = "fer2013" if (data_dir / "fer2013.csv").is_file() else "synthetic"
    dataset = parse_dataset(env.get("FER_DATASET") or default_dataset, data_dir)
    weights = parse_weights(env.get("FER_WEIGHTS") or "imagenet")
    seed = parse_seed(env.get("FER_SEED") or str(DEFAULT_SEED))
    groups = parse_groups(env.get("FER_GROUPS"))
    return Settings(profile=profile, dataset=dataset, weights=weights, data_dir=data_dir,
                    log_dir=log_dir, seed=seed, groups=groups)
