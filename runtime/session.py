"""One ``edge-mtl run`` as its streams share it: the engine, where the annotated output is
saved (and what a failed run leaves is removed again), the console lines, and the sinks of each
stream built from the command-line flags."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from edge_mtl.runtime.console import Console
from edge_mtl.runtime.masksink import MaskSink
from edge_mtl.runtime.metadata import TaskKind
from edge_mtl.runtime.records import run_header
from edge_mtl.runtime.save import Outputs, save_sink
from edge_mtl.runtime.sinks import JsonlSink, Sink, WindowSink
from edge_mtl.runtime.stabilize import StabilizedSinks, Stabilizer
from edge_mtl.runtime.track_cli import stabilize_config


class RunSession:
    """What one ``run`` shares across its streams: the engine, where output is saved (and
    removed again after a failure), the console (stderr when JSON lines go to stdout)."""

    def __init__(self, args: argparse.Namespace, engine: Any, multi: bool) -> None:
        self.engine, self.multi, self.save = engine, multi, not args.no_save
        self.outputs = Outputs(exist_ok=args.exist_ok)
        self.out = sys.stderr if args.jsonl == "-" else sys.stdout
        tasks = self.tasks = engine.meta.tasks
        self.topk = args.jsonl_topk
        self.save_masks = getattr(args, "save_masks", None)  # run --save-masks DIR
        units = {t.name: t.unit for t in tasks if t.unit}
        detect = any(t.kind is TaskKind.DETECT for t in tasks)
        self.console = Console(self.out, units, detect)
        self.max_frames = args.max_frames
        self.frames: dict[int, int] = {}  # stream -> results delivered
        self.stabilize = stabilize_config(args)  # --track / --smooth
        self.stabilizers: list[tuple[str, Stabilizer]] = []  # (stream name, its stabilizer)
        self.web: Any = None  # --serve: the live view's server, a sink per stream

    def delivered(self, stream: Any, *_: Any) -> None:
        """``on_result`` of both runners (one stream: ``stream`` is the frame; it counts as 0)."""
        i = stream if isinstance(stream, int) else 0
        self.frames[i] = self.frames.get(i, 0) + 1

    def finish(self) -> None:
        """End the console's progress line; remove the JSON lines of streams that delivered no
        frame and the folders the run made and left empty."""
        self.console.finish()
        self.outputs.cleanup(self.frames)
        if self.web is not None:
            self.web.close()

    def print(self, line: str) -> None:
        print(f"edge-mtl run: {line}", file=self.out)

    def sinks(
        self,
        show: str | None,
        jsonl: str | None,
        save: str | None,
        source: Any,
        stream: tuple[int, str],
        save_as: str | None = None,
    ) -> list[Any]:
        """The sinks of one stream: a window titled ``show``, the saved output, the class maps
        (``--save-masks``), JSON lines, the console. The save sink is made first, so a bad
        ``--save`` leaves no JSON lines.
        ``stream``: the stream's position and name; ``save_as``: the name of its saved output
        (default: the stream's name)."""
        i, name = stream
        sinks: list[Sink] = []
        try:
            if show is not None:
                sinks.append(WindowSink(show, tasks=self.tasks))
            if self.save:
                sinks.append(
                    save_sink(save, self.outputs, source, save_as or name, self.multi, self.tasks)
                )
            if self.save_masks is not None:  # one folder per stream when there are several
                masks = Path(self.save_masks) / (save_as or name) if self.multi else self.save_masks
                sinks.append(MaskSink(masks, self.tasks))
            header = run_header(self.engine, source, name)  # JSON lines and the live view
            if jsonl:
                sinks.append(JsonlSink(jsonl, header=header, topk=self.topk))
                self.outputs.track(jsonl, i)
            if self.web is not None:
                sinks.append(self.web.add_stream(name, header, source, self.tasks, self.topk))
            sinks.append(self.console.sink(source, name, self.multi, self.max_frames))
        except BaseException:
            for s in sinks:
                s.close()
            raise
        if not self.stabilize.active:
            return sinks
        stabilizer = Stabilizer(self.stabilize, self.tasks)
        self.stabilizers.append((name, stabilizer))
        return [StabilizedSinks(stabilizer, sinks)]

    def report(self, save: str | None, lines: list[str]) -> None:
        """The run's closing lines: where results were saved, ``lines`` (the summary), then
        the ``--track`` lines."""
        for line in [self.saved_line(save), *lines, *self.track_lines()]:
            if line is not None:
                self.print(line)

    def track_lines(self) -> list[str]:
        """``--track``: one summary line per stream (track count, lengths)."""
        lines = [(name, s.summary()) for name, s in self.stabilizers]
        return [f"{name}: {line}" if self.multi else line for name, line in lines if line]

    def saved_line(self, save: str | None) -> str | None:
        """``results saved to PATH``: the run folder, or the ``--save`` file or folder (not a
        template); ``None`` when nothing was saved."""
        where = self.outputs.saved_to() if save is None else save
        if not self.save or not self.frames or not where or "{" in str(where):
            return None
        return f"results saved to {where}"
