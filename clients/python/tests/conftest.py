"""Starts the real hub for each test: the binary cargo built (HUB_BIN, default the
repository's target/debug/runnel) on 127.0.0.1:0 with a fresh data directory."""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
BIN = Path(os.environ.get("HUB_BIN", ROOT / "target" / "debug" / "runnel"))
LISTENING = re.compile(r"listening on (https?)://([0-9.]+:[0-9]+)")


class Hub:
    """One runnel process; ``restart()`` and ``kill9()`` keep the data dir and the port."""

    def __init__(self, data: Path, env: dict[str, str]) -> None:
        if not BIN.exists():
            raise RuntimeError(f"no hub binary at {BIN}: run `cargo build` or set HUB_BIN")
        self.data = data
        # Only the test's own RUNNEL_* settings: the hub refuses unknown ones.
        outside = {k: v for k, v in os.environ.items() if not k.startswith("RUNNEL_")}
        self.env = {**outside, **env}
        self.proc: subprocess.Popen[bytes] | None = None
        self.addr = "127.0.0.1:0"
        self.scheme = "http"
        self.log = data.parent / "hub.log"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.addr}"

    def start(self) -> None:
        offset = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [str(BIN), "serve", "--listen", self.addr, "--data", str(self.data)],
                env=self.env,
                stdout=out,
                stderr=out,
                cwd=self.data.parent,
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            # The log is appended to across restarts: read this process's part only.
            m = LISTENING.search(self.log.read_bytes()[offset:].decode(errors="replace"))
            if m is not None:
                self.scheme, self.addr = m.group(1), m.group(2)
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"the hub exited: {self.log.read_text()}")
            time.sleep(0.05)
        raise RuntimeError("the hub did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=20)
        self.proc = None

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def token(self, sub: str, *args: str) -> str:
        out = subprocess.run(
            [str(BIN), "token", "--sub", sub, *args],
            env=self.env,
            check=True,
            capture_output=True,
            text=True,
        )
        return out.stdout.strip()

    def freeze(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)


def events(sub, n):
    """The next n events of a subscription (resets skipped)."""
    from runnel import Event

    out = []
    while len(out) < n:
        item = next(sub)
        if isinstance(item, Event):
            out.append(item)
    return out


def _hub(tmp_path: Path, env: dict[str, str]) -> Iterator[Hub]:
    hub = Hub(tmp_path / "data", env)
    hub.start()
    try:
        yield hub
    finally:
        if hub.proc is not None:
            hub.thaw()
        hub.stop()


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    """An open hub (no credentials configured, loopback only) with a short heartbeat."""
    yield from _hub(tmp_path, {"RUNNEL_STREAM_HEARTBEAT": "1s"})


@pytest.fixture
def auth_hub(tmp_path: Path) -> Iterator[Hub]:
    """A hub that requires JWTs signed with a random secret."""
    env = {"RUNNEL_AUTH_JWT_SECRET": secrets.token_urlsafe(32), "RUNNEL_STREAM_HEARTBEAT": "1s"}
    yield from _hub(tmp_path, env)
