"""Starting, watching and stopping vLLM's OpenAI-compatible server on loopback, or watching the
one at ``generator.base_url`` that runs elsewhere.

Bound anywhere else, the server requires ``generator.api_key``: :meth:`ModelServer.start`
refuses to start without one. The key reaches vLLM as ``VLLM_API_KEY`` in its environment
(``--api-key`` would show it to every user in ``ps``), and every client here sends it.

The server runs in its own process session, so it outlives the ``rag`` command that started
it; ``<data_dir>/server.json`` records its pid, address and model, ``server.log`` its output.
It is launched as ``python -m vllm.entrypoints.openai.api_server``: on the CPU build the
``vllm`` command itself fails (it looks up a package named ``vllm``; PLATFORM.md).

With ``generator.base_url`` set the model is served elsewhere (a router in front of replicas, vLLM
with data parallelism, Ray Serve LLM): :class:`ExternalModelServer` stands in for
:class:`ModelServer` with the same methods, and starts and stops nothing.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from typing import Protocol

from rag.config import AppConfig, child_environment, vllm_environment
from rag.errors import ConfigError, GeneratorUnavailableError
from rag.generator import engine_settings, has_cuda
from rag.models import process_alive, resolve_generator_location


def api_base_url(host: str, port: int) -> str:
    """The OpenAI-compatible API of a vLLM server at ``host:port``: what its clients are given."""
    return f"http://{host}:{port}/v1"


@dataclass(frozen=True, slots=True)
class ServerState:
    pid: int
    host: str
    port: int
    model: str

    @property
    def base_url(self) -> str:
        return api_base_url(self.host, self.port)


@dataclass(frozen=True, slots=True)
class ServerStatus:
    state: ServerState | None
    running: bool
    healthy: bool
    external_url: str | None = None  # generator.base_url: a server rag neither started nor stops

    def describe(self) -> str:
        if self.external_url is not None:
            health = "healthy" if self.healthy else "not answering"
            return f"{health}: {self.external_url} (generator.base_url; rag neither starts nor stops it)"
        if self.state is None or not self.running:
            return "stopped"
        health = "healthy" if self.healthy else "starting (not healthy yet)"
        return f"{health}: {self.state.model} at {self.state.base_url} (pid {self.state.pid})"


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (``127.0.0.0/8``, ``::1``): only this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def api_key(config: AppConfig) -> str | None:
    """The configured ``generator.api_key``, in clear, for the server's environment and the clients."""
    key = config.generator.api_key
    return key.get_secret_value() if key is not None else None


def require_key_when_exposed(config: AppConfig) -> None:
    """Raise :class:`ConfigError` when the server would bind beyond loopback without a key."""
    host = config.generator.host
    if not is_loopback(host) and not api_key(config):
        raise ConfigError(
            f"generator.api_key is required when generator.host ({host}) is not loopback: anyone who reaches "
            "the port could use the model; set generator.api_key (RAG_GENERATOR_API_KEY), or bind 127.0.0.1"
        )


def server_environment(config: AppConfig, *, cpu: bool) -> dict[str, str]:
    """vLLM's environment for the server: :func:`rag.config.vllm_environment` plus the key, if any."""
    env = vllm_environment(config, cpu=cpu)
    key = api_key(config)
    if key:
        env["VLLM_API_KEY"] = key  # read by vLLM's API server; unlike --api-key, not shown by ps
    return env


def is_healthy(host: str, port: int, timeout: float = 2.0, key: str | None = None) -> bool:
    """True when the server at ``host:port`` answers ``/health`` with 200. vLLM does not guard
    ``/health`` with its key; ``key`` is sent anyway, so a server (or proxy) that does still answers."""
    return _answers_200(f"http://{host}:{port}/health", timeout, key)


def api_answers(base_url: str, timeout: float = 5.0, key: str | None = None) -> bool:
    """True when the OpenAI-compatible API at ``base_url`` answers ``GET {base_url}/models`` with
    200. Unlike ``/health`` (vLLM's own, outside ``/v1``), every such API has it, routers pass it
    on, and vLLM guards it with its key: a 200 also says that ``key`` is accepted."""
    return _answers_200(f"{base_url}/models", timeout, key)


def _answers_200(url: str, timeout: float, key: str | None) -> bool:
    request = urllib.request.Request(url)
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def server_command(config: AppConfig, location: str, host: str, port: int) -> list[str]:
    """The command line that starts the server with the configured model and settings. It holds
    no secret: the key goes in the environment (:func:`server_environment`)."""
    settings = engine_settings(config, has_cuda())
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", location,
        "--served-model-name", config.generator.model,
        "--dtype", str(settings["dtype"]),
        "--max-model-len", str(settings["max_model_len"]),
        "--host", host,
        "--port", str(port),
        "--enable-prefix-caching" if settings["enable_prefix_caching"] else "--no-enable-prefix-caching",
    ]  # fmt: skip
    if settings["enforce_eager"]:
        command.append("--enforce-eager")
    if "gpu_memory_utilization" in settings:
        command += ["--gpu-memory-utilization", str(settings["gpu_memory_utilization"])]
    return command


