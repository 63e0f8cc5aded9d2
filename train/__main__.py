"""``python -m train``: the training run as a Ray job.

    ray job submit --address http://HEAD:8265 --working-dir . -- python -m train --source data/lake

Inside a job the runtime sets ``RAY_ADDRESS``, so the run joins that cluster.
"""

from __future__ import annotations

import argparse
import logging
import sys

from ingest.settings import SettingsError, load_settings
from train.command import add_arguments, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train", description="Train, evaluate and register a model.")
    parser.add_argument("--config", default=None, help="settings file (default configs/pipeline.yaml)")
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings(args.config)
    except SettingsError as err:
        print(f"train: invalid settings: {err}", file=sys.stderr)
        return 2
    return run(args, settings)


if __name__ == "__main__":
    sys.exit(main())
