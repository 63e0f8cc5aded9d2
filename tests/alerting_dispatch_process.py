"""A dispatcher in a process of its own, for the crash test: ``python -m tests.alerting_dispatch_process DSN JSON``.

JSON is an ``alerting`` settings section (channels, delivery timings). The process
opens the store, runs the dispatcher until it is killed, and prints ``ready`` once started.
"""

from __future__ import annotations

import sys
import time

from alerting.channels import build_channels
from alerting.delivery import Dispatcher
from alerting.store import AlertStore
from ingest.settings import AlertingSettings


def main(dsn: str, alerting_json: str) -> None:
    alerting = AlertingSettings.model_validate_json(alerting_json)
    store = AlertStore.open(dsn)
    Dispatcher.from_settings(store, build_channels(alerting), alerting).start()
    print("ready", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
