"""`rag serve`'s lifecycle with a stand-in model server (a fake, passed in) and a real child
process in place of Streamlit: Ctrl-C stops the page, and the model server only if serve started it.
And the real ``ModelServer`` with a child that exits while starting."""

from __future__ import annotations

import io
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from rag.server import ServerState, ServerStatus
from ui import serve as serve_module
from ui.serve import is_loopback, serve, streamlit_command


class FakeModelServer:
    """A fake of rag.server.ModelServer that records what serve asked of it."""

    managed = True

    def __init__(self, running_before: bool) -> None:
        self.running_before = running_before
        self.calls: list[str] = []

    def status(self) -> ServerStatus:
        state = ServerState(1, "127.0.0.1", 8000, "m")
        return ServerStatus(state, running=self.running_before, healthy=self.running_before)

    def start(self, *, wait: bool = True) -> ServerStatus:
        self.calls.append("start")
        return ServerStatus(ServerState(1, "127.0.0.1", 8000, "m"), running=True, healthy=True)

    def stop(self) -> bool:
        self.calls.append("stop")
        return True


# The "page": a child that sends this test process SIGINT, as a terminal's Ctrl-C would.
CTRL_C = [sys.executable, "-c", "import os, signal, time; os.kill(os.getppid(), signal.SIGINT); time.sleep(30)"]


@pytest.mark.parametrize("running_before", [False, True])
def test_ctrl_c_stops_the_page_and_the_server_it_started(
    monkeypatch: pytest.MonkeyPatch, make_config: Any, running_before: bool
) -> None:
    monkeypatch.setattr(serve_module, "streamlit_command", lambda *args: CTRL_C)
    # As in `rag serve` started from a terminal: Ctrl-C raises KeyboardInterrupt. Something earlier
    # in a whole-suite run (an integration test's in-process engine) can leave this process
    # ignoring SIGINT, and the test would then wait out the child's sleep.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    server = FakeModelServer(running_before)
    console = Console(file=io.StringIO())
    try:
        code = serve(make_config(), server, "127.0.0.1", 8599, [], console)  # type: ignore[arg-type]
    finally:
        signal.signal(signal.SIGINT, previous)
    assert code == 130
    expected = ["start"] if running_before else ["start", "stop"]
    assert server.calls == expected


def test_the_streamlit_command_binds_as_asked_and_passes_the_configuration(make_config: Any) -> None:
    config = make_config(ui__max_upload_mb=2.5)
    command = streamlit_command(config, "127.0.0.1", 8600, ["--kb", "/x"])
    flags = dict(zip(command[5:-3:2], command[6:-3:2], strict=True))
    assert command[2:4] == ["streamlit", "run"] and command[4].endswith("ui/app.py")
    assert flags["--server.address"] == "127.0.0.1" and flags["--server.port"] == "8600"
    assert flags["--server.maxUploadSize"] == "3" and flags["--browser.gatherUsageStats"] == "false"
    assert command[-3:] == ["--", "--kb", "/x"]


def test_loopback_detection() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("example.org")


def test_a_server_that_dies_while_starting_is_reported_at_once(
    monkeypatch: pytest.MonkeyPatch, make_config: Any, tmp_path: Path
) -> None:
    # The child this process started exits at once; unreaped, it would stay a zombie that signal 0
    # still finds, and start would wait out startup_timeout_s (600 s) instead of reporting it.
    from rag import server as server_module
    from rag.errors import GeneratorUnavailableError
    from rag.server import ModelServer

    monkeypatch.setattr(server_module, "has_cuda", lambda: False)
    monkeypatch.setattr(server_module, "resolve_generator_location", lambda config: "/models/m")
    monkeypatch.setattr(
        server_module, "server_command", lambda *args: [sys.executable, "-c", "print('bad setting'); exit(3)"]
    )
    server = ModelServer(make_config(data_dir=tmp_path / "data", generator__startup_timeout_s=60))
    started = time.monotonic()
    with pytest.raises(GeneratorUnavailableError, match=r"(?s)exited while starting.*bad setting"):
        server.start(wait=True)
    assert time.monotonic() - started < 20
    assert not server.status().running
