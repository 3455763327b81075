"""Accuracy of an ONNX model through the runtime engine, the one code path behind ``edge-mtl eval
--model X.onnx``, ``bench --accuracy`` and quantize's FP32 vs INT8 report.

Models run over the same images through :class:`Engine` with the evaluation thresholds on one
named execution provider, so the figures are what a deployment sees: detection mAP@0.5 and
mAP@0.5:0.95 (COCO protocol), accuracy per classification task, MAE per regression task, mIoU
(and IoU) per segment task, and with ``breakdown`` the COCO per-size mAP, AP@0.5 per class,
macro-F1 per classification task and pixel accuracy and per-class IoU per segment task.

Segment tasks are scored as training scores them (``edge_mtl.tasks.segment.SegmentMetric``, the
same :class:`SegConfusion`): at the model input's resolution over the frame's content, padding
left out. The engine's :class:`SegMap` is that content at map resolution; the frame-sized truth
is resized to it by nearest neighbour, the very resize training's letterboxed mask takes, so
both count the same pixels with the same labels.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import cv2
import numpy as np

from edge_mtl.bench.metrics import COCO_SIZES, SegConfusion, accuracy_f1, coco_map
from edge_mtl.runtime.engine import Engine, EngineConfig, FrameResult, OVPrecision
from edge_mtl.runtime.errors import EdgeMTLError, InputError, MetadataError
from edge_mtl.runtime.metadata import ModelMeta, TaskKind
from edge_mtl.runtime.postprocess import EVAL_CONF, EVAL_IOU, EVAL_MAX_DET, Detections
from edge_mtl.runtime.providers import Provider

if TYPE_CHECKING:
    from edge_mtl.bench.schema import BenchSettings, Row

BATCH = 8


class LabelReader(Protocol):
    """Reads a labelled set (a BDD100K folder or label file, COCO JSON, KITTI or class-folder
    tree: ``edge_mtl.data.labelled.read_labelled``, handed in by the composition root, since
    bench and calibration never import the training side) for the given tasks. Returns records
    with ``image`` (path), ``boxes`` (K, 4) xyxy frame pixels, ``classes`` (K,) class indices,
    ``labels`` (task -> class index, -1 unlabelled), ``targets`` (task -> value, NaN
    unlabelled) and ``has_boxes`` (False: the source has no box labels), and a Counter of the
    categories that map to no detection class."""

    def __call__(
        self,
        root: str | Path,
        det_classes: tuple[str, ...],
        classify: dict[str, tuple[str, ...]],
        regress: tuple[str, ...],
    ) -> tuple[list[Any], Counter]: ...


class MaskReader(Protocol):
    """Reads one record's pixel label for a segment task (``edge_mtl.eval_cli.read_task_mask``,
    handed in like :class:`LabelReader`): the task's class indices as uint8 (H, W) at the
    frame's size ``frame_hw`` (255 = no label), or None when the record has no such label."""

    def __call__(
        self, record: Any, task: str, classes: tuple[str, ...], frame_hw: tuple[int, int]
    ) -> np.ndarray | None: ...


def label_tasks(
    meta: ModelMeta,
) -> tuple[tuple[str, ...], dict[str, tuple[str, ...]], tuple[str, ...]]:
    """What a :class:`LabelReader` reads for ``meta``'s tasks: detection class names (empty
    without a detection task), classification task -> class names, regression task names."""
    det = meta.detect
    classify = {t.name: t.classes for t in meta.tasks if t.kind is TaskKind.CLASSIFY}
    regress = tuple(t.name for t in meta.tasks if t.kind is TaskKind.REGRESS)
    return det.classes if det else (), classify, regress


@dataclass(frozen=True)
class EvalSet:
    """Images to evaluate on. ``records`` (``edge_mtl.data.bdd.Record``) when labelled, else
    ``None`` and only agreement between models can be reported; ``read_mask`` reads their
    pixel labels (None: segment tasks have no labels here)."""

    images: tuple[Path, ...]
    records: tuple | None = None
    source: str = ""
    read_mask: MaskReader | None = None

    @staticmethod
    def labelled(
        root: str | Path,
        meta: ModelMeta,
        read_labels: LabelReader | None,
        read_mask: MaskReader | None = None,
    ) -> EvalSet:
        """A labelled set read with the model's class names by ``read_labels`` (ValueError
        without one; InputError when it holds no images)."""
        if read_labels is None:
            raise ValueError(f"{root}: evaluation data needs a label reader (read_labels)")
        records, _ = read_labels(root, *label_tasks(meta))
        return EvalSet.of_records(records, str(root), read_mask)

    @staticmethod
    def of_records(
        records: Sequence[Any], source: str, read_mask: MaskReader | None = None
    ) -> EvalSet:
        """Records already read (InputError when there are none)."""
        if not records:
            raise InputError(f"{source}: the evaluation set has no images")
        return EvalSet(tuple(r.image for r in records), tuple(records), source, read_mask)


