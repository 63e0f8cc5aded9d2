"""``smoke train`` and ``smoke models list|show|promote|rollback``: training runs and the model registry.

``smoke train`` without ``--quick`` runs the sweep on Ray: ``--address``, else
``RAY_ADDRESS`` (set inside ``ray job submit``, so ``ray job submit -- smoke train ...``
trains on that cluster), else ``ray.address``; with none of them a local Ray is started
for the run and stopped after it. ``--quick`` needs no Ray at all.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from cluster.ray_driver import DriverError, address_of, driver_or_local_ray
from train.dataset import TrainingDataError
from train.distributed import ResourcesError
from train.pipeline import FEATURE_SETS, train_and_register
from train.registry import ModelRegistry, PromotionRefused, RegistryError

log = logging.getLogger("smoke.models")


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser("train", help="train, evaluate and register a model (sweep, or --quick)")
    _add_train_arguments(train)
    train.set_defaults(func=_train)

    models = subparsers.add_parser("models", help="the model registry: versions and the production alias")
    sub = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    listing = sub.add_parser("list", help="registered versions with their test metrics")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(func=_list)
    show = sub.add_parser("show", help="metadata of a version (default: production)")
    show.add_argument("version", nargs="?", default="production")
    show.set_defaults(func=_show)
    promote = sub.add_parser("promote", help="make a version production (refused if it does not beat production)")
    promote.add_argument("version")
    promote.add_argument("--force", action="store_true", help="promote even if it does not beat production")
    promote.set_defaults(func=_promote)
    rollback = sub.add_parser("rollback", help="point production back at the previous production version")
    rollback.set_defaults(func=_rollback)
    history = sub.add_parser("history", help="guarded retraining runs: each candidate, promoted or refused, and why")
    history.add_argument("--json", action="store_true", help="print JSON")
    history.set_defaults(func=_history)

    retrain = subparsers.add_parser("retrain", help="train a candidate and promote it only if it is no worse than "
                                                    "production on a later window (missed alarms, time to detect, "
                                                    "false alerts, PR-AUC)")
    retrain.add_argument("--source", required=True, help="training data: Kaggle-format CSV or Parquet lake")
    retrain.add_argument("--guard", required=True, type=Path,
                         help="later recordings (Kaggle-format CSV) the candidate is judged on")
    retrain.set_defaults(func=_retrain)


def _add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", default=None,
                        help="Kaggle-format CSV file or Parquet lake directory (default: stream.lake_dir)")
    parser.add_argument("--quick", action="store_true",
                        help="one LightGBM on point features in this process, no sweep (seconds)")
    parser.add_argument("--features", choices=sorted(FEATURE_SETS), default="point",
                        help="point: one reading suffices (what the HTTP API needs); all: adds windowed features")
    promote = parser.add_mutually_exclusive_group()
    promote.add_argument("--no-promote", dest="promote", action="store_const", const="never", default="auto",
                         help="only register; default promotes when there is no production model or the new "
                              "one beats it on the same test set")
    promote.add_argument("--force-promote", dest="promote", action="store_const", const="force",
                         help="make the new version production whatever its metrics")
    parser.add_argument("--address", default=None, help="Ray address (default RAY_ADDRESS, then ray.address)")


def _train(args: argparse.Namespace) -> int:
    """Train, register, maybe promote; one clear log line on failure."""
    settings = args.settings
    source = Path(args.source or settings.stream.lake_dir)
    try:
        if args.quick:
            version = train_and_register(settings, source, quick=True, feature_set=args.features,
                                         promote=args.promote)
        else:
            address = address_of(args.address, settings.ray.address)
            with driver_or_local_ray(address, settings.ray.namespace):
                version = train_and_register(settings, source, quick=False, feature_set=args.features,
                                             promote=args.promote)
    except (TrainingDataError, ResourcesError, RegistryError, FileNotFoundError, ValueError, DriverError) as err:
        logging.getLogger("train").error("train failed: %s", err)
        return 1
    print(version)
    return 0


def _registry(args: argparse.Namespace) -> ModelRegistry:
    return ModelRegistry(args.settings.train.registry_dir, args.settings.train.model_name)


def _list(args: argparse.Namespace) -> int:
    registry = _registry(args)
    production = registry.production_version()
    rows = []
    for version in registry.versions():
        meta = registry.metadata(version)
        m = meta.get("metrics", {})
        rows.append({"version": version, "production": version == production, "model_type": meta.get("model_type"),
                     "feature_set": meta.get("feature_set"), "created_at": meta.get("created_at"),
                     **{k: m.get(k) for k in ("pr_auc", "roc_auc", "recall", "precision", "threshold")}})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no models registered in {registry.directory}")
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{registry.name} ({registry.directory})")
    for column in ("version", "model", "features", "created", "PR-AUC", "ROC-AUC", "recall", "precision",
                   "threshold"):
        table.add_column(column)
    for r in rows:
        mark = " *" if r["production"] else ""
        table.add_row(r["version"] + mark, str(r["model_type"]), str(r["feature_set"]), str(r["created_at"]),
                      *(_fmt(r[k]) for k in ("pr_auc", "roc_auc", "recall", "precision", "threshold")))
    Console(width=None if sys.stdout.isatty() else 160).print(table)
    print("* production")
    return 0


def _show(args: argparse.Namespace) -> int:
    registry = _registry(args)
    try:
        version = registry.resolve(args.version)
        print(json.dumps(registry.metadata(version), indent=2))
    except RegistryError as err:
        log.error("%s", err)
        return 1
    return 0


def _promote(args: argparse.Namespace) -> int:
    registry = _registry(args)
    try:
        registry.promote(args.version, force=args.force)
    except (PromotionRefused, RegistryError) as err:
        log.error("promotion refused: %s", err)
        return 1
    print(f"production -> {args.version}")
    return 0


def _rollback(args: argparse.Namespace) -> int:
    try:
        version = _registry(args).rollback()
    except RegistryError as err:
        log.error("%s", err)
        return 1
    print(f"production -> {version}")
    return 0


def _fmt(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, float) else ("n/a" if value is None else str(value))


def _history(args: argparse.Namespace) -> int:
    decisions = _registry(args).decisions()
    if args.json:
        print(json.dumps(decisions, indent=2))
        return 0
    if not decisions:
        print("no retraining runs recorded")
        return 0
    for d in decisions:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(d["at"]))
        verdict = "promoted" if d["promoted"] else "refused"
        print(f"{when} UTC  {d['candidate']}  {verdict} (production was {d['production']})"
              + (f": {'; '.join(d['reasons'])}" if d["reasons"] else ""))
    return 0


def _retrain(args: argparse.Namespace) -> int:
    from cluster.guarded_retrain import guarded_retrain

    try:
        decision = guarded_retrain(args.settings, args.source, args.guard)
    except (ValueError, LookupError) as err:
        print(f"smoke retrain: {err}", file=sys.stderr)
        return 1
    print(f"{decision['candidate']} {'promoted' if decision['promoted'] else 'refused'}"
          + (f": {'; '.join(decision['reasons'])}" if decision["reasons"] else ""))
    return 0
