"""Settings (README, "Settings"): defaults, accepted values, a clear message for every bad value."""

import pytest

from fer_utils import config
from fer_utils.config import SettingsError, get_settings


def test_defaults_without_fer2013(tmp_path):
    s = get_settings({"FER_DATA_DIR": str(tmp_path)})
    assert s.profile.name == "laptop"
    assert s.dataset == "synthetic"
    assert s.weights == "imagenet"
    assert s.data_dir == tmp_path
    assert s.seed == config.DEFAULT_SEED


def test_default_dataset_is_fer2013_when_csv_exists(tmp_path):
    (tmp_path / "fer2013.csv").write_text("emotion,pixels,Usage\n")
    s = get_settings({"FER_DATA_DIR": str(tmp_path)})
    assert s.dataset == f"fer2013:{tmp_path / 'fer2013.csv'}"
    assert s.dataset_kind == "fer2013"
    assert s.dataset_path == tmp_path / "fer2013.csv"


@pytest.mark.parametrize("profile", ["ci", "laptop", "full", "CI"])
def test_profiles(profile):
    assert get_settings({"FER_PROFILE": profile}).profile.name == profile.lower()


def test_profiles_shrink_from_full_to_ci():
    ci, laptop, full = (config.PROFILE_TABLE[p] for p in config.PROFILES)
    assert ci.num_images < laptop.num_images and full.num_images is None
    assert ci.vgg_size <= laptop.vgg_size <= full.vgg_size == 224


@pytest.mark.parametrize("spec, kind", [
    ("synthetic", "synthetic"), ("fer2013:/x/f.csv", "fer2013"),
    ("folder:/x/faces", "folder"), ("au-csv:/x/aus.csv", "au-csv")])
def test_dataset_specs(spec, kind):
    s = get_settings({"FER_DATASET": spec})
    assert s.dataset_kind == kind


def test_relative_dataset_path_is_resolved_from_project_root():
    s = get_settings({"FER_DATASET": "folder:data/my_faces"})
    assert s.dataset_path == config.PROJECT_ROOT / "data" / "my_faces"


def test_weights_file(tmp_path):
    w = tmp_path / "vgg16.weights.h5"
    w.write_bytes(b"x")
    assert get_settings({"FER_WEIGHTS": str(w)}).weights == str(w)
    assert get_settings({"FER_WEIGHTS": "None"}).weights == "none"


@pytest.mark.parametrize("env, needles", [
    ({"FER_PROFILE": "huge"}, ["FER_PROFILE", "'huge'", "ci, laptop, full"]),
    ({"FER_DATASET": "imagenet"}, ["FER_DATASET", "'imagenet'", "synthetic", "folder:PATH"]),
    ({"FER_DATASET": "folder"}, ["FER_DATASET", "'folder'", "needs a path"]),
    ({"FER_DATASET": "au-csv:"}, ["FER_DATASET", "'au-csv:'", "needs a path"]),
    ({"FER_DATASET": "synthetic:/tmp/x"}, ["FER_DATASET", "takes no path"]),
    ({"FER_WEIGHTS": "/nope/vgg.h5"}, ["FER_WEIGHTS", "'/nope/vgg.h5'", "imagenet, none"]),
    ({"FER_WEIGHTS": "random"}, ["FER_WEIGHTS", "'random'", "imagenet, none"]),
    ({"FER_SEED": "abc"}, ["FER_SEED", "'abc'", "non-negative integer"]),
    ({"FER_SEED": "-3"}, ["FER_SEED", "'-3'", "non-negative integer"]),
    ({"FER_GROUPS": "S(\\d+"}, ["FER_GROUPS", "'S(\\\\d+'", "not a valid regular expression"]),
    ({"FER_GROUPS": "S\\d+_"}, ["FER_GROUPS", "'S\\\\d+_'", "has no group", "person id"]),
])
def test_bad_values_name_variable_value_and_allowed(env, needles):
    with pytest.raises(SettingsError) as err:
        get_settings(env)
    for needle in needles:
        assert needle in str(err.value)


def test_log_dir_that_is_a_file(tmp_path):
    f = tmp_path / "logs"
    f.write_text("")
    with pytest.raises(SettingsError, match="FER_LOG_DIR.*not a folder"):
        get_settings({"FER_LOG_DIR": str(f)})


def test_banner_names_everything():
    line = get_settings({"FER_PROFILE": "ci", "FER_DATASET": "synthetic"}).banner()
    for part in ("TensorFlow", "devices", "profile: ci", "dataset: synthetic", "weights", "seed"):
        assert part in line


def test_groups_setting_is_kept_and_shown_in_the_banner():
    assert get_settings({}).groups is None
    s = get_settings({"FER_GROUPS": r"S(\d+)_", "FER_PROFILE": "ci"})
    assert s.groups == r"S(\d+)_"
    assert r"groups: S(\d+)_" in s.banner()


INSTALLED_CHECK = """
import sys
from fer_utils import config
s = config.get_settings({"FER_DATASET": "folder:faces", "FER_DATA_DIR": "mydata"})
print(config.PROJECT_ROOT)
print(s.dataset_path)
print(s.data_dir)
"""


def test_relative_paths_resolve_from_the_current_folder_when_installed(tmp_path):
    """A copy of the package without pyproject.toml beside it, as pip installs it."""
    import shutil
    import subprocess
    import sys

    site = tmp_path / "site-packages"
    shutil.copytree(config.PROJECT_ROOT / "fer_utils", site / "fer_utils",
                    ignore=shutil.ignore_patterns("__pycache__"))
    work = tmp_path / "work"
    work.mkdir()
    result = subprocess.run([sys.executable, "-c", INSTALLED_CHECK], cwd=work,
                            env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    root, dataset, data_dir = result.stdout.split()
    assert root == str(site)
    assert dataset == str(work / "faces") and data_dir == str(work / "mydata")


def test_relative_paths_resolve_from_the_project_root_in_a_checkout(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert config.base_dir() == config.PROJECT_ROOT
    s = get_settings({"FER_DATASET": "folder:faces", "FER_DATA_DIR": "mydata"})
    assert s.dataset_path == config.PROJECT_ROOT / "faces"
    assert s.data_dir == config.PROJECT_ROOT / "mydata"


def test_banner_says_whether_imagenet_weights_are_on_disk(tmp_path, monkeypatch):
    """`weights: imagenet` only when the file is in the Keras cache; otherwise it says so."""
    from fer_utils import config

    monkeypatch.setattr(config, "keras_homes", lambda: [tmp_path])
    settings = get_settings({"FER_PROFILE": "ci", "FER_DATASET": "synthetic"})
    assert "weights: imagenet (not in the Keras cache" in settings.banner()
    cached = tmp_path / "models" / config.IMAGENET_NOTOP_FILE
    cached.parent.mkdir()
    cached.write_bytes(b"stand-in")
    assert "weights: imagenet | seed" in settings.banner()
    none = get_settings({"FER_PROFILE": "ci", "FER_DATASET": "synthetic", "FER_WEIGHTS": "none"})
    assert "weights: none |" in none.banner()
