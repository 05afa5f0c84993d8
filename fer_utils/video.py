"""Predict expressions in videos and from a camera: frames streamed, faces tracked and smoothed.

A video is read one frame at a time (`VideoReader`: frames that are not predicted are skipped
without being converted), so memory does not grow with the clip's length. Each predicted
frame goes through the photo pipeline of `fer_utils.inference` (dlib detection, the training
crop, the model), with two additions for time: `tracking.FaceTracker` keeps one id per person,
and `tracking.ProbabilitySmoother` averages each person's probabilities over a fraction of a
second. Faces of many frames go through the model together (`batch_size`). `predict_video`
writes NAME.csv (a row per face and frame, an empty row for a frame without a face),
NAME_timeline.png and, on request, NAME_annotated.mp4.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from . import _stderr_held
from .faces import DEFAULT_MIN_SCORE
from .faceset import DataError
from .tracking import DEFAULT_MAX_GAP, DEFAULT_MIN_IOU, DEFAULT_SMOOTH, FaceTracker, \
    ProbabilitySmoother

# FFmpeg (inside OpenCV) prints its own complaints about damaged files on stderr; the kit says
# what is wrong in one line instead. Read once, when OpenCV opens its first video.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

__all__ = ["VIDEO_EXTENSIONS", "VideoError", "VideoReader", "FramePredictor", "FrameFaces",
           "VideoResult", "predict_video", "table_columns", "annotate_frame", "plot_timeline"]

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv",
                    ".flv", ".3gp", ".ogv", ".ts", ".mts")


class VideoError(DataError):
    """A video that cannot be used (not a video, cut short, no camera); the message says why."""


def _mp4_problem(path: Path) -> str | None:
    """Why an MP4/QuickTime file cannot be opened (cut short, no index), or None if not one."""
    with open(path, "rb") as handle:
        head = handle.read(12)
        if head[4:8] != b"ftyp":
            return None
        size, offset, boxes = path.stat().st_size, 0, []
        while offset + 8 <= size:
            handle.seek(offset)
            header = handle.read(16)
            length, kind = int.from_bytes(header[:4], "big"), header[4:8]
            if length == 1 and len(header) == 16:
                length = int.from_bytes(header[8:16], "big")
            if length < 8 or offset + length > size:
                return (f"an MP4/QuickTime file cut short (its '{kind.decode('latin-1')}' box "
                        f"needs {length:,} bytes from byte {offset:,}; the file has {size:,})")
            boxes.append(kind)
            offset += length
    if b"moov" not in boxes:
        return "an MP4/QuickTime file without its index ('moov' box): cut short or damaged"
    return "an MP4/QuickTime file that OpenCV cannot decode (damaged or an unknown codec)"


class VideoReader:
    """The frames of a video file, streamed; the ones that are not predicted are skipped.

    Iterate to get (frame index, time in s, RGB uint8 frame) for every `every`-th frame, or
    for `fps` frames per second of video. After the loop, `frames_read` counts the frames
    decoded and `truncated` says whether the file ended before its header's frame count.
    """

    def __init__(self, path, every: int = 1, fps: float | None = None):
        """Open `path`; raise VideoError naming it when OpenCV cannot read a frame of it."""
        import cv2

        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"video not found: {self.path}")
        if self.path.is_dir():
            raise VideoError(f"{self.path}: a folder, not a video")
        if int(every) != every or every < 1:
            raise ValueError(f"every must be a positive integer, got {every!r}")
        if fps is not None and not fps > 0:
            raise ValueError(f"fps must be a positive number, got {fps!r}")
        self.every, self.target_fps = int(every), fps
        with _stderr_held(True):
            self.capture = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG)
            ok = self.capture.isOpened() and self.capture.grab()
        if not ok:
            self.capture.release()
            problem = _mp4_problem(self.path) if self.path.stat().st_size else "an empty file"
            raise VideoError(f"{self.path}: not a video OpenCV can read"
                             + (f" ({problem})" if problem else " (unrecognised content)"))
        self._grabbed = True  # the first frame is grabbed already
        self.fps = float(self.capture.get(cv2.CAP_PROP_FPS)) or 25.0
        if not 0 < self.fps < 1000:
            self.fps = 25.0
        count = self.capture.get(cv2.CAP_PROP_FRAME_COUNT)
        self.frame_count = int(count) if 0 < count < 1e9 else None
        self.width = int(self.capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(self.capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.frames_read = 0

    @property
    def output_fps(self) -> float:
        """Predicted frames per second of video."""
        if self.target_fps is not None:
            return min(self.fps, float(self.target_fps))
        return self.fps / self.every

    def wanted(self, index: int) -> bool:
        """Whether frame `index` is predicted (every N-th, or the first of each 1/fps slot)."""
        if self.target_fps is None:
            return index % self.every == 0
        if self.target_fps >= self.fps:
            return True
        slot = int(np.floor(index * self.target_fps / self.fps + 1e-9))
        return index == 0 or slot != int(np.floor((index - 1) * self.target_fps / self.fps
                                                  + 1e-9))

    def __iter__(self):
        """Yield (index, time, RGB frame) of the frames to predict."""
        import cv2

        index = 0
        while True:
            if not self._grabbed and not self.capture.grab():
                break
            self._grabbed = False
            self.frames_read += 1
            if self.wanted(index):
                ok, frame = self.capture.retrieve()
                if not ok:
                    break
                yield index, index / self.fps, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            index += 1
        self.close()

    @property
    def truncated(self) -> str | None:
        """Why the file looks cut short (fewer frames than its header says), else None."""
        if self.frame_count is None:
            return None
        missing = self.frame_count - self.frames_read
        if missing > max(1, 0.01 * self.frame_count):
            return (f"{self.path}: cut short or damaged: {self.frames_read:,} of "
                    f"{self.frame_count:,} frames could be read")
        return None

    def close(self) -> None:
        """Release the file."""
        self.capture.release()


@dataclasses.dataclass
class FrameFaces:
    """The faces of one predicted frame: ids, boxes, smoothed probabilities, the frame."""

    index: int
    time: float
    ids: list
    boxes: list
    probabilities: np.ndarray  # faces × classes, smoothed
    frame: np.ndarray | None = None

    def records(self, class_names) -> list[dict]:
        """One `inference.result_record`-style dict per face (for `inference.annotate`)."""
        from .inference import result_record

        out = []
        for face_id, box, probs in zip(self.ids, self.boxes, self.probabilities):
            record = result_record(box, probs, class_names)
            record["face_id"] = face_id
            out.append(record)
        return out


class FramePredictor:
    """detect → track → crop like training → predict (in batches) → smooth, frame by frame."""

    def __init__(self, model, meta: dict, smooth: float = DEFAULT_SMOOTH,
                 min_score: float = DEFAULT_MIN_SCORE, detector: str = "hog",
                 upsample: int | None = None, batch_size: int = 64,
                 min_iou: float = DEFAULT_MIN_IOU, max_gap: float = DEFAULT_MAX_GAP):
        """Set up the pipeline; `batch_size` faces (at most) wait for one model call."""
        if int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.model, self.meta = model, meta
        self.class_names = list(meta["class_names"])
        self.min_score, self.detector, self.upsample = min_score, detector, upsample
        self.batch_size = int(batch_size)
        self.tracker = FaceTracker(min_iou=min_iou, max_gap=max_gap)
        self.smoother = ProbabilitySmoother(smooth)
        self.pending: list = []  # (index, time, frame or None, ids, boxes, crops)

    def add(self, index: int, time: float, frame: np.ndarray, keep_frame: bool = False) -> list:
        """Detect and crop the faces of a frame; return the frames whose prediction is done."""
        from . import attention
        from .inference import crop_faces

        boxes = [b for b in attention.detect_faces(frame, upsample=self.upsample,
                                                   detector=self.detector)
                 if b[4] >= self.min_score]
        crops, boxes = crop_faces(frame, faces=boxes, convention=self.meta["crop"])
        ids = self.tracker.update(boxes, time)
        self.smoother.forget(self.tracker.forgotten)
        self.pending.append((index, time, frame if keep_frame else None, ids, boxes, crops))
        if sum(len(p[5]) for p in self.pending) >= self.batch_size \
                or len(self.pending) >= self.batch_size:
            return self.flush()
        return []

    def flush(self) -> list[FrameFaces]:
        """Predict every waiting face in one batch; return the frames, in order."""
        from .inference import predict_faces

        if not self.pending:
            return []
        crops = [p[5] for p in self.pending if len(p[5])]
        probs = predict_faces(self.model, np.concatenate(crops), self.meta) if crops else \
            np.zeros((0, len(self.class_names)), np.float32)
        done, start = [], 0
        for index, time, frame, ids, boxes, frame_crops in self.pending:
            own = probs[start:start + len(frame_crops)]
            start += len(frame_crops)
            smoothed = np.array([self.smoother.update(i, p, time) for i, p in zip(ids, own)])
            done.append(FrameFaces(index, time, ids, boxes,
                                   smoothed.reshape(len(ids), len(self.class_names)), frame))
        self.pending = []
        return done


def table_columns(class_names) -> list[str]:
    """The columns of a video prediction table (NAME.csv)."""
    return ["frame", "time", "face_id", "x", "y", "w", "h", "score", "label", *class_names]


def _rows(result: FrameFaces, class_names) -> list[list]:
    """The table rows of one frame: one per face, or one empty row when it has none."""
    if not result.ids:
        return [[result.index, round(result.time, 4), *([None] * (7 + len(class_names)))]]
    rows = []
    for face_id, box, probs in zip(result.ids, result.boxes, result.probabilities):
        rows.append([result.index, round(result.time, 4), face_id, *(int(v) for v in box[:4]),
                     round(float(box[4]), 4), class_names[int(np.argmax(probs))],
                     *(round(float(p), 5) for p in probs)])
    return rows


def _fit_frame(picture: np.ndarray, height: int, width: int) -> np.ndarray:
    """Shrink an annotated picture (which may have grown for the bars) back to the frame size."""
    import cv2

    if picture.shape[:2] == (height, width):
        return picture
    scale = min(height / picture.shape[0], width / picture.shape[1])
    small = cv2.resize(picture, (int(picture.shape[1] * scale), int(picture.shape[0] * scale)),
                       interpolation=cv2.INTER_AREA)
    canvas = np.full((height, width, 3), 255, np.uint8)
    canvas[:small.shape[0], :small.shape[1]] = small
    return canvas


@dataclasses.dataclass
class VideoResult:
    """What `predict_video` found and wrote."""

    source: Path
    table: object  # pandas DataFrame, `table_columns(class_names)`
    class_names: list
    fps: float  # of the video
    frames_read: int
    frames_predicted: int
    seconds: float  # wall-clock seconds of the prediction
    truncated: str | None = None
    csv: Path | None = None
    timeline: Path | None = None
    annotated: Path | None = None

    @property
    def face_ids(self) -> list:
        """The ids of the faces seen, most frames first."""
        counts = self.table["face_id"].dropna().astype(int).value_counts()
        return [int(i) for i in counts.index]

    @property
    def note(self) -> str | None:
        """A note when no face was found in any predicted frame."""
        if self.face_ids:
            return None
        return (f"no face found in any of the {self.frames_predicted:,} predicted frames "
                f"(dlib's HOG detector finds frontal faces of about 40 px or more)")


def predict_video(model, source, meta: dict, out=None, every: int = 1, fps: float | None = None,
                  smooth: float = DEFAULT_SMOOTH, annotate: bool = False,
                  min_score: float = DEFAULT_MIN_SCORE, detector: str = "hog",
                  upsample: int | None = None, batch_size: int = 64, progress: bool = True,
                  name: str | None = None) -> VideoResult:
    """Predict the expression of every face in a video, frame after frame.

    Args:
        model: a Keras model or a callable batch → probabilities (`export.TFLiteModel`).
        source: the video file (any file OpenCV reads: mp4, avi, mov, mkv, webm, ...).
        meta: the model's meta dict (`inference.load_model`).
        out: folder for NAME.csv, NAME_timeline.png (and NAME_annotated.mp4); None: no files.
        every: predict every N-th frame.
        fps: or predict this many frames per second of video (overrides `every`).
        smooth: time constant in seconds of the probability smoothing (0: off).
        annotate: also write NAME_annotated.mp4 (boxes, labels, bars) of the predicted frames.
        min_score, detector, upsample: face detection (see `attention.detect_faces`).
        batch_size: faces per model call.
        progress: show a progress bar (frames read and their rate).
        name: file stem of the outputs (default: the video's).

    Returns:
        A `VideoResult`; its `truncated` names a file that ended early (the frames read are
        predicted all the same).
    """
    import time as clock

    import cv2
    import pandas as pd
    from tqdm.auto import tqdm

    reader = VideoReader(source, every=every, fps=fps)
    class_names = list(meta["class_names"])
    predictor = FramePredictor(model, meta, smooth=smooth, min_score=min_score,
                               detector=detector, upsample=upsample, batch_size=batch_size)
    stem = name or reader.path.stem
    paths = {}
    writer = None
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"csv": out / f"{stem}.csv", "timeline": out / f"{stem}_timeline.png"}
        paths["csv"].write_text(",".join(table_columns(class_names)) + "\n")
        if annotate:
            paths["annotated"] = out / f"{stem}_annotated.mp4"
            writer = cv2.VideoWriter(str(paths["annotated"]), cv2.VideoWriter_fourcc(*"mp4v"),
                                     reader.output_fps, (reader.width, reader.height))
            if not writer.isOpened():
                reader.close()
                raise VideoError(f"OpenCV cannot write {paths['annotated']}")
    chunks, predicted = [], 0
    started = clock.perf_counter()
    bar = tqdm(total=reader.frame_count, unit="frame", disable=not progress, leave=progress,
               desc=reader.path.name, dynamic_ncols=True)

    def finish(done):
        nonlocal predicted
        rows = [row for result in done for row in _rows(result, class_names)]
        if not rows:
            return
        predicted += len(done)
        chunk = pd.DataFrame(rows, columns=table_columns(class_names)).astype(
            {column: "Int64" for column in ("face_id", "x", "y", "w", "h")})
        chunks.append(chunk)
        if "csv" in paths:
            chunk.to_csv(paths["csv"], mode="a", header=False, index=False)
        for result in done if writer is not None else []:
            picture = _fit_frame(annotate_frame(result, class_names), reader.height, reader.width)
            writer.write(cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))

    try:
        last = 0
        for index, time, frame in reader:
            finish(predictor.add(index, time, frame, keep_frame=writer is not None))
            bar.update(reader.frames_read - last)
            last = reader.frames_read
        finish(predictor.flush())
        bar.update(reader.frames_read - last)
    finally:
        bar.close()
        reader.close()
        if writer is not None:
            writer.release()
    table = pd.concat(chunks, ignore_index=True) if chunks else \
        pd.DataFrame(columns=table_columns(class_names))
    result = VideoResult(source=reader.path, table=table, class_names=class_names,
                         fps=reader.fps, frames_read=reader.frames_read,
                         frames_predicted=predicted, seconds=clock.perf_counter() - started,
                         truncated=reader.truncated, csv=paths.get("csv"),
                         annotated=paths.get("annotated"))
    if "timeline" in paths:
        import matplotlib.pyplot as plt

        figure = plot_timeline(table, class_names, title=reader.path.name)
        figure.savefig(paths["timeline"], dpi=100)
        plt.close(figure)
        result.timeline = paths["timeline"]
    return result


def annotate_frame(result: FrameFaces, class_names) -> np.ndarray:
    """The frame with each face's id, box, label and bars (`inference.annotate`)."""
    import cv2

    from .inference import annotate

    records = result.records(class_names)
    picture = annotate(result.frame, records, class_names)
    for record in records:
        x, y, w, h = record["box"]
        cv2.putText(picture, f"#{record['face_id']}", (x + 2, y + h - 4),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return picture


def plot_timeline(table, class_names, truth=None, title: str = "", max_faces: int = 6):
    """The probability of each class over time, one panel per face id (most frames first).

    Args:
        table: a `predict_video` table.
        class_names: the model's classes (the table's probability columns).
        truth: optional {face id: DataFrame with "time" and "label"} drawn as a strip above
            each panel (the true label over time).
        title: the figure's title.
        max_faces: panels at most (the faces seen longest); the others are named below.

    Returns:
        The matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    faces = table["face_id"].dropna().astype(int).value_counts()
    shown = [int(i) for i in faces.index[:max_faces]]
    rows = max(1, len(shown))
    figure, axes = plt.subplots(rows, 1, figsize=(10, 2.3 * rows + 0.6), sharex=True,
                                squeeze=False)
    colours = plt.get_cmap("tab10")
    end = float(table["time"].max()) if len(table) else 1.0
    for ax, face_id in zip(axes[:, 0], shown):
        rows_of = table[table["face_id"] == face_id]
        for k, name in enumerate(class_names):
            ax.plot(rows_of["time"], rows_of[name], lw=1.3, color=colours(k % 10), label=name)
        if truth is not None and face_id in truth:
            true = truth[face_id]
            for k, name in enumerate(class_names):
                on = (true["label"] == name).to_numpy()
                ax.fill_between(true["time"], 1.04, 1.12, where=on, color=colours(k % 10),
                                step="mid", lw=0)
            ax.text(end, 1.08, " truth", va="center", fontsize=8)
        ax.set_ylim(0, 1.14 if truth is not None else 1.02)
        ax.set_ylabel(f"face {face_id}\nprobability")
        ax.grid(alpha=0.3)
    if not shown:
        axes[0, 0].text(0.5, 0.5, "no face found", ha="center", va="center",
                        transform=axes[0, 0].transAxes)
    axes[-1, 0].set_xlabel("time (s)")
    axes[0, 0].legend(ncol=min(7, len(class_names)), fontsize=8, loc="lower left",
                      bbox_to_anchor=(0, 1.0 if truth is None else 1.12), frameon=False)
    others = len(faces) - len(shown)
    figure.suptitle(title + (f"  ({others} short-lived face id(s) not shown)" if others > 0
                             else ""), fontsize=10)
    figure.tight_layout()
    return figure
