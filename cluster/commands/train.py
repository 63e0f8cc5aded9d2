"""``smoke train`` and ``smoke models list|show|promote|rollback``: training runs and the model registry."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from train.command import add_arguments, run
from train.registry import ModelRegistry, PromotionRefused, RegistryError

log = logging.getLogger("smoke.models")


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser("train", help="train, evaluate and register a model (sweep, or --quick)")
    add_arguments(train)
    train.set_defaults(func=lambda args: run(args, args.settings))

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
