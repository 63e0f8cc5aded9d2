"""The ``smoke`` command: one entry point, one module per area under ``cluster/commands``.

Each command module exposes ``register(subparsers)``, which adds its subcommands
and sets ``func`` on them. Settings are loaded and validated once here, before
any command runs, and handed to it as ``args.settings``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from ingest.settings import SettingsError, load_settings

# Areas in the order ``smoke --help`` lists them; a module that is missing is skipped.
COMMAND_MODULES = (
    "cluster.commands.stack",     # up, down, status
    "cluster.commands.ingest",    # broker, simulate, replay, load
    "cluster.commands.bridge",    # bridge mqtt
    "cluster.commands.stream",    # stream start|status|stop|scale
    "cluster.commands.train",     # train, models list|show|promote|rollback
    "cluster.commands.evaluate",  # evaluate (detection on recordings)
    "cluster.commands.serve",     # serve start|status|stop
    "cluster.commands.alerts",    # alerts (incidents, ack, silences, sensors), alerts router start|status|stop
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smoke", description="Real-time smoke and fire detection on Ray.")
    parser.add_argument("--config", default=None, help="settings file (default configs/pipeline.yaml)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name != name:
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        args.settings = load_settings(args.config)
    except SettingsError as err:
        print(f"smoke: invalid settings: {err}", file=sys.stderr)
        return 2
    # Ray clients given an explicit address send the auth token only in token mode, which Ray
    # does not infer for them: our clusters run with token auth, so say so (RAY_AUTH_MODE=disabled opts out).
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    if not getattr(args, "manages_stack", False):
        # After `smoke up`, every command finds its Ray and Kafka without flags (explicit settings win).
        from cluster.stack_state import attach_running_stack

        args.settings = attach_running_stack(args.settings)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
