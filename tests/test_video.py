"""Videos, folders and the camera: tracking, smoothing, streamed reading, the tables, the CLI.

Every video and photo here is written by the tests (OpenCV's own writers, the kit's renderer);
the model is a tiny untrained classifier: these tests check the pipeline, not the accuracy
(benchmarks/bench_predict.py measures that on a rendered clip).
"""

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import skimage.data

import fer_utils as fu
from fer_utils import camera, photo_folder, synth_clip, tracking, video
# The photo tests' command runner and tiny untrained model (a fixture: it uses this module's
# `workdir`).
from test_predict import model_dir, run_cli  # noqa: F401

EXPRESSIONS = list(fu.data.EXPRESSIONS)


# --- files the tests write --------------------------------------------------------------------


def write_video(path: Path, frames, fps: float = 25.0, fourcc: str = "mp4v") -> Path:
    """Write RGB frames with OpenCV's own writer."""
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
    assert writer.isOpened(), f"OpenCV cannot write {path}"
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def numbered_frames(count: int) -> list:
    """64×48 frames that show their index in binary: 6 stripes, white for a 1 bit."""
    frames = []
    for i in range(count):
        frame = np.zeros((48, 64, 3), np.uint8)
        for bit in range(6):
            if i >> bit & 1:
                frame[:, 2 + 10 * bit:10 + 10 * bit] = 255
        frames.append(frame)
    return frames


def frame_number(frame) -> int:
    """The index a `numbered_frames` frame shows (after lossy compression)."""
    return sum(1 << bit for bit in range(6) if frame[:, 4 + 10 * bit:8 + 10 * bit].mean() > 128)


def cut(path: Path, fraction: float, name: str) -> Path:
    """A copy of `path` cut off after `fraction` of its bytes (an interrupted download)."""
    data = path.read_bytes()
    target = path.with_name(name)
    target.write_bytes(data[:int(len(data) * fraction)])
    return target


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("video")


@pytest.fixture(scope="module")
def loaded(model_dir):
    return fu.inference.load_model(model_dir)


@pytest.fixture(scope="module")
def clip(workdir):
    """2 s of two rendered people at 10 fps, 320×180 (mp4), and its ground truth."""
    path = workdir / "two_people.mp4"
    truth = synth_clip.render_clip(path, seconds=2, fps=10, size=(320, 180))
    return path, truth


@pytest.fixture(scope="module")
def videos(workdir):
    """Numbered frames as mp4 and avi, cut-short copies, a text file named .mp4, a wall."""
    files = {"mp4": write_video(workdir / "numbers.mp4", numbered_frames(50)),
             "avi": write_video(workdir / "numbers.avi", numbered_frames(50), fourcc="MJPG")}
    files["cut_mp4"] = cut(files["mp4"], 0.6, "cut.mp4")
    files["cut_avi"] = cut(files["avi"], 0.5, "cut.avi")
    files["text"] = workdir / "notes.mp4"
    files["text"].write_text("this is not a video\n")
    files["wall"] = write_video(workdir / "wall.mp4", [np.full((120, 160, 3), 90, np.uint8)] * 8)
    return files


# --- tracking and smoothing -------------------------------------------------------------------


def test_iou_matrix():
    overlap = tracking.iou_matrix([(0, 0, 10, 10), (100, 100, 5, 5)],
                                  [(5, 0, 10, 10), (0, 0, 10, 10)])
    np.testing.assert_allclose(overlap, [[50 / 150, 1.0], [0.0, 0.0]])


def test_tracker_keeps_one_id_per_person_across_frames():
    tracker = tracking.FaceTracker(min_iou=0.3, max_gap=1.0)
    left, right = (10, 50, 40, 40), (200, 40, 40, 40)
    assert tracker.update([right, left], 0.0) == [2, 1]  # new faces: numbered left to right
    # Both move a little; the detector lists them in the other order.
    assert tracker.update([(14, 52, 40, 40), (196, 40, 40, 40)], 0.04) == [1, 2]
    assert tracker.update([(198, 42, 40, 40)], 0.08) == [2]  # the left one is hidden
    assert tracker.update([(16, 52, 40, 40), (198, 42, 40, 40)], 0.5) == [1, 2]  # back
    # Unseen for longer than max_gap: forgotten; a face there later is a new person.
    assert tracker.update([(198, 42, 40, 40)], 1.0) == [2] and tracker.forgotten == []
    assert tracker.update([(198, 42, 40, 40)], 1.6) == [2] and tracker.forgotten == [1]
    assert tracker.update([(16, 52, 40, 40), (198, 42, 40, 40)], 1.7) == [3, 2]


