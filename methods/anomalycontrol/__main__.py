"""Train the AnomalyControl adapter outside a study, e.g. on several GPUs with accelerate:

    accelerate launch --multi_gpu --num_processes 4 -m acbench_methods.anomalycontrol \\
        --dataset /data/mvtec --out adapters/mvtec --options anomalycontrol.yaml

The folder it writes is a fit artifact; a protocol uses it with the method option
`pretrained_fit: adapters/mvtec` (the study's fit stage then copies it instead of training).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml
from accelerate import PartialState
from pydantic import ValidationError

from acbench.data.mvtec import load_category, resolve_categories
from acbench.errors import UserError
from acbench.protocol import SplitConfig
from acbench_methods.anomalycontrol.plugin import AnomalyControl


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m acbench_methods.anomalycontrol", description=__doc__.splitlines()[0]
    )
    p.add_argument("--dataset", type=Path, required=True, help="dataset root in MVTec AD layout")
    p.add_argument("--out", type=Path, required=True, help="folder for the adapter (a fit artifact)")
    p.add_argument("--categories", nargs="*", default=None, help="default: all")
    p.add_argument("--options", type=Path, default=None, help="YAML of the method's options")
    p.add_argument(
        "--weights", default="pretrained", choices=["pretrained", "pretrained-or-random", "random"]
    )
    p.add_argument("--split-fraction", type=float, default=0.333)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        options = yaml.safe_load(args.options.read_text()) if args.options else {}
        method = AnomalyControl(AnomalyControl.Options.model_validate(options or {}), weights=args.weights)
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        print(f"error: {args.options}: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    try:
        names = resolve_categories(args.dataset, args.categories or "all")
        split = SplitConfig(fraction=args.split_fraction)
        categories = [load_category(args.dataset, name, split) for name in names]
        state = PartialState()  # one process per GPU under `accelerate launch`
        args.out.mkdir(parents=True, exist_ok=True)
        method.fit(categories, args.out, seed=args.seed, device=str(state.device))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
