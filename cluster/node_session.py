"""Start and stop Ray on a cluster node by Unix session, for the ``ray up`` configs in ``cluster/``.

    python -m cluster.node_session start -- ray start --head ...   # run it in a new session, record the session
    python -m cluster.node_session stop                            # stop that session's processes, if any

``ray up`` re-runs a node's start commands on every ``ray up``, and Ray's own
configs begin with ``ray stop``, which kills every Ray process of the user on the
host. Here, as in ``smoke down``, only the processes of the session the previous
start created are stopped (:func:`cluster.processes.stop_session`). The record
holds the kernel's boot id: after a reboot the old session id may belong to
someone else, so a record from an earlier boot is ignored.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from cluster.processes import session_pids, stop_session

DEFAULT_RECORD = Path.home() / ".smoke" / "ray-session.json"
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def boot_id() -> str:
    return BOOT_ID.read_text().strip()


def start(command: list[str], record: Path = DEFAULT_RECORD) -> int:
    """Run ``command`` as the leader of a new session, record the session, return its exit code."""
    process = subprocess.Popen(command, start_new_session=True)
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({"session_id": process.pid, "boot_id": boot_id(), "command": command}))
    return process.wait()


def stop(record: Path = DEFAULT_RECORD, grace_s: float = 10.0) -> int:
    """Stop the recorded session's processes; returns how many there were (0 if none or no valid record)."""
    try:
        data = json.loads(record.read_text())
    except (OSError, ValueError):
        return 0
    record.unlink()
    if data.get("boot_id") != boot_id() or not session_pids(int(data["session_id"])):
        return 0
    return stop_session(int(data["session_id"]), grace_s=grace_s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster.node_session", description=__doc__.splitlines()[0])
    parser.add_argument("--record", type=Path, default=DEFAULT_RECORD,
                        help=f"session record (default {DEFAULT_RECORD})")
    sub = parser.add_subparsers(dest="action", required=True)
    run = sub.add_parser("start", help="run a command (after --) in a new session and record it")
    run.add_argument("command", nargs=argparse.REMAINDER)
    sub.add_parser("stop", help="stop the processes of the recorded session")
    args = parser.parse_args(argv)
    if args.action == "start":
        command = args.command[1:] if args.command[:1] == ["--"] else args.command
        if not command:
            parser.error("start needs a command after --")
        return start(command, args.record)
    stopped = stop(args.record)
    print(f"stopped {stopped} processes of the recorded session" if stopped else "no recorded session running")
    return 0


if __name__ == "__main__":
    sys.exit(main())