class ModelServerControl(Protocol):
    """What the commands ask of the configured model server: :class:`ModelServer` (started and
    stopped here) or :class:`ExternalModelServer` (``generator.base_url``)."""

    @property
    def managed(self) -> bool:
        """True when rag starts and stops this server."""
        ...

    def status(self) -> ServerStatus: ...

    def start(self, *, wait: bool = True, port: int | None = None) -> ServerStatus: ...

    def stop(self) -> bool: ...


class ExternalModelServer:
    """The OpenAI-compatible API at ``generator.base_url``, served by whatever runs there. rag
    starts and stops nothing: :meth:`start` only checks that it answers."""

    managed = False

    def __init__(self, config: AppConfig) -> None:
        if config.generator.base_url is None:
            raise ValueError("ExternalModelServer needs generator.base_url")
        self._config = config
        self.base_url = config.generator.base_url

    def status(self) -> ServerStatus:
        up = api_answers(self.base_url, key=api_key(self._config))
        return ServerStatus(None, running=up, healthy=up, external_url=self.base_url)

    def start(self, *, wait: bool = True, port: int | None = None) -> ServerStatus:
        """The status when the API answers. Raises :class:`GeneratorUnavailableError` at once when it
        does not (nothing here could make it answer), :class:`ConfigError` when given a port."""
        if port is not None:
            raise ConfigError(f"generator.base_url is set ({self.base_url}): rag starts no server, on any port")
        status = self.status()
        if not status.healthy:
            raise GeneratorUnavailableError(
                f"the model server at {self.base_url} (generator.base_url) does not answer GET {self.base_url}/models "
                "with 200; start it where it runs, check generator.api_key, or unset generator.base_url to have rag "
                "start a local server"
            )
        return status

    def stop(self) -> bool:
        raise ConfigError(
            f"generator.base_url is set ({self.base_url}): rag did not start the server there and does not stop it"
        )


class ModelServer:
    """The one model server of a data directory."""

    managed = True

    def __init__(self, config: AppConfig) -> None:
        self._config = config
        self._state_file = config.data_dir / "server.json"
        self.log_file = config.data_dir / "server.log"

    def _read_state(self) -> ServerState | None:
        try:
            return ServerState(**json.loads(self._state_file.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def status(self) -> ServerStatus:
        state = self._read_state()
        if state is not None:
            # A server this process started and that has exited stays a zombie, which signal 0 still
            # finds, until it is reaped: without this, a server that dies while starting is waited
            # for until startup_timeout_s instead of reported at once.
            _reap(state.pid)
        if state is None or not process_alive(state.pid):
            return ServerStatus(state, running=False, healthy=False)
        return ServerStatus(state, running=True, healthy=is_healthy(state.host, state.port, key=api_key(self._config)))

    def start(self, *, wait: bool = True, port: int | None = None) -> ServerStatus:
        """Start the server unless one is running; with ``wait``, return once it is healthy.

        Raises :class:`ConfigError` when ``generator.host`` is not loopback and no
        ``generator.api_key`` is set."""
        require_key_when_exposed(self._config)
        current = self.status()
        if current.running and current.state is not None:
            if current.state.model != self._config.generator.model:
                raise GeneratorUnavailableError(
                    f"a model server with {current.state.model!r} is running; stop it with `rag model stop` "
                    f"to serve {self._config.generator.model!r}"
                )
            return self.wait_until_healthy() if wait and not current.healthy else current
        host, port = self._config.generator.host, port or self._config.generator.port
        if is_healthy(host, port, key=api_key(self._config)):
            raise GeneratorUnavailableError(f"something else already serves on {host}:{port}; set generator.port")
        location = resolve_generator_location(self._config)
        self._config.data_dir.mkdir(parents=True, exist_ok=True)
        env = child_environment(server_environment(self._config, cpu=not has_cuda()))
        with self.log_file.open("ab") as log:
            process = subprocess.Popen(
                server_command(self._config, location, host, port),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # outlives this command; stopped with `rag model stop`
            )
        state = ServerState(process.pid, host, port, self._config.generator.model)
        self._state_file.write_text(json.dumps(asdict(state)))
        return self.wait_until_healthy() if wait else ServerStatus(state, running=True, healthy=False)

    def wait_until_healthy(self) -> ServerStatus:
        deadline = time.monotonic() + self._config.generator.startup_timeout_s
        while time.monotonic() < deadline:
            status = self.status()
            if not status.running:
                raise GeneratorUnavailableError(
                    f"the model server exited while starting; its log is {self.log_file}:\n{self._log_tail()}"
                )
            if status.healthy:
                return status
            time.sleep(1.0)
        raise GeneratorUnavailableError(
            f"the model server was not healthy after {self._config.generator.startup_timeout_s:.0f} s; "
            f"see {self.log_file}"
        )

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the server (SIGTERM to its process group, SIGKILL after ``timeout``); False if none ran."""
        state = self._read_state()
        if state is None or not process_alive(state.pid):
            self._state_file.unlink(missing_ok=True)
            return False
        os.killpg(state.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and process_alive(state.pid):
            _reap(state.pid)
            time.sleep(0.2)
        if process_alive(state.pid):
            os.killpg(state.pid, signal.SIGKILL)
        _reap(state.pid)
        self._state_file.unlink(missing_ok=True)
        return True

    def _log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _reap(pid: int) -> None:
    """Collect the exit status when the server is our own child, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
