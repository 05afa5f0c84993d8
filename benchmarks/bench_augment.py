"""Throughput of the 30× expansion: fer_utils.augment.expand_30x vs albumentations.

For each input image all rows make the same 30 variants (5 pixel ops × 6 poses, landmarks moved
too, keypoints in "xy" format, border pixels replicated):

1. albumentations the way a learner would write it: 30 fixed Compose pipelines of pixel op +
   Affine, so every pixel op runs 6 times per image;
2. albumentations doing the same work as the kit: each pixel op ONCE per image (5 Compose
   pipelines), then the 6 Affine pipelines on each result;
3. the kit's `expand_30x` (each pixel op once per image, then the 6 warps).

Prints `... N img/s` lines (augmented images per second) and the kit's ratio to each
albumentations row, for 96 px RGB and 48 px grey.

Usage: python benchmarks/bench_augment.py [--images N] [--repeats R] [--threads T]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # offline: no version check
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from fer_utils import augment  # noqa: E402


def make_faces(n: int, size: int, channels: int, seed: int = 0):
    """Smooth random uint8 images with 68 random landmarks each (speed ignores content)."""
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, (n, size, size, channels), dtype=np.uint8)
    images = np.stack([cv2.GaussianBlur(im, (5, 5), 1.5).reshape(im.shape) for im in raw])
    landmarks = rng.uniform(0.2 * size, 0.8 * size, (n, 68, 2)).astype(np.float32)
    return images, landmarks


def _pixel_ops(channels: int) -> list:
    """The five pixel operations of the source as albumentations transforms."""
    import albumentations as A

    colour = (A.ColorJitter(brightness=(1.1, 1.1), contrast=(1.25, 1.25), saturation=(1, 1),
                            hue=(0, 0), p=1.0) if channels == 3 else
              A.RandomBrightnessContrast(brightness_limit=(0.05, 0.05), contrast_limit=(0.25, 0.25),
                                         p=1.0))
    return [
        A.Blur(blur_limit=(3, 3), p=1.0),
        A.UnsharpMask(blur_limit=(7, 7), sigma_limit=(1.0, 1.0), alpha=(0.5, 0.5), p=1.0),
        A.MotionBlur(blur_limit=(5, 5), p=1.0),
        A.GaussNoise(std_range=(0.04, 0.04), p=1.0),
        colour,
    ]


def _affine(pose, size: int):
    """One pose of the kit's grid as an albumentations Affine (replicated borders)."""
    import albumentations as A

    return A.Affine(rotate=(pose.angle, pose.angle),
                    translate_px={"x": (round(pose.shift_x * size),) * 2,
                                  "y": (round(pose.shift_y * size),) * 2},
                    scale=(1.0, 1.0), border_mode=cv2.BORDER_REPLICATE, p=1.0)


def albumentations_pipelines(size: int, channels: int):
    """The 30 fixed pipelines (pixel op, then the pose as an Affine) a learner would write.

    Borders are replicated: with reflected borders albumentations 2 also returns the 8 mirror
    images of every keypoint (68 -> 612 points) and runs about 1.8x slower, so replicate is its
    fastest fair setting; the kit is timed with the same border mode.
    """
    import albumentations as A

    keypoints = A.KeypointParams(format="xy", remove_invisible=False)
    return [A.Compose([op, _affine(pose, size)], seed=0, keypoint_params=keypoints)
            for op in _pixel_ops(channels) for pose in augment.POSES]


def albumentations_split_pipelines(size: int, channels: int):
    """(5 pixel-op pipelines, 6 pose pipelines): each pixel op once, then every pose on it."""
    import albumentations as A

    keypoints = A.KeypointParams(format="xy", remove_invisible=False)
    pixel = [A.Compose([op], seed=0) for op in _pixel_ops(channels)]
    poses = [A.Compose([_affine(pose, size)], seed=0, keypoint_params=keypoints)
             for pose in augment.POSES]
    return pixel, poses


def run_albumentations(images, landmarks, pipelines):
    """Make the 30 variants of every image with albumentations; return (images, keypoints)."""
    out_images, out_points = [], []
    for image, points in zip(images, landmarks):
        image = image if image.shape[-1] == 3 else image[..., 0]
        for pipeline in pipelines:
            result = pipeline(image=image, keypoints=points)
            out_images.append(result["image"])
            out_points.append(result["keypoints"])
    return out_images, out_points


def run_albumentations_split(images, landmarks, pipelines):
    """The 30 variants with each pixel op run once per image, then the 6 poses on its result."""
    pixel, poses = pipelines
    out_images, out_points = [], []
    for image, points in zip(images, landmarks):
        image = image if image.shape[-1] == 3 else image[..., 0]
        for op in pixel:
            changed = op(image=image)["image"]
            for pose in poses:
                result = pose(image=changed, keypoints=points)
                out_images.append(result["image"])
                out_points.append(result["keypoints"])
    return out_images, out_points


def best_rate(fn, n_out: int, repeats: int) -> float:
    """Best-of-`repeats` throughput of fn() in output images per second."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return n_out / best


def main(argv=None) -> int:
    """Run both benchmarks and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100, help="input images per case")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many timed runs")
    parser.add_argument("--threads", type=int, default=None,
                        help="cv2.setNumThreads for both (default: OpenCV's own choice)")
    args = parser.parse_args(argv)
    if args.images < 1 or args.repeats < 1:
        parser.error(f"--images and --repeats must be >= 1, got {args.images}, {args.repeats}")
    if args.threads is not None:
        cv2.setNumThreads(args.threads)
    import albumentations

    print(f"albumentations {albumentations.__version__}, OpenCV {cv2.__version__}, "
          f"{os.cpu_count()} CPUs, {args.images} input images × 30 variants, "
          f"best of {args.repeats}")
    ratios = {"30 pipelines": [], "pixel op once": []}
    for size, channels, label in ((96, 3, "96 px RGB"), (48, 1, "48 px grey")):
        images, landmarks = make_faces(args.images, size, channels)
        pipelines = albumentations_pipelines(size, channels)
        split = albumentations_split_pipelines(size, channels)
        n_out = len(images) * augment.VARIANTS_PER_IMAGE
        run_albumentations(images[:2], landmarks[:2], pipelines)  # warm-up
        run_albumentations_split(images[:2], landmarks[:2], split)
        augment.expand_30x(images[:2], landmarks[:2])
        album = best_rate(lambda: run_albumentations(images, landmarks, pipelines), n_out,
                          args.repeats)
        album_once = best_rate(lambda: run_albumentations_split(images, landmarks, split), n_out,
                               args.repeats)
        kit = best_rate(lambda: augment.expand_30x(images, landmarks, border="replicate"), n_out,
                        args.repeats)
        ratios["30 pipelines"].append(kit / album)
        ratios["pixel op once"].append(kit / album_once)
        print(f"albumentations, 30 pipelines (each pixel op 6x) {label}: {album:,.0f} img/s")
        print(f"albumentations, each pixel op once, then 6 affines {label}: "
              f"{album_once:,.0f} img/s")
        print(f"fer_utils.augment.expand_30x {label}: {kit:,.0f} img/s  "
              f"({kit / album:.1f}x the 30 pipelines, {kit / album_once:.1f}x pixel op once)")
    print(f"kit vs albumentations as a learner writes it: at least "
          f"{min(ratios['30 pipelines']):.1f}x; vs albumentations doing the same work (each pixel "
          f"op once): at least {min(ratios['pixel op once']):.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
