"""`python -m fer_utils data` on real layouts, and `fetch-data` (which never downloads here)."""

import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from fer_utils import data
from fer_utils.__main__ import main
from fer_utils.data import fetch

ROOT = Path(__file__).resolve().parents[1]


def run_cli(args, workdir: Path, timeout: int = 300, **env_overrides):
    env = dict(os.environ, FER_PROFILE="ci", FER_DATASET="synthetic", TF_CPP_MIN_LOG_LEVEL="2",
               FER_DATA_DIR=str(workdir / "data"), FER_LOG_DIR=str(workdir / "logs"),
               MPLBACKEND="Agg",
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH"))
                                          if p))
    env.update(env_overrides)
    return subprocess.run([sys.executable, "-m", "fer_utils", *map(str, args)], cwd=workdir,
                          env=env, capture_output=True, text=True, timeout=timeout)


def kaggle_like_folders(root: Path, per_class=3):
    """train/ and test/ (Kaggle's FER2013 folder copy), with a duplicate across the splits."""
    rng = np.random.default_rng(0)
    first = None
    for split_name in ("train", "test"):
        for cls in data.EXPRESSIONS:
            (root / split_name / cls).mkdir(parents=True)
            for i in range(per_class):
                face = rng.integers(0, 256, (48, 48), dtype=np.uint8)
                first = face if first is None else first
                cv2.imwrite(str(root / split_name / cls / f"im{i}.png"), face)
    cv2.imwrite(str(root / "test" / "angry" / "copy.png"), first)  # = train/angry/im0.png
    return root


def test_data_says_which_layout_it_found_and_reports_duplicates(tmp_path):
    root = kaggle_like_folders(tmp_path / "fer")
    result = run_cli(["data", f"folder:{root}", "--out", tmp_path / "report", "--convert",
                      "folder", "--to", tmp_path / "copy"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert "split folders: train/ → train (21), test/ → test (22)" in out
    assert "7 classes (angry, disgust, fear, happy, sad, surprise, neutral)" in out
    assert "1 cross splits (train/test 1)" in out, out
    assert "groups (people): none known" in out
    # Converted to split folders: they load back with the same split.
    back = data.load_image_folder(tmp_path / "copy")
    assert {"train", "val", "test"} == set(back.split) and len(back) == 43


def test_data_reports_groups_per_split(tmp_path):
    root = tmp_path / "ck"
    rng = np.random.default_rng(1)
    for p in range(10):
        for f in range(4):
            cls = ("happy", "sad")[f % 2]
            (root / cls).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / cls / f"S{p:03d}_{f}.png"),
                        rng.integers(0, 256, (20, 20), dtype=np.uint8))
    result = run_cli(["data", f"folder:{root}", "--out", tmp_path / "r"], tmp_path,
                     FER_GROUPS=r"S(\d+)_")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "split 80/10/10 by person (groups)" in result.stdout
    assert "groups (people): 10 (train " in result.stdout
    assert "none in more than one split" in result.stdout


def test_fetch_data_fails_fast_offline_and_never_downloads(tmp_path, monkeypatch, capsys):
    import kagglehub

    def no_download(*args, **kwargs):
        raise AssertionError("a test must not download")

    monkeypatch.setattr(kagglehub, "dataset_download", no_download)
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # a dead proxy: nothing gets out
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    started = time.monotonic()
    status = main(["fetch-data", "fer2013", "--to", str(tmp_path / "d"), "--timeout", "5"])
    elapsed = time.monotonic() - started
    err = capsys.readouterr().err
    assert status == 1 and elapsed < 10, (status, elapsed)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: cannot reach https://www.kaggle.com")
    assert "FER_DATASET" in lines[0]
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("layout", ["csv", "folders"])
def test_fetch_data_puts_the_download_where_fer_dataset_finds_it(tmp_path, monkeypatch, capsys,
                                                                 layout):
    download = tmp_path / "kagglehub-cache"
    if layout == "csv":
        faces = data.FaceSet(images=np.zeros((3, 48, 48, 1), np.uint8), labels=[0, 3, 6],
                             split=["train", "val", "test"])
        data.write_fer2013_csv(faces, download / "fer2013" / "fer2013.csv")
        (download / "README.csv").write_text("name,notes\nx,y\n")
    else:
        kaggle_like_folders(download / "versions" / "1")
    monkeypatch.setattr(fetch, "check_reachable", lambda **kwargs: None)
    monkeypatch.setattr(fetch, "_download", lambda handle: download)
    status = main(["fetch-data", "fer2013", "--to", str(tmp_path / "data"), "--layout", layout])
    out = capsys.readouterr().out
    assert status == 0
    spec = out.split("export FER_DATASET=")[1].strip()
    fs = data.load_dataset(spec, profile="full", progress=False)
    if layout == "csv":
        assert spec == f"fer2013:{tmp_path / 'data' / 'fer2013.csv'}" and len(fs) == 3
        assert list(fs.split) == ["train", "val", "test"]
    else:
        assert spec == f"folder:{tmp_path / 'data' / 'fer2013'}" and len(fs) == 43
        assert set(fs.split) == {"train", "test"}
