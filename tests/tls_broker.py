"""A real TLS Kafka endpoint for tests: the embedded broker behind stunnel4, with a CA made for the test.

Tansu 0.6.0 cannot terminate TLS itself (its ``--cert`` and ``--key`` options exclude each
other, and with ``--cert`` alone its listener still speaks plaintext: measured), so Debian's
``stunnel4`` terminates TLS in front of it. Kafka clients connect to the addresses the
broker advertises in metadata, so the broker is started advertising the stunnel port:
every connection of every client, not only the bootstrap one, goes through TLS.

The CA, the server certificate (for 127.0.0.1 and localhost) and, with
``client_certs=True``, a client certificate signed by a second CA that stunnel then
requires (mutual TLS) are made with the ``openssl`` command in a temporary directory.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from ingest.broker import EmbeddedBroker, free_port, port_open

STUNNEL = shutil.which("stunnel4") or shutil.which("stunnel") or "/usr/bin/stunnel4"
# P-256 keys: an RSA-2048 key took up to 2 s to generate on the shared 2-core machine.
KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed CA: (certificate, key)."""
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    _openssl("req", "-x509", *KEY, "-nodes", "-keyout", key.name, "-out", cert.name, "-days", "2",
             "-subj", f"/CN={name}", cwd=directory)
    return cert, key


def make_cert(directory: Path, name: str, ca: tuple[Path, Path], san: str) -> tuple[Path, Path]:
    """A certificate signed by ``ca`` for ``san`` (``IP:127.0.0.1,DNS:localhost``): (certificate, key)."""
    cert, key, csr, ext = (directory / f"{name}.pem", directory / f"{name}.key", directory / f"{name}.csr",
                           directory / f"{name}.ext")
    ext.write_text(f"subjectAltName={san}\n")
    _openssl("req", *KEY, "-nodes", "-keyout", key.name, "-out", csr.name, "-subj", f"/CN={name}",
             cwd=directory)
    _openssl("x509", "-req", "-in", csr.name, "-CA", str(ca[0]), "-CAkey", str(ca[1]), "-CAcreateserial",
             "-out", cert.name, "-days", "2", "-extfile", ext.name, cwd=directory)
    return cert, key


@dataclass
class TlsBroker:
    """The embedded broker reachable only through TLS on ``bootstrap_servers``; a context manager."""

    directory: Path
    client_certs: bool = False
    ca: Path = field(init=False)
    other_ca: Path = field(init=False)  # signed nothing this endpoint presents: the wrong-CA case
    client_cert: Path | None = field(init=False, default=None)
    client_key: Path | None = field(init=False, default=None)
    port: int = field(init=False, default=0)
    broker: EmbeddedBroker | None = field(init=False, default=None)
    _stunnel: subprocess.Popen | None = field(init=False, default=None)

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> TlsBroker:
        self.directory.mkdir(parents=True, exist_ok=True)
        ca = make_ca(self.directory, "test-ca")
        self.ca = ca[0]
        self.other_ca = make_ca(self.directory, "other-ca")[0]
        server_cert, server_key = make_cert(self.directory, "broker", ca, "IP:127.0.0.1,DNS:localhost")
        self.port = free_port()
        self.broker = EmbeddedBroker(advertised_port=self.port, log_path=self.directory / "broker.log").start()
        conf = ["foreground = yes", "pid =", "debug = 4", "[kafka]", f"accept = 127.0.0.1:{self.port}",
                f"connect = 127.0.0.1:{self.broker.port}", f"cert = {server_cert}", f"key = {server_key}"]
        if self.client_certs:
            client_ca = make_ca(self.directory, "client-ca")
            self.client_cert, self.client_key = make_cert(self.directory, "client", client_ca, "DNS:client")
            conf += [f"CAfile = {client_ca[0]}", "verifyChain = yes"]
        (self.directory / "stunnel.conf").write_text("\n".join(conf) + "\n")
        log = open(self.directory / "stunnel.log", "ab")  # noqa: SIM115 (kept by the child)
        try:
            self._stunnel = subprocess.Popen([STUNNEL, str(self.directory / "stunnel.conf")], stdout=log,
                                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        finally:
            log.close()
        deadline = time.monotonic() + 10
        while not port_open("127.0.0.1", self.port):
            if self._stunnel.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"stunnel did not start: {(self.directory / 'stunnel.log').read_text()[-2000:]}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._stunnel is not None and self._stunnel.poll() is None:
            self._stunnel.terminate()
            try:
                self._stunnel.wait(5)
            except subprocess.TimeoutExpired:
                self._stunnel.kill()
                self._stunnel.wait(5)
        if self.broker is not None:
            self.broker.stop()

    def __enter__(self) -> TlsBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
