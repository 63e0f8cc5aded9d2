"""``smoke evaluate``: detection measured on recordings (a Kaggle-format file) through the stream engine.

See :mod:`actors.recording_evaluation`. The report (Markdown, JSON, one PNG
timeline per session) goes next to the model's own evaluation report, under
``<registry>/<model>/<version>/recordings/<file name>/``, or to ``--out``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    evaluate = subparsers.add_parser(
        "evaluate", help="replay a Kaggle-format CSV's sessions through the detection engine and report "
                         "time to detect, missed alarms and false alerts per session")
    evaluate.add_argument("--source", type=Path, required=True,
                          help="Kaggle-format CSV (the real smoke_detection_iot.csv, or a generated file)")
    evaluate.add_argument("--model", default="production", help="registry reference (default production); "
                                                                "'none' runs the rule-based detectors only")
    evaluate.add_argument("--out", type=Path, help="report directory (default: beside the model's report)")
    evaluate.set_defaults(func=_evaluate)


def _evaluate(args: argparse.Namespace) -> int:
    from actors.recording_evaluation import evaluate_recording, write_recording_report
    from ingest.kaggle import KaggleFormatError
    from train.dataset import TrainingDataError
    from train.registry import ModelRegistry, RegistryError

    settings = args.settings
    model = None
    if args.model != "none":
        try:
            model = ModelRegistry(settings.train.registry_dir, settings.train.model_name).load(args.model)
        except RegistryError as err:
            print(f"smoke evaluate: {err} (train one with `smoke train`, or pass --model none)", file=sys.stderr)
            return 1
    out = args.out
    if out is None:
        out = (model.directory if model is not None else Path(settings.train.registry_dir)) / "recordings" \
            / args.source.name
    print(f"replaying the sessions of {args.source} through the detection engine "
          f"(model {model.version if model is not None else 'none'}) ...", flush=True)
    try:
        evaluation, timelines = evaluate_recording(settings, args.source, model)
    except (KaggleFormatError, TrainingDataError) as err:
        print(f"smoke evaluate: {err}", file=sys.stderr)
        return 1
    report = write_recording_report(evaluation, timelines, out)
    print(evaluation.table())
    print(f"report: {report}")
    return 0
