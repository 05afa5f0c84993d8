"""A live camera: the video pipeline (detect, crop like training, track, smooth) in a window.

It needs a camera and an OpenCV that opens windows, so it runs outside Docker only: the
container has no camera and no display, and the kit pins `opencv-python-headless`, which has
no windows. `camera_support` says what to install instead, in one line.
"""

from __future__ import annotations

from . import _stderr_held
from .faces import DEFAULT_MIN_SCORE
from .tracking import DEFAULT_SMOOTH
from .video import FramePredictor, VideoError, annotate_frame

__all__ = ["HEADLESS_HINT", "camera_support", "open_camera", "predict_camera"]

HEADLESS_HINT = ("this OpenCV has no window support (opencv-python-headless, the package the "
                 "kit pins for Docker); for --camera, outside Docker, run `pip uninstall -y "
                 "opencv-python-headless && pip install opencv-python==5.0.0.93` (the Docker "
                 "container has no camera and no display)")


def camera_support() -> str | None:
    """None when OpenCV can show windows, else a one-line reason with what to install."""
    import cv2

    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GUI:") and line.split(":", 1)[1].strip().upper() == "NONE":
            return HEADLESS_HINT
    return None


def open_camera(camera: int = 0):
    """An opened cv2.VideoCapture of camera `camera`, or a VideoError saying why not."""
    import cv2

    with _stderr_held(True):
        capture = cv2.VideoCapture(int(camera))
        ok = capture.isOpened() and capture.grab()
    if not ok:
        capture.release()
        raise VideoError(f"camera {camera} cannot be opened: no camera with that number, or "
                         f"another program uses it (inside Docker there is no camera)")
    return capture


def predict_camera(model, meta: dict, camera: int = 0, smooth: float = DEFAULT_SMOOTH,
                   min_score: float = DEFAULT_MIN_SCORE, detector: str = "hog",
                   upsample: int | None = None, window: str = "fer_utils: q or Esc to stop"
                   ) -> int:
    """Show a live window with each face's box, label and bars; q or Esc stops it.

    The same pipeline as `predict_video` (detection, training crop, tracking, smoothing), one
    frame at a time. Needs OpenCV with window support and a camera (not inside Docker).

    Returns:
        The number of frames shown.
    """
    import cv2

    problem = camera_support()
    if problem:
        raise VideoError(problem)
    capture = open_camera(camera)
    predictor = FramePredictor(model, meta, smooth=smooth, min_score=min_score,
                               detector=detector, upsample=upsample, batch_size=1)
    class_names = list(meta["class_names"])
    shown = 0
    start = cv2.getTickCount()
    try:
        cv2.namedWindow(window, cv2.WINDOW_NORMAL)
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            seconds = (cv2.getTickCount() - start) / cv2.getTickFrequency()
            rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            for result in predictor.add(shown, seconds, rgb, keep_frame=True):
                cv2.imshow(window, cv2.cvtColor(annotate_frame(result, class_names),
                                                cv2.COLOR_RGB2BGR))
                shown += 1
            key = cv2.waitKey(1) & 0xFF
            if key in (ord("q"), 27) or cv2.getWindowProperty(window, cv2.WND_PROP_VISIBLE) < 1:
                break
    except cv2.error as error:
        raise VideoError(f"cannot show the camera window: {str(error).strip()}") from None
    finally:
        capture.release()
        cv2.destroyAllWindows()
    return shown