def test_tracker_matches_all_faces_at_once_not_greedily():
    # Track 1 at x=0, track 2 at x=5. Greedy matching gives the box at x=2 to track 1 (IoU
    # 0.67) and leaves the box at x=-3 unmatched (IoU 0.11 with track 2); the best overall
    # assignment keeps both people: x=2 → track 2, x=-3 → track 1 (IoU 0.54 each).
    tracker = tracking.FaceTracker(min_iou=0.3)
    assert tracker.update([(0, 0, 10, 10), (5, 0, 10, 10)], 0.0) == [1, 2]
    assert tracker.update([(2, 0, 10, 10), (-3, 0, 10, 10)], 0.04) == [2, 1]


def test_smoother_has_a_time_constant_in_seconds():
    for step in (0.05, 0.25):  # the same at 20 and at 4 frames/s
        smoother = tracking.ProbabilitySmoother(0.5)
        smoother.update(1, [1.0, 0.0], 0.0)
        for t in step * np.arange(1, round(0.5 / step) + 1):
            out = smoother.update(1, [0.0, 1.0], t)
        assert out[1] == pytest.approx(1 - np.exp(-1), abs=1e-9)  # 63 % of the way after τ
        assert out.sum() == pytest.approx(1.0)
    off = tracking.ProbabilitySmoother(0)
    off.update(1, [1.0, 0.0], 0.0)
    np.testing.assert_allclose(off.update(1, [0.2, 0.8], 0.04), [0.2, 0.8])
    # Each face is smoothed on its own; a forgotten face starts afresh.
    two = tracking.ProbabilitySmoother(1.0)
    two.update(1, [1.0, 0.0], 0.0)
    np.testing.assert_allclose(two.update(2, [0.0, 1.0], 0.1), [0.0, 1.0])
    two.forget([1])
    np.testing.assert_allclose(two.update(1, [0.0, 1.0], 0.2), [0.0, 1.0])
    with pytest.raises(ValueError, match="seconds"):
        tracking.ProbabilitySmoother(-1)


def test_smooth_table_equals_smoothing_while_predicting(clip, loaded):
    model, meta = loaded
    raw = video.predict_video(model, clip[0], meta, smooth=0, progress=False).table
    live = video.predict_video(model, clip[0], meta, smooth=0.5, progress=False).table
    later = tracking.smooth_table(raw, meta["class_names"], 0.5)
    np.testing.assert_allclose(later[EXPRESSIONS].to_numpy(float),
                               live[EXPRESSIONS].to_numpy(float), atol=2e-5)
    assert (later["label"] == live["label"]).all()
    assert not np.allclose(raw[EXPRESSIONS].to_numpy(float), live[EXPRESSIONS].to_numpy(float))


# --- reading videos ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["mp4", "avi"])
def test_reader_streams_every_nth_frame_or_a_rate(kind, videos):
    reader = video.VideoReader(videos[kind], every=5)
    frames = list(reader)
    assert [i for i, _, _ in frames] == list(range(0, 50, 5))
    assert [t for _, t, _ in frames] == pytest.approx([i / 25 for i in range(0, 50, 5)])
    # The frame returned is the frame of that index (skipped frames are grabbed, not lost).
    assert [frame_number(f) for _, _, f in frames] == list(range(0, 50, 5))
    assert reader.frames_read == 50 and reader.truncated is None and reader.output_fps == 5
    slots = [i for i, _, _ in video.VideoReader(videos[kind], fps=10)]
    assert slots == [0, 3, 5, 8, 10, 13, 15, 18, 20, 23, 25, 28, 30, 33, 35, 38, 40, 43, 45, 48]
    assert len(list(video.VideoReader(videos[kind], fps=100))) == 50  # above the video's rate


