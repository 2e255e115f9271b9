"""A local ``redis-server`` process for tests, benchmarks and ``make cluster-demo`` (never a mock).

    with RedisServer(data_dir) as r:    # a free port on 127.0.0.1, append-only file in data_dir
        r.url                           # redis://127.0.0.1:<port>/0

Stopping and starting again on the same port and data dir brings back what was written: Redis writes each
command to its append-only file before it answers, so a killed server loses nothing it acknowledged (a
machine crash loses up to the last second, the default fsync interval). ``make setup`` installs Debian's ``redis-server``; ``$Q2REC_REDIS_SERVER``
names another binary.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path


def redis_binary() -> str:
    found = os.environ.get("Q2REC_REDIS_SERVER") or shutil.which("redis-server")
    if not found:
        raise FileNotFoundError(
            "redis-server not found: `make setup` installs it (apt-get install -y redis-server), "
            "or set $Q2REC_REDIS_SERVER to a redis-server binary"
        )
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    def __init__(self, data_dir: str | Path, port: int | None = None) -> None:
        self.dir = Path(data_dir)
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 20.0) -> RedisServer:
        self.dir.mkdir(parents=True, exist_ok=True)
        cmd = [redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
               "--save", "", "--appendonly", "yes", "--protected-mode", "no"]  # fmt: skip
        log = open(self.dir / "redis.log", "ab")  # noqa: SIM115 - the server's lifetime, closed by Popen's owner
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited with {self.proc.returncode}; see {self.dir / 'redis.log'}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"redis-server on port {self.port} not answering after {timeout}s")
            time.sleep(0.1)

    def stop(self) -> None:
        """Kill the server (SIGKILL: what a crash does); what was fsynced comes back on the next start."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
