"""``rag serve``: the model server, then the Streamlit page, stopped together by Ctrl-C."""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from rag.config import AppConfig, child_environment
from rag.server import ModelServerControl, is_loopback

APP = Path(__file__).with_name("app.py")


def streamlit_command(config: AppConfig, host: str, port: int, app_arguments: Sequence[str]) -> list[str]:
    """The ``streamlit run`` command line for the page, with its arguments after ``--``."""
    return [
        sys.executable, "-m", "streamlit", "run", str(APP),
        "--server.address", host,
        "--server.port", str(port),
        "--server.headless", "true",            # no browser opened on a server
        "--server.fileWatcherType", "none",     # an installed app: no reload on edits
        "--server.maxUploadSize", str(max(1, math.ceil(config.ui.max_upload_mb))),
        "--browser.gatherUsageStats", "false",  # nothing leaves the machine
        "--client.toolbarMode", "viewer",
        "--", *app_arguments,
    ]  # fmt: skip


def serve(
    config: AppConfig, server: ModelServerControl, host: str, port: int, app_arguments: Sequence[str], err: Console
) -> int:
    """Start (or reuse) ``server``, the configured model server, and wait until it is healthy,
    then run the page until it exits or Ctrl-C. A model server started here is stopped on the
    way out; one that was already running is left running for whoever started it, and one at
    ``generator.base_url`` is only checked to answer."""
    if not is_loopback(host) and config.ui.password is None:
        err.print(
            f"[yellow]warning:[/yellow] the page will be reachable from other machines at {host}:{port} "
            "without a password; set ui.password (RAG_UI_PASSWORD) to require one",
            markup=True,
        )
    before = server.status()
    started_here = server.managed and not before.running
    if server.managed and not before.healthy:
        err.print("starting the model server (about a minute on a CPU)…" if started_here else "waiting for it…")
    status = server.start(wait=True)
    err.print(f"model server: {status.describe()}")
    page = subprocess.Popen(streamlit_command(config, host, port, app_arguments), env=child_environment({}))
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    if started_here:
        stops = "the page and the model server"
    else:
        stops = "the page (the model server was already running)" if server.managed else "the page"
    err.print(f"the page is at http://{shown_host}:{port}  ·  Ctrl-C stops {stops}")
    try:
        return page.wait()
    except KeyboardInterrupt:
        page.terminate()
        try:
            page.wait(timeout=30)
        except subprocess.TimeoutExpired:
            page.kill()
        return 130
    finally:
        if started_here:
            err.print("stopping the model server…")
            server.stop()