@dataclass
class Predictions:
    """One model's answers on an :class:`EvalSet`: detections per image (frame pixels, scores
    down to ``EVAL_CONF``), class index per classification task (N,), value per regression task,
    class map per segment task (the :class:`SegMap` content, kept PNG-encoded: a BDD100K val
    pass would hold gigabytes of raw maps; :meth:`seg_map` decodes one)."""

    dets: list[Detections] = field(default_factory=list)
    cls: dict[str, list[int]] = field(default_factory=dict)
    reg: dict[str, list[float]] = field(default_factory=dict)
    seg: dict[str, list[bytes]] = field(default_factory=dict)
    frame_hw: list[tuple[int, int]] = field(default_factory=list)

    def add(self, r: FrameResult, hw: tuple[int, int]) -> None:
        self.dets.append(r.detections)
        self.frame_hw.append(hw)
        for name, c in r.classifications.items():
            self.cls.setdefault(name, []).append(c.index)
        for name, v in r.regressions.items():
            self.reg.setdefault(name, []).append(v)
        for name, m in r.segmentations.items():
            ok, png = cv2.imencode(".png", m.classes, [cv2.IMWRITE_PNG_COMPRESSION, 1])
            assert ok, "a uint8 2-D array always encodes"
            self.seg.setdefault(name, []).append(png.tobytes())

    def seg_map(self, task: str, i: int) -> np.ndarray:
        """Image ``i``'s class map of segment task ``task``: uint8 (h, w) over the frame's
        content at the map's resolution."""
        return cv2.imdecode(np.frombuffer(self.seg[task][i], np.uint8), cv2.IMREAD_UNCHANGED)


def eval_engine(
    path: str | Path, provider: Provider | str = Provider.CPU, threads: int = 2, **options: Any
) -> Engine:
    """``path`` on ``provider`` with evaluation thresholds and ``threads`` intra-op threads (0 =
    onnxruntime's choice). A named provider is strict, as in ``edge-mtl run`` (``"auto"``
    takes the best that works): raises
    :class:`RuntimeFailure` when the provider cannot run here (:class:`InputError` when its
    plugin is not installed). ``options``: other :class:`EngineConfig` fields (OpenVINO's)."""
    cfg = EngineConfig(
        conf_threshold=EVAL_CONF,
        iou_threshold=EVAL_IOU,
        max_det=EVAL_MAX_DET,
        within_graph_nms=True,  # an --nms export is scored at its baked-in thresholds
        intra_op_threads=threads,
        **options,
    )
    return Engine(path, providers=provider, config=cfg)


def predict_all(
    engines: dict[str, Engine],
    data: EvalSet,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Predictions]:
    """Run every engine over ``data`` (each image decoded once for all models); ``progress``
    is called with (images done, images) after each batch."""
    preds = {label: Predictions() for label in engines}
    n = len(data.images)
    for i in range(0, n, BATCH):
        frames = [_read(p) for p in data.images[i : i + BATCH]]
        for label, eng in engines.items():
            for f, r in zip(frames, eng.infer_batch(frames)):
                preds[label].add(r, f.shape[:2])
        if progress is not None:
            progress(min(i + BATCH, n), n)
    return preds


