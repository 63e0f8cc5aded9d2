"""The shared paths of a ``ray up`` cluster, checked and exported on every node by a setup command.

A multi-node stack needs two places every node sees: the stream's checkpoints (a
pyarrow filesystem URI such as ``s3://bucket/prefix``, or a path on a shared mount)
so that any node can restore any partition, and the model registry (a path every
node mounts, NFS or EFS) so that a Serve replica or a stream worker on a worker
node loads the same models as the head. The cluster files pass both to

    python -m cluster.shared_paths --checkpoint-dir URI --registry-dir PATH

which refuses the placeholders the files ship with (``CHANGE-ME``) with one line
saying what to set, refuses a registry directory that does not exist on the node
(the shared mount is missing: a local directory would give each node its own empty
registry), and writes ``SMOKE_STREAM__CHECKPOINT_DIR`` and ``SMOKE_TRAIN__REGISTRY_DIR``
to ``~/.smoke/cluster.env``, sourced from ``~/.bashrc`` (Ray runs every start command
through it, so Ray and everything it starts on the node get them).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

PLACEHOLDER = "CHANGE-ME"
ENV_FILE = Path("~/.smoke/cluster.env")
SOURCE_LINE = "[ -f ~/.smoke/cluster.env ] && . ~/.smoke/cluster.env  # smoke-detect shared paths"


class SharedPathError(ValueError):
    """A shared path that is a placeholder or cannot be shared; the message says what to set."""


def check(checkpoint_dir: str, registry_dir: str) -> None:
    """Raise :class:`SharedPathError` unless both paths are real and the registry is mounted here.

    >>> check("s3://CHANGE-ME/smoke/checkpoints", "/tmp")
    Traceback (most recent call last):
    ...
    cluster.shared_paths.SharedPathError: --checkpoint-dir is the placeholder 's3://CHANGE-ME/smoke/checkpoints': \
set it in the cluster file to a bucket you own (or a path every node mounts)
    """
    if PLACEHOLDER in checkpoint_dir:
        raise SharedPathError(f"--checkpoint-dir is the placeholder {checkpoint_dir!r}: set it in the cluster file "
                              f"to a bucket you own (or a path every node mounts)")
    if PLACEHOLDER in registry_dir:
        raise SharedPathError(f"--registry-dir is the placeholder {registry_dir!r}: set it in the cluster file to a "
                              f"path every node mounts (NFS, EFS)")
    if "://" not in checkpoint_dir and not Path(checkpoint_dir).is_absolute():
        raise SharedPathError(f"--checkpoint-dir {checkpoint_dir!r} must be a URI or an absolute path")
    registry = Path(registry_dir)
    if "://" in registry_dir or not registry.is_absolute():
        raise SharedPathError(f"--registry-dir {registry_dir!r} must be an absolute path (the registry is a "
                              f"directory tree; mount the shared filesystem there)")
    if not registry.is_dir():
        raise SharedPathError(f"--registry-dir {registry_dir} does not exist on this node: mount the shared "
                              f"filesystem there first (a local directory would be an empty registry per node)")


def install(checkpoint_dir: str, registry_dir: str, home: Path | None = None) -> Path:
    """Write the exports and source them from ``~/.bashrc`` (once); returns the env file."""
    home = home or Path.home()
    env_file = home / ENV_FILE.relative_to("~")
    env_file.parent.mkdir(parents=True, exist_ok=True)
    env_file.write_text(f"export SMOKE_STREAM__CHECKPOINT_DIR={shlex.quote(checkpoint_dir)}\n"
                        f"export SMOKE_TRAIN__REGISTRY_DIR={shlex.quote(registry_dir)}\n")
    bashrc = home / ".bashrc"
    text = bashrc.read_text() if bashrc.exists() else ""
    if SOURCE_LINE not in text:
        # First in the file: Debian's and Ubuntu's .bashrc return early for non-interactive shells.
        bashrc.write_text(SOURCE_LINE + "\n" + text)
    return env_file


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster.shared_paths", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint-dir", required=True, help="stream checkpoints: URI or shared path")
    parser.add_argument("--registry-dir", required=True, help="model registry: a path every node mounts")
    args = parser.parse_args(argv)
    try:
        check(args.checkpoint_dir, args.registry_dir)
    except SharedPathError as err:
        print(f"smoke shared paths: {err}", file=sys.stderr)
        return 2
    env_file = install(args.checkpoint_dir, args.registry_dir)
    print(f"shared paths: checkpoints {args.checkpoint_dir}, registry {args.registry_dir} (in {env_file})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
