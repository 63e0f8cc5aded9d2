"""``smoke serve start|status|stop``: the prediction API on Ray Serve.

With a Ray address (``--address`` or ``ray.address``) the application is
deployed to that cluster and the command returns; the application keeps
running there. Without one, a local Ray is started in this process with the
HAProxy ingress flags and the command serves in the foreground until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from cluster.ray_driver import address_of, connect_driver


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("serve", help="prediction API on Ray Serve")
    sub = parser.add_subparsers(dest="serve_command", metavar="ACTION", required=True)

    start = sub.add_parser("start", help="deploy the API (configs/serve.yaml) and wait until it runs")
    start.add_argument("--address", help="Ray address (default ray.address; none: local Ray, foreground)")
    start.add_argument("--port", type=int, help="HTTP port (default serve.port)")
    start.add_argument("--serve-config", default=None, help="Serve config file (default configs/serve.yaml)")
    start.set_defaults(func=_start)

    status = sub.add_parser("status", help="application and replica states")
    status.add_argument("--address", help="Ray address (default ray.address)")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(func=_status)

    stop = sub.add_parser("stop", help="delete the application")
    stop.add_argument("--address", help="Ray address (default ray.address)")
    stop.add_argument("--all", action="store_true", help="also shut Serve down (controller and proxies)")
    stop.set_defaults(func=_stop)


def _settings(args: argparse.Namespace):
    settings = args.settings
    if getattr(args, "port", None):
        settings = settings.model_copy(update={"serve": settings.serve.model_copy(update={"port": args.port})})
    return settings


def _start(args: argparse.Namespace) -> int:
    from serve.deployment import SERVE_CONFIG, SERVE_ENV, deploy_app

    settings = _settings(args)
    address = address_of(args.address, settings.ray.address)
    foreground = not address
    if foreground:
        import ray

        # The Serve controller reads the ingress flags from its environment, inherited from here.
        os.environ.update({k: os.environ.get(k, v) for k, v in SERVE_ENV.items()})
        # address="local": a Ray of our own, not whatever cluster `ray start` left on this host.
        ray.init(address="local", namespace=settings.ray.namespace, include_dashboard=False, log_to_driver=False)
    try:
        connect_driver(address, settings.ray.namespace)
        url = deploy_app(settings, args.serve_config or SERVE_CONFIG)
    except Exception as err:
        print(f"smoke serve start: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    print(f"serving {settings.serve.app_name} at {url} (docs at {url}/docs)", flush=True)
    if foreground:
        print("local Ray in this process: Ctrl-C stops serving", flush=True)
        try:
            while True:
                time.sleep(3600)
        finally:
            from ray import serve

            serve.shutdown()
    return 0


def _status(args: argparse.Namespace) -> int:
    from serve.deployment import serve_status

    try:
        connect_driver(address_of(args.address, args.settings.ray.address), args.settings.ray.namespace)
        status = serve_status(args.settings)
    except Exception as err:
        print(f"smoke serve status: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        print(f"{status['application']}: {status['status']}  {status.get('url', '')}")
        for name, dep in status["deployments"].items():
            replicas = ", ".join(f"{k}={v}" for k, v in dep["replicas"].items()) or "no replicas"
            print(f"  {name}: {dep['status']} ({replicas}) {dep.get('message') or ''}".rstrip())
    return 0 if status["status"] == "RUNNING" else 3


def _stop(args: argparse.Namespace) -> int:
    from serve.deployment import stop_app

    try:
        connect_driver(address_of(args.address, args.settings.ray.address), args.settings.ray.namespace)
        stop_app(args.settings, shutdown=args.all)
    except Exception as err:
        print(f"smoke serve stop: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    print(f"stopped {args.settings.serve.app_name}" + (" and Serve" if args.all else ""))
    return 0