def task_metrics(
    pred: Predictions, data: EvalSet, meta: ModelMeta, breakdown: bool = False
) -> dict[str, float]:
    """Metrics against labels, in points (0-100) for mAP/accuracy/F1/IoU, label units for MAE;
    NaN where the set has no label for a task. Keys: ``det mAP@0.5``, ``det mAP@0.5:0.95``,
    ``<task> acc``, ``<task> MAE``, ``<task> mIoU`` per segment task (background vs the merged
    foreground: YOLOP's drivable-area mIoU) and ``<task> IoU`` (foreground IoU: YOLOP's lane
    IoU) for a segment task with one foreground class; with ``breakdown`` also ``det
    mAP@0.5:0.95 <size>`` (COCO small/medium/large), ``det AP50 <class>``, ``<task> F1``
    (macro-F1), and per segment task ``<task> IoU``, ``<task> pixel acc``, ``<task> mIoU all``
    (mean of the per-class IoUs) and ``<task> IoU <class>``. Detection is scored on the images
    whose source has box labels (a class-folder tree has none)."""
    out: dict[str, float] = {}
    recs = data.records
    if recs is None:
        return out
    for t in meta.tasks:
        if t.kind is TaskKind.DETECT:
            out.update(_detection(pred, recs, len(t.classes), t.classes if breakdown else None))
        elif t.kind is TaskKind.CLASSIFY:
            true = np.array([r.labels.get(t.name, -1) for r in recs])
            acc, f1 = accuracy_f1(np.array(pred.cls[t.name]), true, len(t.classes))
            out[f"{t.name} acc"] = 100 * acc
            if breakdown:
                out[f"{t.name} F1"] = 100 * f1
        elif t.kind is TaskKind.REGRESS:
            y = np.array([r.targets.get(t.name, math.nan) for r in recs])
            p, ok = np.array(pred.reg[t.name]), np.isfinite(y)
            out[f"{t.name} MAE"] = float(np.abs(p[ok] - y[ok]).mean()) if ok.any() else math.nan
        elif t.kind is TaskKind.SEGMENT:
            out.update(_segment(pred, data, t.name, t.classes, breakdown))
    return out


def _segment(
    pred: Predictions, data: EvalSet, task: str, classes: tuple[str, ...], breakdown: bool
) -> dict[str, float]:
    """IoU figures of one segment task (see :func:`task_metrics`) over the records whose
    pixel label ``data.read_mask`` finds, counted as in training (the module docstring)."""
    conf = SegConfusion(len(classes))
    for i, rec in enumerate(data.records or ()):
        truth = data.read_mask(rec, task, classes, pred.frame_hw[i]) if data.read_mask else None
        if truth is None:
            continue
        got = pred.seg_map(task, i)
        h, w = got.shape
        conf.add(got, cv2.resize(truth, (w, h), interpolation=cv2.INTER_NEAREST))
    r = {k.removeprefix(f"{task}/"): 100 * v for k, v in conf.result(task, classes).items()}
    out = {f"{task} mIoU": r["miou"]}
    if breakdown or len(classes) == 2:
        out[f"{task} IoU"] = r["iou"]
    if breakdown:
        out[f"{task} pixel acc"] = r["pixel_acc"]
        out[f"{task} mIoU all"] = r["miou_all"]
        out.update({f"{task} IoU {c}": r[f"iou_{c}"] for c in classes})
    return out


def _detection(
    pred: Predictions, recs: tuple, num_classes: int, classes: tuple[str, ...] | None
) -> dict[str, float]:
    """COCO mAP of the images with box labels; ``classes`` given: per size and per class too."""
    boxed = [i for i, r in enumerate(recs) if getattr(r, "has_boxes", True)]
    gts = [(recs[i].boxes, recs[i].classes) for i in boxed]
    dets = [(pred.dets[i].boxes, pred.dets[i].scores, pred.dets[i].classes) for i in boxed]
    m = coco_map(gts, dets, num_classes, [pred.frame_hw[i] for i in boxed])
    out = {"det mAP@0.5": 100 * m["map50"], "det mAP@0.5:0.95": 100 * m["map"]}
    if classes is not None:
        for name, _, _ in COCO_SIZES:
            out[f"det mAP@0.5:0.95 {name}"] = 100 * m.get(f"map_{name}", math.nan)
        ap50 = m.get("ap50", [math.nan] * num_classes)
        out.update({f"det AP50 {c}": 100 * v for c, v in zip(classes, ap50)})
    return out


def label_std(data: EvalSet, meta: ModelMeta) -> dict[str, float]:
    """Standard deviation of each regression task's labels (task -> value, label units; NaN
    with fewer than two labels): what a change of MAE is read against."""
    out: dict[str, float] = {}
    for t in meta.tasks:
        if t.kind is TaskKind.REGRESS and data.records is not None:
            y = np.array([r.targets.get(t.name, math.nan) for r in data.records], float)
            y = y[np.isfinite(y)]
            out[t.name] = float(y.std()) if y.size > 1 else math.nan
    return out


