"""Copy a checkpoint without some of its tasks: the same trunk and the other heads, bit for bit.

What a task costs at inference is the difference between the two exported files, measured in one
``edge-mtl bench`` run (docs/results.md, "What the pixel tasks cost"):

    python scripts/without_tasks.py runs/demo/best.pt /tmp/noseg.pt --drop drivable lanes
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

from edge_mtl.checkpoint import deployable, load_checkpoint, save_atomic
from edge_mtl.config import config_from_dict
from edge_mtl.model import MultiTaskModel


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("weights", type=Path, help="checkpoint to copy (best.pt)")
    ap.add_argument("out", type=Path, help="where the copy goes")
    ap.add_argument("--drop", nargs="+", required=True, help="task names to leave out")
    args = ap.parse_args()
    ckpt = load_checkpoint(args.weights)
    config = copy.deepcopy(ckpt["config"])
    model = config["model"]
    for task in args.drop:
        if task == "det":
            model["detect"] = []
        for key in ("classify", "segment"):
            model.get(key, {}).pop(task, None)
        model["regress"] = [t for t in model.get("regress", []) if t != task]
        config.get("train", {}).get("loss_weights", {}).pop(task, None)
    kept = MultiTaskModel(config_from_dict(config, str(args.out)).model).state_dict()
    state = ckpt.get("ema") or ckpt["model"]
    weights = {k: v for k, v in state.items() if k in kept}
    missing = sorted(set(kept) - set(weights))
    if missing:
        raise SystemExit(f"{args.weights}: the copy would lack {missing[:3]}")
    save_atomic(deployable(config, weights, ckpt.get("state"), ckpt.get("metrics")), args.out)
    print(f"{args.out}: {args.weights} without {', '.join(args.drop)}")


if __name__ == "__main__":
    main()