def test_a_cut_mp4_and_a_text_file_are_one_clear_error(videos):
    with pytest.raises(video.VideoError, match=r"cut\.mp4: not a video .*cut short"):
        video.VideoReader(videos["cut_mp4"])
    with pytest.raises(video.VideoError, match=r"notes\.mp4: not a video .*unrecognised"):
        video.VideoReader(videos["text"])
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        video.VideoReader(videos["mp4"].with_name("missing.mp4"))


def test_a_cut_avi_is_read_as_far_as_it_goes_and_says_so(videos):
    reader = video.VideoReader(videos["cut_avi"])
    frames = list(reader)
    assert 5 < len(frames) < 50
    assert reader.truncated and "cut.avi" in reader.truncated
    assert f"{len(frames)} of 50 frames" in reader.truncated


# --- predict_video ----------------------------------------------------------------------------


def test_predict_video_tracks_each_person_and_writes_csv_timeline_and_video(clip, loaded,
                                                                           workdir):
    model, meta = loaded
    path, truth = clip
    out = workdir / "clip_out"
    result = video.predict_video(model, path, meta, out=out, annotate=True, progress=False)
    table = result.table
    assert list(table.columns) == video.table_columns(EXPRESSIONS)
    assert list(pd.read_csv(result.csv).columns) == list(table.columns)
    assert len(pd.read_csv(result.csv)) == len(table)
    assert result.frames_read == result.frames_predicted == 20
    # Both people are found in every frame, and each keeps one id from start to end.
    matched = synth_clip.match_truth(table, truth)
    assert matched["face_id"].notna().all()
    assert matched.groupby("person")["face_id"].nunique().tolist() == [1, 1]
    assert sorted(result.face_ids) == [1, 2]
    assert matched.groupby("person")["face_id"].first().tolist() == [1, 2]  # left to right
    np.testing.assert_allclose(table[EXPRESSIONS].sum(axis=1), 1.0, atol=1e-4)
    assert (table["label"] == table[EXPRESSIONS].idxmax(axis=1)).all()
    assert result.timeline.stat().st_size > 10_000
    annotated = cv2.VideoCapture(str(result.annotated))
    assert int(annotated.get(cv2.CAP_PROP_FRAME_COUNT)) == 20
    ok, frame = annotated.read()
    assert ok and frame.shape[:2] == (180, 320)
    plain = cv2.VideoCapture(str(path)).read()[1]
    assert np.abs(frame.astype(int) - plain).mean() > 3  # boxes and bars drawn


def test_every_n_frames_and_the_progress_bar(clip, loaded, capsys):
    model, meta = loaded
    result = video.predict_video(model, clip[0], meta, every=4, progress=True)
    assert result.frames_read == 20 and result.frames_predicted == 5
    assert sorted(result.table["frame"].unique()) == [0, 4, 8, 12, 16]
    bar = capsys.readouterr().err
    assert "20/20" in bar and "frame/s" in bar


def test_a_clip_without_a_face_gets_a_note_and_empty_rows(videos, loaded):
    model, meta = loaded
    result = video.predict_video(model, videos["wall"], meta, progress=False)
    assert result.face_ids == [] and "no face found in any of the 8 predicted frames" in \
        result.note
    assert len(result.table) == 8 and result.table["label"].isna().all()


def test_tflite_model_predicts_the_video_like_keras(clip, loaded, workdir):
    model, meta = loaded
    tflite = fu.export.to_tflite(model, workdir / "model.tflite")
    runner = fu.export.TFLiteModel(tflite)
    keras_table = video.predict_video(model, clip[0], meta, every=5, progress=False).table
    lite_table = fu.inference.predict_video(runner, clip[0], meta, every=5,
                                            progress=False).table
    np.testing.assert_allclose(lite_table[EXPRESSIONS].to_numpy(float),
                               keras_table[EXPRESSIONS].to_numpy(float), atol=1e-4)
    assert lite_table[["face_id", "x", "y"]].equals(keras_table[["face_id", "x", "y"]])


# --- folders ----------------------------------------------------------------------------------


