"""Write synthetic scenes to disk as a BDD100K-style dataset, or as a driving video."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
from pathlib import Path

import cv2
from tqdm import tqdm

from edge_mtl.bench.mot import MotBoxes, mot_rows, write_mot
from edge_mtl.data.bdd import frame_entry
from edge_mtl.data.labels import DET_CLASSES
from edge_mtl.data.masks import drivable_to_bdd, lanes_to_bdd
from edge_mtl.data.synthetic import GENERATOR_VERSION, Scene, render_clip, render_scene
from edge_mtl.runtime.errors import InputError
from edge_mtl.runtime.files import check_writable, check_writable_dir, write_json_atomic

# Where write_synthetic puts a scene's masks, relative to the dataset folder (BDD100K's layout
# without the split folder): <dir>/<stem>.png, BDD100K's PNG values.
MASK_DIRS = {"drivable": Path("labels/drivable/masks"), "lanes": Path("labels/lane/masks")}
STAMP = "synthetic.json"  # what write_synthetic rendered: generator version, seed, n, frame size


def write_masks(scene: Scene, paths: dict[str, Path]) -> None:
    """Write ``scene``'s masks as PNGs in BDD100K's values: ``paths["drivable"]`` (0 direct,
    1 alternative, 2 background) and ``paths["lanes"]`` (255 background, single white lane
    pixels with the dashed style bit on dashes)."""
    pngs = {
        "drivable": drivable_to_bdd(scene.masks["drivable"]),
        "lanes": lanes_to_bdd(scene.masks["lanes"], scene.lane_dashed),
    }
    for kind, png in pngs.items():
        if not cv2.imwrite(str(paths[kind]), png):
            raise InputError(f"{paths[kind]}: cannot write the mask PNG")


def _render_one(job: tuple[int, tuple[int, int], str]) -> dict:
    seed, hw, image_dir = job
    scene = render_scene(seed, hw)
    name = f"{seed:08d}.jpg"
    ok, buf = cv2.imencode(".jpg", scene.image, [cv2.IMWRITE_JPEG_QUALITY, 93])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    Path(image_dir, name).write_bytes(buf.tobytes())
    root = Path(image_dir).parent
    write_masks(scene, {k: root / d / f"{seed:08d}.png" for k, d in MASK_DIRS.items()})
    attrs = dict(scene.attributes, curvature=round(scene.curvature, 5))
    return frame_entry(name, scene.boxes, scene.classes, DET_CLASSES, attrs)


def write_synthetic(
    out: str | Path,
    n: int,
    seed: int = 0,
    hw: tuple[int, int] = (360, 640),
    workers: int | None = None,
    progress: bool = True,
    replace: bool = False,
) -> Path:
    """Render scenes ``seed .. seed+n-1`` into ``out/images``, their masks into
    ``out/labels/drivable/masks`` and ``out/labels/lane/masks`` (:data:`MASK_DIRS`: one
    ``<stem>.png`` per image, BDD100K values), ``out/synthetic.json`` (generator version, seed,
    n, frame size: :func:`stale_reason`) and ``out/labels.json``.

    labels.json is written last and atomically: a directory that has it is complete.
    ``replace``: when ``out`` already has images/ or labels.json, render into a temporary folder
    inside ``out`` and then swap the set in, so no image or mask of the earlier set stays beside
    the new labels.json and a render that fails keeps the earlier set. Other files in ``out``
    stay.
    """
    out = Path(out)
    if n < 1:
        raise InputError(f"--n must be at least 1, got {n}")
    check_writable_dir(out)  # labels.json goes here
    swap = replace and ((out / "images").exists() or (out / "labels.json").exists())
    target = out / f".synth.tmp{os.getpid()}" if swap else out
    try:
        frames = _render_all(target, n, seed, hw, workers, progress, label=out)
        stamp = {"generator_version": GENERATOR_VERSION, "seed": seed, "n": n, "frame_hw": list(hw)}
        write_json_atomic(target / STAMP, stamp)
        write_json_atomic(target / "labels.json", frames)
    except BaseException:
        if swap:
            shutil.rmtree(target, ignore_errors=True)
        raise
    if swap:
        _swap_in(target, out)
    return out


def stale_reason(root: str | Path, seed: int, n: int, hw: tuple[int, int]) -> str | None:
    """Why the rendered set in ``root`` is not the one ``seed``, ``n``, ``hw`` would render now
    (None when it is): its ``synthetic.json`` stamp is missing, unreadable, of another generator
    version (:data:`GENERATOR_VERSION`; the same seed renders other pixels or labels) or of
    another seed, count or frame size."""
    path = Path(root) / STAMP
    if not path.is_file():
        return f"{path.name} missing (rendered before generator version {GENERATOR_VERSION})"
    try:
        stamp = json.loads(path.read_text())
        got = (stamp["generator_version"], stamp["seed"], stamp["n"], tuple(stamp["frame_hw"]))
    except (OSError, ValueError, KeyError, TypeError):
        return f"{path.name} unreadable"
    if got[0] != GENERATOR_VERSION:
        return f"rendered by generator version {got[0]}, this is version {GENERATOR_VERSION}"
    want = (GENERATOR_VERSION, seed, n, tuple(hw))
    if got != want:
        names = ("seed", "n", "frame size")
        diff = [f"{k} {g} (want {w})" for k, g, w in zip(names, got[1:], want[1:]) if g != w]
        return "rendered with " + ", ".join(diff)
    return None


def _render_all(
    out: Path,
    n: int,
    seed: int,
    hw: tuple[int, int],
    workers: int | None,
    progress: bool,
    label: Path,
) -> list[dict]:
    """Render the scenes into ``out/images``; returns their labels.json entries in seed order."""
    image_dir = check_writable_dir(out / "images")
    for d in MASK_DIRS.values():
        check_writable_dir(out / d)
    jobs = [(seed + i, hw, str(image_dir)) for i in range(n)]
    workers = workers or min(os.cpu_count() or 1, 4)
    bar = tqdm(
        total=n, desc=f"synth {label}", unit="img", disable=None if progress else True, leave=False
    )
    frames = []
    if workers > 1 and n >= 32:
        with mp.get_context("spawn").Pool(workers) as pool:
            for fr in pool.imap(_render_one, jobs, chunksize=8):
                frames.append(fr)
                bar.update()
    else:
        for job in jobs:
            frames.append(_render_one(job))
            bar.update()
    bar.close()
    return frames


def _swap_in(new: Path, out: Path) -> None:
    """Replace ``out``'s images/, mask folders, synthetic.json and labels.json by ``new``'s.
    labels.json leaves first and arrives last: a crash in between leaves a folder without it,
    which reads as incomplete."""
    (out / "labels.json").unlink(missing_ok=True)
    for sub in (Path("images"), *MASK_DIRS.values()):
        old = out / sub
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old)
        else:
            old.unlink(missing_ok=True)
        old.parent.mkdir(parents=True, exist_ok=True)
        os.replace(new / sub, old)
    os.replace(new / STAMP, out / STAMP)
    os.replace(new / "labels.json", out / "labels.json")
    shutil.rmtree(new)


def write_video(
    path: str | Path,
    n_frames: int,
    seed: int = 0,
    hw: tuple[int, int] = (360, 640),
    fps: float = 30.0,
    progress: bool = True,
) -> Path:
    """Render a driving clip of ``n_frames`` to an mp4 (mp4v codec); written to a temp name
    and renamed when complete. Beside it go the clip's ground truth (:func:`truth_paths`): the
    visible boxes with their objects' identities as a MOTChallenge file and each frame's
    attributes as JSON, so a tracker can be scored on the clip (``edge-mtl eval-video``), and
    each frame's drivable-area and lane masks as PNGs (:func:`clip_mask_paths`)."""
    path = check_writable(path, "video file", create_parents=False)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix or '.mp4'}")
    masks_dir = path.with_name(f"{path.stem}.masks")
    tmp_masks = path.with_name(f".{masks_dir.name}.tmp{os.getpid()}")
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (hw[1], hw[0]))
    if not writer.isOpened():
        raise InputError(f"{path}: cannot open a video writer for this path")
    rows, frames = [], []
    ok = False
    try:
        for i, scene in enumerate(
            tqdm(
                render_clip(seed, n_frames, hw),
                total=n_frames,
                desc=f"video {path}",
                unit="frame",
                disable=None if progress else True,
                leave=False,
            )
        ):
            writer.write(scene.image)
            into = clip_mask_paths(path, i + 1, masks=tmp_masks)
            if i == 0:
                for p in into.values():
                    p.parent.mkdir(parents=True, exist_ok=True)
            write_masks(scene, into)
            rows.append(mot_rows(i + 1, scene.object_ids, scene.boxes, 1.0, scene.classes + 1,
                                 scene.visibility))  # fmt: skip
            attrs = dict(scene.attributes, curvature=round(scene.curvature, 5))
            frames.append({"frame": i + 1, **attrs})
        ok = True
    finally:
        writer.release()
        if not ok:
            shutil.rmtree(tmp_masks, ignore_errors=True)
            tmp.unlink(missing_ok=True)
    if masks_dir.is_dir() and not masks_dir.is_symlink():
        shutil.rmtree(masks_dir)  # an earlier clip's masks: none of its frames may stay
    os.replace(tmp_masks, masks_dir)
    gt, info = truth_paths(path)
    write_mot(gt, MotBoxes.concat(rows))
    meta = {"video": path.name, "fps": fps, "frame_size": list(hw), "seed": seed,
            "classes": list(DET_CLASSES), "masks": masks_dir.name, "frames": frames}  # fmt: skip
    write_json_atomic(info, meta)
    os.replace(tmp, path)
    return path


