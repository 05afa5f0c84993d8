"""`predict`: pictures, videos, folders and the camera: faces → crops like training → labels."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .common import check_output_folder, quiet_tensorflow
from .parser import CliError

__all__ = ["cmd_predict"]


def _load_any_model(path: Path):
    """(model, meta) for a .keras file, a train --out folder, or a .tflite file."""
    from .. import inference

    return inference.load_any_model(path)


def _output_names(paths, out: Path) -> list[str]:
    """A unique file stem in `out` per input picture or video (photo.jpg, photo_2.jpg, ...)."""
    used, names = set(), []
    for path in paths:
        stem = name = path.stem or "image"
        k = 1
        while name in used:  # also skips a name another input already has (a, a.png, a_2)
            k += 1
            name = f"{stem}_{k}"
        used.add(name)
        names.append(name)
    return names


def _check_inputs(pictures, videos) -> None:
    """Read every picture and open every video before TensorFlow loads: one `error:` line per
    bad file, then stop."""
    from ..data import read_image
    from ..video import VideoReader

    def open_video(path):
        VideoReader(path).close()

    problems = []
    for path, check in [(p, read_image) for p in pictures] + [(v, open_video) for v in videos]:
        try:
            check(path)
        except (FileNotFoundError, ValueError) as err:  # DataError and VideoError included
            problems.append(str(err))
    for line in problems[:-1]:
        print(f"error: {line}", file=sys.stderr)
    if problems:
        raise CliError(problems[-1])


def _no_face_note(args) -> str:
    """What to say when a photo has no face the detector trusts."""
    hint = "try --min-score 0" + (" or --detector cnn (turned or partly hidden faces)"
                                  if args.detector == "hog" else "")
    size = "frontal faces of about 40 px or more" if args.detector == "hog" else \
        "faces of about 80 px or more"
    return (f"no face found with a detector score >= {args.min_score} (dlib's {args.detector} "
            f"detector finds {size}; {hint})")


def _predict_one(model, meta, path: Path, stem: str, args, out: Path) -> str:
    """Predict one photo, write NAME.json and NAME_annotated.png; return the line to print."""
    import cv2

    from .. import inference
    from ..data import read_image

    image = read_image(path, channels=3)
    crops, boxes = inference.crop_faces(image, convention=meta["crop"], min_score=args.min_score,
                                        detector=args.detector)
    probs = inference.predict_faces(model, crops, meta)
    results = [inference.result_record(box, p, meta["class_names"])
               for box, p in zip(boxes, probs)]
    record = {"image": str(path), "model": str(args.model), "detector": args.detector,
              "faces": results}
    if not results:
        record["note"] = _no_face_note(args)
    if args.save_crops:
        for k, crop in enumerate(crops):
            picture = crop if crop.shape[-1] == 1 else cv2.cvtColor(crop, cv2.COLOR_RGB2BGR)
            cv2.imwrite(str(out / f"{stem}_face{k}.png"), picture)
    json_path = out / f"{stem}.json"
    json_path.write_text(json.dumps(record, indent=1))
    picture = inference.annotate(image, results, meta["class_names"])
    picture_path = out / f"{stem}_annotated.png"
    if not cv2.imwrite(str(picture_path), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR)):
        raise CliError(f"cannot write {picture_path}")
    found = ", ".join(f"{r['label']} {r['probabilities'][r['label']]:.2f}" for r in results)
    what = f"{len(results)} face(s): {found}" if results else record["note"]
    return f"{path}: {what} -> {json_path}, {picture_path.name}"


def _sort_inputs(paths) -> tuple[list, list, list]:
    """(pictures, videos, folders) among the inputs: folders, then by extension, then content."""
    from ..data.readers import IMAGE_EXTENSIONS, sniff
    from ..video import VIDEO_EXTENSIONS

    pictures, videos, folders = [], [], []
    for path in paths:
        suffix = path.suffix.lower()
        if path.is_dir():
            folders.append(path)
        elif suffix in IMAGE_EXTENSIONS:
            pictures.append(path)
        elif suffix in VIDEO_EXTENSIONS:
            videos.append(path)
        elif not path.exists():
            raise FileNotFoundError(f"input not found: {path}")
        else:  # an unknown extension: a picture if it looks like one, else try it as a video
            with open(path, "rb") as handle:
                (pictures if sniff(handle.read(16)) else videos).append(path)
    return pictures, videos, folders


def _video_line(result, out: Path) -> str:
    """What `predict` prints for a video."""
    files = ", ".join(p.name for p in (result.timeline, result.annotated) if p is not None)
    rate = result.frames_predicted / max(result.seconds, 1e-9)
    ids = sorted(result.face_ids)
    found = (f"face id(s) {', '.join(map(str, ids[:10]))}"
             + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")) if ids else result.note
    return (f"{result.source}: {result.frames_read:,} frames ({result.frames_read / result.fps:.1f}"
            f" s at {result.fps:g} fps), {result.frames_predicted:,} predicted at {rate:.1f} "
            f"frames/s; {found} -> {result.csv}, {files}")


def _predict_videos(model, meta, paths, stems, args, out: Path) -> None:
    """Predict each video; print a line per video and a warning for one cut short."""
    from ..video import predict_video

    for path, stem in zip(paths, stems):
        result = predict_video(model, path, meta, out=out, every=args.every, fps=args.fps,
                               smooth=args.smooth, annotate=args.annotate,
                               min_score=args.min_score, detector=args.detector,
                               upsample=args.upsample, progress=sys.stderr.isatty(),
                               name=stem)
        if result.truncated:
            print(f"warning: {result.truncated}; the frames read were predicted",
                  file=sys.stderr)
        print(_video_line(result, out), flush=True)


def _predict_folders(model, meta, folders, args, out: Path) -> None:
    """Predict every photo of the folders into one predictions.csv; list the broken files."""
    from ..photo_folder import predict_folder

    result = predict_folder(model, folders, meta, out=out, min_score=args.min_score,
                            detector=args.detector, upsample=args.upsample,
                            progress=sys.stderr.isatty())
    for path, reason in result.broken[:20]:
        print(f"warning: {path}: {reason} (a row with this error is in the CSV)",
              file=sys.stderr)
    if len(result.broken) > 20:
        print(f"warning: {len(result.broken) - 20} more broken photos: see the CSV's error "
              f"column", file=sys.stderr)
    if result.other_files:
        names = ", ".join(str(p) for p in result.other_files[:3])
        more = f" and {len(result.other_files) - 3} more" if len(result.other_files) > 3 else ""
        print(f"note: {len(result.other_files)} file(s) without a picture extension were not "
              f"read: {names}{more}", file=sys.stderr)
    rate = result.photos / max(result.seconds, 1e-9)
    print(f"{', '.join(map(str, folders))}: {result.photos:,} photos, {result.faces:,} face(s), "
          f"{result.without_face:,} without a face, {len(result.broken):,} broken "
          f"({rate:.1f} photos/s) -> {result.csv}", flush=True)


def _predict_camera(args) -> int:
    """`predict --camera N`: check OpenCV's windows and the camera, then the live window."""
    from ..camera import camera_support, open_camera, predict_camera
    from ..video import VideoError

    problem = camera_support()
    if problem:
        raise CliError(f"--camera: {problem}")
    open_camera(args.camera).release()
    quiet_tensorflow()
    model, meta = _load_any_model(Path(args.model))
    try:
        shown = predict_camera(model, meta, camera=args.camera, smooth=args.smooth,
                               min_score=args.min_score, detector=args.detector,
                               upsample=args.upsample)
    except VideoError as err:
        raise CliError(str(err)) from None
    print(f"camera {args.camera}: {shown:,} frames shown")
    return 0


def cmd_predict(args) -> int:
    """`predict`: faces → crops like training → probabilities, for pictures, videos, folders."""
    if args.camera is not None:
        if args.inputs:
            raise CliError("give either inputs (pictures, videos, folders) or --camera, "
                           "not both")
        return _predict_camera(args)
    if not args.inputs:
        raise CliError("nothing to predict: give pictures, videos or folders, or --camera N")
    pictures, videos, folders = _sort_inputs(args.inputs)
    # Check every picture and video before loading TensorFlow: bad input fails in a second.
    _check_inputs(pictures, videos)
    model_path = Path(args.model)
    if not model_path.exists():
        raise FileNotFoundError(f"model not found: {model_path}")
    out = check_output_folder(args.out)
    quiet_tensorflow()
    model, meta = _load_any_model(model_path)
    if "note" in meta:
        print(f"warning: {meta['note']}", file=sys.stderr)
    stems = _output_names(pictures + videos, out)
    for path, stem in zip(pictures, stems):
        print(_predict_one(model, meta, path, stem, args, out), flush=True)
    _predict_videos(model, meta, videos, stems[len(pictures):], args, out)
    if folders:
        _predict_folders(model, meta, folders, args, out)
    return 0