def row_accuracy(
    rows: Sequence[Row],
    data: str | Path,
    read_labels: LabelReader,
    settings: BenchSettings,
    log: Callable[[str], None] = lambda msg: None,
    sets: dict[tuple, EvalSet] | None = None,
    read_mask: MaskReader | None = None,
) -> None:
    """``bench --accuracy``: set ``accuracy`` (headline :func:`task_metrics`, ``None`` for a
    task without labels) of every measured onnxruntime row, evaluated on the row's own provider
    (with the settings' threads and OpenVINO options) with evaluation thresholds. Rows of the
    same file and provider (other batch sizes) share one evaluation; the labelled set is read
    once per set of class names (``sets``: those :func:`check_data` read already). A row whose
    model cannot be scored (no edge-mtl metadata, the provider fails to start again) gets a note
    saying why instead. ``read_mask`` reads the pixel labels of segment tasks."""
    sets = {} if sets is None else sets
    done: dict[tuple[str, str], dict[str, float | None] | str] = {}
    for r in rows:
        if r.status != "ok" or r.runtime != "onnxruntime" or r.provider is None:
            continue
        key = (r.model_path, r.provider)
        if key not in done:
            log(f"{r.model} [{r.provider}]: accuracy on {data}")
            try:
                engine = eval_engine(r.model_path, r.provider, settings.threads, **_ov(settings))
            except MetadataError:
                done[key] = "accuracy: not scored (no edge-mtl metadata: tasks and classes unknown)"
            except EdgeMTLError as e:
                done[key] = f"accuracy: not scored ({str(e).removeprefix(f'{r.model_path}: ')})"
            else:
                done[key] = _score(engine, data, read_labels, sets, read_mask)
                del engine
        if isinstance(done[key], str):
            r.notes.append(done[key])
        else:
            r.accuracy = dict(done[key])


def _score(
    engine: Engine,
    data: str | Path,
    read_labels: LabelReader,
    sets: dict[tuple, EvalSet],
    read_mask: MaskReader | None,
) -> dict[str, float | None]:
    """Headline metrics of ``engine`` on ``data`` (NaN as None), the set read once per set of
    task and class names into ``sets``."""
    meta = engine.meta
    labelled = _labelled(data, meta, read_labels, sets, read_mask)
    got = task_metrics(predict_all({"m": engine}, labelled)["m"], labelled, meta)
    return {k: v if math.isfinite(v) else None for k, v in got.items()}


def check_data(
    path: str | Path,
    data: str | Path,
    read_labels: LabelReader,
    sets: dict[tuple, EvalSet],
    read_mask: MaskReader | None = None,
) -> None:
    """Read ``data`` with the class names of the model at ``path`` (a CPU session) into
    ``sets`` (what :func:`row_accuracy` scores on), so a wrong ``--accuracy`` set fails before
    the timing, not after it; nothing for a model without edge-mtl metadata (its rows are not
    scored)."""
    try:
        meta = Engine(path, Provider.CPU, EngineConfig(warmup_runs=0)).meta
    except MetadataError:
        return
    _labelled(data, meta, read_labels, sets, read_mask)


def _labelled(
    data: str | Path,
    meta: ModelMeta,
    read_labels: LabelReader,
    sets: dict[tuple, EvalSet],
    read_mask: MaskReader | None = None,
) -> EvalSet:
    """``data`` read for ``meta``'s tasks, once per set of task and class names (in ``sets``)."""
    names = tuple((t.name, t.kind.value, t.classes) for t in meta.tasks)
    if names not in sets:
        sets[names] = EvalSet.labelled(data, meta, read_labels, read_mask)
    return sets[names]


def _ov(settings: BenchSettings) -> dict[str, Any]:
    """The OpenVINO options a bench row ran with."""
    ov = (settings.ov_device, OVPrecision(settings.ov_precision), settings.ov_cache_dir)
    return dict(zip(("ov_device", "ov_precision", "ov_cache_dir"), ov))


def _read(path: Path) -> np.ndarray:
    frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if frame is None:
        raise InputError(f"{path}: cannot decode the evaluation image")
    return frame


def image_list(paths: Sequence[Path]) -> EvalSet:
    """Unlabelled images (e.g. the calibration set): agreement only."""
    return EvalSet(tuple(paths), None, "calibration images")