class CountingModel:
    """A model wrapper that records the batch size of every call."""

    def __init__(self, model):
        self.model, self.batches = model, []

    def __call__(self, x):
        self.batches.append(len(x))
        return self.model(x, training=False)


@pytest.fixture(scope="module")
def photo_tree(workdir):
    """Nested folders: 6 rendered faces, the astronaut, a wall, 2 broken photos, a text file."""
    root = workdir / "photos"
    (root / "party" / "late").mkdir(parents=True)
    for i in range(6):
        face, _ = fu.synth.render_face(expression=EXPRESSIONS[i], identity_seed=i, size=128,
                                       channels=3)
        face = cv2.copyMakeBorder(face, 40, 40, 40, 40, cv2.BORDER_REPLICATE)
        folder = root / "party" / ("late" if i % 2 else "")
        cv2.imwrite(str(folder / f"face{i}.{'PNG' if i == 5 else 'jpg'}"),
                    cv2.cvtColor(face, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(root / "astronaut.webp"),
                cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(root / "wall.png"), np.full((80, 100, 3), 120, np.uint8))
    cut(root / "party" / "face0.jpg", 0.5, "broken.jpg")
    (root / "party" / "late" / "notes.png").write_text("not a picture")
    (root / "readme.txt").write_text("holiday photos")
    return root


def test_predict_folder_accounts_for_every_file_and_batches_faces(photo_tree, loaded, workdir):
    model, meta = loaded
    counting = CountingModel(model)
    result = photo_folder.predict_folder(counting, photo_tree, meta, out=workdir / "folder_out",
                                         batch_size=4, progress=False)
    table = result.table
    assert list(table.columns) == photo_folder.folder_columns(EXPRESSIONS)
    on_disk = pd.read_csv(result.csv)
    assert list(on_disk.columns) == list(table.columns) and len(on_disk) == len(table)
    photos = sorted(str(p) for p in photo_tree.rglob("*") if p.suffix.lower() in
                    (".jpg", ".png", ".webp"))
    assert result.photos == len(photos) == 10
    assert sorted(table["file"].unique()) == photos  # every photo has a row
    assert [Path(p).name for p in result.other_files] == ["readme.txt"]
    broken = dict(result.broken)
    assert sorted(Path(p).name for p in broken) == ["broken.jpg", "notes.png"]
    assert "truncated JPEG" in broken[str(photo_tree / "party" / "broken.jpg")]
    wall = table[table["file"] == str(photo_tree / "wall.png")]
    assert len(wall) == 1 and wall["label"].isna().all() and wall["error"].isna().all()
    faces = table.dropna(subset=["label"])
    assert len(faces) == result.faces >= 5  # dlib finds most of the rendered faces
    assert str(photo_tree / "astronaut.webp") in set(faces["file"])
    without = table[table["label"].isna() & table["error"].isna()]
    assert len(without) == result.without_face >= 1  # the wall at least
    assert faces["file"].nunique() + result.without_face + len(broken) == result.photos
    # Faces went through the model in batches, not one at a time.
    assert sum(counting.batches) == result.faces and max(counting.batches) >= 4
    assert len(counting.batches) <= result.faces // 4 + 1


# --- the camera -------------------------------------------------------------------------------


def test_camera_support_reads_opencvs_build(monkeypatch):
    monkeypatch.setattr(cv2, "getBuildInformation", lambda: "  GUI:     NONE\n")
    assert "opencv-python==" in camera.camera_support()
    monkeypatch.setattr(cv2, "getBuildInformation", lambda: "  GUI:     GTK3\n")
    assert camera.camera_support() is None


def test_a_missing_camera_is_one_clear_error():
    with pytest.raises(video.VideoError, match="camera 97 cannot be opened"):
        camera.open_camera(97)


# --- the command line -------------------------------------------------------------------------


def one_error_line(result, status: int = 1) -> str:
    assert result.returncode == status, (result.returncode, result.stderr[-2000:])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines  # no FFmpeg message, no traceback
    return lines[0]


def test_cli_videos_that_cannot_be_read_are_one_line_each(videos, model_dir, workdir):
    line = one_error_line(run_cli(["predict", videos["text"], "--model", model_dir], workdir))
    assert line.startswith("error: ") and "notes.mp4: not a video" in line
    line = one_error_line(run_cli(["predict", videos["cut_mp4"], "--model", model_dir],
                                  workdir))
    assert "cut.mp4" in line and "cut short" in line


def test_cli_bad_options_are_one_line(model_dir, videos, workdir):
    for args, status, needle in (
            (["--every", "0"], 2, "--every: expected a positive integer, got '0'"),
            (["--fps", "-2"], 2, "--fps: expected a positive number, got '-2'"),
            (["--every", "2", "--fps", "5"], 2, "not allowed with argument"),
            (["--smooth", "-1"], 2, "--smooth: expected a number >= 0, got '-1'"),
            (["--camera", "0"], 1, "either inputs"),
    ):
        line = one_error_line(run_cli(["predict", videos["mp4"], "--model", model_dir, *args],
                                      workdir), status)
        assert needle in line, line
    line = one_error_line(run_cli(["predict", "--model", model_dir], workdir))
    assert "nothing to predict" in line


def test_cli_camera_says_what_is_missing(model_dir, workdir):
    line = one_error_line(run_cli(["predict", "--camera", "0", "--model", model_dir], workdir))
    if camera.camera_support():  # the pinned opencv-python-headless: no windows
        assert "opencv-python-headless" in line and "pip install opencv-python==" in line
    else:  # OpenCV with windows, but no camera 0 on a test machine
        assert "camera 0 cannot be opened" in line


def test_cli_predicts_a_video_a_cut_video_and_a_folder_in_one_run(clip, videos, photo_tree,
                                                                  model_dir, workdir):
    out = workdir / "cli_out"
    result = run_cli(["predict", clip[0], videos["cut_avi"], photo_tree, "--model", model_dir,
                      "--out", out, "--every", "2", "--annotate"], workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_csv(out / "two_people.csv")
    assert list(table.columns) == video.table_columns(EXPRESSIONS)
    assert sorted(table["frame"].unique()) == list(range(0, 20, 2))
    assert sorted(table["face_id"].dropna().unique()) == [1, 2]
    assert (out / "two_people_timeline.png").is_file()
    assert (out / "two_people_annotated.mp4").is_file()
    assert (out / "cut.csv").is_file() and (out / "cut_annotated.mp4").is_file()
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert any("cut.avi" in w and "cut short" in w for w in warnings), warnings
    assert sum("broken.jpg" in w or "notes.png" in w for w in warnings) == 2, warnings
    folder = pd.read_csv(out / "predictions.csv")
    assert folder["file"].nunique() == 10
    stdout = result.stdout
    assert "two_people.mp4: 20 frames" in stdout and "face id(s) 1, 2" in stdout
    assert "10 photos" in stdout and "2 broken" in stdout


def test_annotate_keeps_each_panel_off_the_other_faces_and_panels():
    """Two faces side by side in a video frame: both panels stay visible, no face is covered."""
    probs = np.full(7, 0.05)
    happy, surprise = probs.copy(), probs.copy()
    happy[3] = surprise[5] = 0.7
    frame = np.full((360, 640, 3), 200, np.uint8)
    boxes = [(140, 115, 130, 130, 1.0), (410, 115, 130, 130, 1.0)]
    records = [fu.inference.result_record(b, p, EXPRESSIONS)
               for b, p in zip(boxes, (happy, surprise))]
    picture = fu.inference.annotate(frame, records, EXPRESSIONS)
    for x, y, w, h, _ in boxes:  # the inside of each face box is untouched
        assert (picture[y + 3:y + h - 3, x + 3:x + w - 3] == 200).all()
    beside = np.ones(picture.shape[:2], bool)  # away from the boxes and the labels above them
    beside[:boxes[0][1]] = False
    for x, y, w, h, _ in boxes:
        beside[y - 3:y + h + 3, x - 3:x + w + 3] = False
    for colour in ((214, 39, 40), (140, 86, 75)):  # each panel's bar in its class colour
        assert (np.all(picture == colour, axis=-1) & beside).sum() > 100, colour