def truth_paths(video: str | Path) -> tuple[Path, Path]:
    """Where ``write_video`` puts a clip's ground truth: ``clip.gt.txt`` (MOTChallenge:
    frame, id, x, y, w, h, 1, class index + 1, visibility; see ``edge_mtl.bench.mot``) and
    ``clip.frames.json`` (``classes``, ``fps``, ``masks``: the name of the clip's mask folder,
    and per frame ``weather``, ``scene``, ``timeofday``, ``curvature``) beside ``clip.mp4``.
    The mask folder ``clip.masks/`` holds per frame ``drivable/<frame:06d>.png`` and
    ``lane/<frame:06d>.png`` (frames numbered from 1 as in the other two files; BDD100K's
    PNG values, as ``write_synthetic`` writes them): :func:`clip_mask_paths`."""
    video = Path(video)
    return video.with_suffix(".gt.txt"), video.with_suffix(".frames.json")


def clip_mask_paths(
    video: str | Path, frame: int, masks: str | Path | None = None
) -> dict[str, Path]:
    """The mask PNGs of ``frame`` (numbered from 1) of clip ``video``, by label kind:
    ``{"drivable": clip.masks/drivable/000001.png, "lanes": clip.masks/lane/000001.png}``;
    ``masks`` names the mask folder when it is not ``clip.masks`` beside the video (e.g. the
    ``masks`` entry of ``clip.frames.json``, relative to it)."""
    video = Path(video)
    root = Path(masks) if masks is not None else video.with_name(f"{video.stem}.masks")
    return {k: root / d.parent.name / f"{frame:06d}.png" for k, d in MASK_DIRS.items()}
