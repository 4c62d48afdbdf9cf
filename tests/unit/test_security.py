"""Security checks as tests (issue 13): uploads stay in ``<kb>/uploads``, untrusted text never
renders as markup, the model server is not exposed without a key, and the page's password is
compared in constant time and throttled."""

from __future__ import annotations

import hmac
import importlib.util
import os
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from markdown_it import MarkdownIt
from streamlit.testing.v1 import AppTest

from rag import server as server_module
from rag.components import Components
from rag.config import AppConfig, load_config
from rag.errors import ConfigError
from rag.files import write_bytes_atomic
from rag.prompt import Prompt
from rag.server import ModelServer, is_healthy, server_command, server_environment
from rag.types import Citation
from tests.fakes import FakeEmbedder
from tests.openai_server import RecordingChatServer
from ui import auth as auth_module
from ui.auth import PasswordThrottle, ThrottleRule, check_password
from ui.render import (
    answer_html,
    citation_title,
    file_name,
    highlight_html,
    markdown_literal,
    passage_html,
    sanitize_filename,
)
from ui.service import UPLOAD_DIR_NAME, ChatService, server_readiness

# ---------------------------------------------------------------------------------------------
# 1. Uploads cannot leave <kb>/uploads
# ---------------------------------------------------------------------------------------------

HOSTILE_NAMES = [
    "../../escape.txt",
    "../../../../../../tmp/escape2.txt",
    "/etc/absolute.txt",
    "/tmp/absolute2.md",
    "nul\x00byte.txt",
    "../nul\x00/../x.txt",
    "..\\..\\windows.txt",
    "C:\\drive.txt",
    "C:relative.txt",
    "\\\\server\\share\\unc.txt",
    "..／..／fullwidth-solidus.txt",  # U+FF0F
    "..∕..∕division-slash.txt",  # U+2215
    "．．／．．／fullwidth-stops.txt",  # U+FF0E U+FF0F
    "..⁄fraction-slash.txt",  # U+2044
    ".",
    "..",
    "...",
    "....txt",
    ".txt",
    "a" * 400 + ".txt",
    "字" * 200 + ".txt",  # 3 bytes a character: 120 characters would be 360 bytes
    "é" * 300 + ".md",
    "CON.txt",
    "nul.md",
    "com1 .txt",
    "LPT9.tar.txt",
    "name.txt.",
    "new\nline.txt",
    "\u202etxt.exe",  # right-to-left override
]


def _tree(root: Path) -> set[str]:
    """Every path under ``root``, links not followed, as strings relative to it."""
    found = set()
    for folder, dirs, files in os.walk(root, followlinks=False):
        for name in dirs + files:
            found.add(str((Path(folder) / name).relative_to(root)))
    return found


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_a_sanitised_name_is_one_plain_short_file_name(name: str) -> None:
    safe = sanitize_filename(name)
    assert safe and Path(safe).name == safe and safe not in (".", "..")
    assert not any(c in safe for c in "/\\\x00:\n") and not safe.startswith(".") and not safe.endswith((".", " "))
    assert len(safe.encode()) <= 120
    assert safe.split(".")[0].rstrip().upper() not in {"CON", "PRN", "AUX", "NUL", "COM1", "LPT9"}


def test_look_alike_separators_and_reserved_names_become_plain_names() -> None:
    assert sanitize_filename("．．／．．／x.pdf") == "x.pdf"  # NFKC first: it is ../../x.pdf
    assert sanitize_filename("..\\..\\x.pdf") == sanitize_filename("C:\\x.pdf") == "x.pdf"
    assert sanitize_filename("a∕b.pdf") == "a_b.pdf"
    assert sanitize_filename("CON.pdf") == "_CON.pdf" and sanitize_filename("..") == "upload"
    long = sanitize_filename("字" * 200 + ".pdf")
    assert long.endswith(".pdf") and len(long.encode()) <= 120


@pytest.fixture
def upload_service(tmp_path: Path, make_config: Any, monkeypatch: pytest.MonkeyPatch) -> ChatService:
    # The knowledge base deep in the tree, so "../../" from uploads lands inside what is watched;
    # the working directory inside it too, so a relative write would show.
    kb = tmp_path / "deep" / "er" / "kb"
    kb.parent.mkdir(parents=True)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    config = make_config(kb_dir=kb, embedding__model="fake/hashing-64", ingest__workers=0)
    service = ChatService(config, embedder=FakeEmbedder())
    service.load = lambda: None  # type: ignore[method-assign]  # nothing else is needed to add files
    return service


def test_hostile_upload_names_are_stored_in_the_upload_folder_only(upload_service: ChatService, tmp_path: Path) -> None:
    uploads = upload_service.config.kb_dir / UPLOAD_DIR_NAME
    before = _tree(tmp_path)
    files = [(name, f"Upload number {i} about llamas.\n".encode()) for i, name in enumerate(HOSTILE_NAMES)]
    result = upload_service.add_files(files)

    assert result.saved, result.rejected
    for path in result.saved:
        assert path.resolve().parent == uploads.resolve() and path.is_file() and not path.is_symlink()
    # Every name either stored or refused (an unsupported type), never both, never lost.
    assert len(result.saved) + len(result.rejected) == len(files)
    assert {name for name, _ in result.rejected} <= {".", "..", "...", "....txt", ".txt", "\u202etxt.exe"}
    # Nothing new outside the knowledge base; inside it, the uploads and the store's own files.
    new = _tree(tmp_path) - before
    kb = upload_service.config.kb_dir.relative_to(tmp_path)
    assert all(Path(p).is_relative_to(kb) for p in new), sorted(new)
    stored = {str(p.relative_to(tmp_path)) for p in result.saved}
    in_uploads = {p for p in new if Path(p).is_relative_to(kb / UPLOAD_DIR_NAME) and p != str(kb / UPLOAD_DIR_NAME)}
    assert in_uploads == stored
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "deep" / "escape.txt").exists()


@pytest.mark.parametrize("same_content", [False, True])
def test_a_planted_link_in_the_upload_folder_is_not_written_through_or_reused(
    upload_service: ChatService, tmp_path: Path, same_content: bool
) -> None:
    uploads = upload_service.config.kb_dir / UPLOAD_DIR_NAME
    uploads.mkdir(parents=True)
    outside = tmp_path / "outside.txt"
    data = b"The outside file about llamas.\n"
    outside.write_bytes(data if same_content else b"secret\n")
    (uploads / "x.txt").symlink_to(outside)
    (uploads / "x-2.txt").symlink_to(tmp_path / "dangling.txt")  # a link to nothing yet

    result = upload_service.add_files([("x.txt", data)])

    [saved] = result.saved
    assert saved.name == "x-3.txt" and saved.resolve().parent == uploads.resolve() and not saved.is_symlink()
    assert outside.read_bytes() == (data if same_content else b"secret\n")
    assert not (tmp_path / "dangling.txt").exists()


def test_the_atomic_write_replaces_a_link_instead_of_following_it(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"secret")
    link = tmp_path / "uploads" / "x.pdf"
    link.parent.mkdir()
    link.symlink_to(outside)
    write_bytes_atomic(link, b"upload")
    assert not link.is_symlink() and link.read_bytes() == b"upload" and outside.read_bytes() == b"secret"


def test_the_atomic_write_does_not_follow_a_link_at_its_partial_name(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"secret")
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    (uploads / ".x.pdf.partial").symlink_to(outside)
    write_bytes_atomic(uploads / "x.pdf", b"upload")
    assert outside.read_bytes() == b"secret" and not (uploads / "x.pdf").is_symlink()


# ---------------------------------------------------------------------------------------------
# 2. Document text, file names and model output never render as markup
# ---------------------------------------------------------------------------------------------

PAYLOADS = [
    "<script>alert(1)</script>",
    '<img src=x onerror="alert(1)">',
    "<a href='javascript:alert(1)'>click</a>",
    "[click](javascript:alert(1))",
    "![beacon](http://evil.example/pixel.png)",
    "<http://evil.example> and https://evil.example/x",
    "**bold** _it_ `code` ~~gone~~ $x^2$ :red[red] :material/home:",
    "# heading\n\n- list\n\n<details open ontoggle=alert(1)>",
    "&lt;script&gt; &#60;b&#62;",
    "quote \" and ' in an attribute",
]
OUR_TAGS = {"div", "span", "mark", "em"}
OUR_ATTRIBUTES = {"class", "style", "title"}


class _Tags(HTMLParser):
    """The tags and attributes an HTML string really has, and its text as a browser shows it."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(markup: str) -> _Tags:
    parser = _Tags()
    parser.feed(markup)
    parser.close()
    return parser


def _assert_only_our_markup(markup: str, payload: str) -> None:
    parsed = _parse(markup)
    for tag, attributes in parsed.tags:
        assert tag in OUR_TAGS, (tag, markup)
        assert set(attributes) <= OUR_ATTRIBUTES, (attributes, markup)
        assert not any("javascript" in (value or "") for value in attributes.values())
    assert payload in "".join(parsed.text)  # shown as the characters it is


@pytest.mark.parametrize("payload", PAYLOADS)
def test_answers_and_passages_come_out_as_escaped_text(payload: str) -> None:
    text = f"Before {payload} after [1]."
    _assert_only_our_markup(answer_html(text), payload)
    _assert_only_our_markup(answer_html(text, [(0, len(text))]), payload)
    _assert_only_our_markup(passage_html(text), payload)
    start = text.index(payload)
    _assert_only_our_markup(highlight_html(text, start, start + len(payload)), payload)
    _assert_only_our_markup(highlight_html(text, 0, 3, context=len(text)), payload)


def _markdown_shows(markdown: str) -> str:
    """What a Markdown renderer (CommonMark, raw HTML allowed: the worst case) makes of
    ``markdown``: its text, after checking that it made a single plain paragraph."""
    rendered = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"]).render(markdown)
    parsed = _parse(rendered)
    assert [tag for tag, _ in parsed.tags] == ["p"], rendered
    return "".join(parsed.text).strip()  # character references already decoded by the parser


@pytest.mark.parametrize("payload", PAYLOADS)
def test_markdown_labels_show_untrusted_text_literally(payload: str) -> None:
    one_line = " ".join(payload.split("\n")).replace("  ", " ")
    assert _markdown_shows(markdown_literal(payload)).replace("  ", " ") == one_line
    # A citation card's title (an expander label) from a file named with the payload.
    name = payload.replace("/", "_").replace("\n", " ")
    citation = Citation(1, 1, f"/kb/docs/{name}.pdf", f"{name}.pdf", 2, None, 0, 1, "q", 0.5, "s")
    assert _markdown_shows(markdown_literal(citation_title(citation))) == citation_title(citation)


def test_a_file_name_in_the_pages_messages_is_escaped() -> None:
    """The warning of a source that changed names the file: Markdown, so the name is escaped
    (it was not before this test)."""

    def gone(source: str) -> None:
        from ui.chat_page import _source

        _source(None, "quote", source, "key")

    source = "/kb/docs/![beacon](http:evil.example) **x** <b>.pdf"
    app = AppTest.from_function(gone, kwargs={"source": source}, default_timeout=30).run()
    [warning] = app.warning
    assert _markdown_shows(warning.value).startswith(file_name(source) + " has changed")


# ---------------------------------------------------------------------------------------------
# 3. The model server: loopback by default, a key when exposed, the key sent by every client
# ---------------------------------------------------------------------------------------------

KEY = "k3y-that-must-not-show"


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_module, "has_cuda", lambda: False)


def test_the_server_binds_loopback_by_default_without_a_key(make_config: Any, no_gpu: None) -> None:
    config = make_config()
    assert config.generator.host == "127.0.0.1" and config.generator.api_key is None
    command = server_command(config, "/models/m", config.generator.host, config.generator.port)
    assert command[command.index("--host") + 1] == "127.0.0.1" and "--api-key" not in command
    assert "VLLM_API_KEY" not in server_environment(config, cpu=True)


def test_an_exposed_server_gets_the_key_in_its_environment_not_its_command_line(make_config: Any, no_gpu: None) -> None:
    config = make_config(generator__host="0.0.0.0", generator__api_key=KEY)
    command = server_command(config, "/models/m", "0.0.0.0", 8000)
    assert command[command.index("--host") + 1] == "0.0.0.0"
    assert not any(KEY in part for part in command) and "--api-key" not in command  # ps shows the command
    assert server_environment(config, cpu=True)["VLLM_API_KEY"] == KEY
    assert KEY not in repr(config) and KEY not in config.model_dump_json()  # logs and run records


def test_the_installed_vllm_server_reads_its_key_from_the_environment() -> None:
    spec = importlib.util.find_spec("vllm")
    assert spec is not None and spec.origin is not None
    register = Path(spec.origin).parent / "entrypoints" / "serve" / "middleware" / "register.py"
    assert "envs.VLLM_API_KEY" in register.read_text()


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5", "example.org"])
def test_an_exposed_server_without_a_key_is_refused_before_anything_starts(
    make_config: Any, monkeypatch: pytest.MonkeyPatch, host: str
) -> None:
    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("nothing may be probed or started")

    monkeypatch.setattr(server_module.subprocess, "Popen", forbidden)
    monkeypatch.setattr(server_module, "is_healthy", forbidden)
    with pytest.raises(ConfigError, match=r"generator\.api_key"):
        ModelServer(make_config(generator__host=host)).start(wait=False)


def test_the_key_comes_from_the_environment_variable(tmp_path: Path) -> None:
    config = load_config(environ={"RAG_GENERATOR_API_KEY": KEY, "RAG_GENERATOR_HOST": "0.0.0.0"})
    assert config.generator.api_key is not None and config.generator.api_key.get_secret_value() == KEY


@pytest.fixture
def recording_server() -> Iterator[RecordingChatServer]:
    with RecordingChatServer() as server:
        yield server


def test_the_clients_send_the_key(make_config: Any, recording_server: RecordingChatServer) -> None:
    port = recording_server.port
    config: AppConfig = make_config(generator__port=port, generator__api_key=KEY)
    prompt = Prompt("q", ({"role": "user", "content": "q"},), "q", 1, (), 0)
    assert list(Components(config).server_generator().stream(prompt)) == ["Hi"]
    assert is_healthy("127.0.0.1", port, key=KEY)
    assert server_readiness(Components(config)) is None
    assert recording_server.seen == [
        ("/v1/chat/completions", f"Bearer {KEY}"),
        ("/health", f"Bearer {KEY}"),
        ("/health", f"Bearer {KEY}"),
    ]


# ---------------------------------------------------------------------------------------------
# 4. The page's password: constant-time comparison, throttled per session and per process
# ---------------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


SESSION = ThrottleRule(failures=5, window_s=300.0, lockout_s=30.0, max_lockout_s=100.0)
PROCESS = ThrottleRule(failures=20, window_s=300.0, lockout_s=60.0, max_lockout_s=900.0)


def test_five_failures_lock_a_session_for_a_growing_delay() -> None:
    clock = FakeClock()
    throttle = PasswordThrottle(SESSION, PROCESS, clock)
    for _ in range(4):
        assert check_password("wrong", "right", throttle, "s1") == "wrong"
    assert throttle.retry_after("s1") == 0.0
    assert check_password("wrong", "right", throttle, "s1") == "wrong"
    assert throttle.retry_after("s1") == 30.0
    assert check_password("right", "right", throttle, "s1") == "throttled"  # even the right one, while locked
    assert throttle.retry_after("other") == 0.0  # another session is not locked out by this one
    clock.now += 30.0
    for _ in range(5):
        assert check_password("wrong", "right", throttle, "s1") == "wrong"
    assert throttle.retry_after("s1") == 60.0  # doubled
    clock.now += 60.0
    for _ in range(5):
        check_password("wrong", "right", throttle, "s1")
    assert throttle.retry_after("s1") == 100.0  # capped
    clock.now += 100.0
    assert check_password("right", "right", throttle, "s1") == "accepted"
    assert throttle.tracked_sessions() == 0  # success forgets the session


def test_failures_spread_beyond_the_window_do_not_lock() -> None:
    clock = FakeClock()
    throttle = PasswordThrottle(SESSION, PROCESS, clock)
    for _ in range(10):
        assert check_password("wrong", "right", throttle, "s1") == "wrong"
        clock.now += 61.0  # 5 failures always span more than 300 s
    assert throttle.retry_after("s1") == 0.0


def test_new_sessions_do_not_get_unlimited_tries() -> None:
    clock = FakeClock()
    throttle = PasswordThrottle(SESSION, PROCESS, clock)
    for session in range(20):  # a script opening a new session for every guess
        assert check_password(f"guess{session}", "right", throttle, f"s{session}") == "wrong"
    assert throttle.retry_after("fresh") == 60.0
    assert check_password("right", "right", throttle, "fresh") == "throttled"
    clock.now += 60.0
    assert check_password("right", "right", throttle, "fresh") == "accepted"


def test_forgotten_sessions_cost_no_memory() -> None:
    clock = FakeClock()
    throttle = PasswordThrottle(SESSION, PROCESS, clock)
    for session in range(10):
        throttle.failed(f"s{session}")
    assert throttle.tracked_sessions() == 10
    clock.now += 301.0
    throttle.failed("late")
    assert throttle.tracked_sessions() == 1


def test_the_password_is_compared_with_compare_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[object, object]] = []
    real = hmac.compare_digest

    def recording(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth_module.hmac, "compare_digest", recording)
    throttle = PasswordThrottle(SESSION, PROCESS, FakeClock())
    assert check_password("wrong", "right", throttle, "s") == "wrong"
    assert check_password("right", "right", throttle, "s") == "accepted"
    assert calls == [(b"wrong", b"right"), (b"right", b"right")]
    for _ in range(5):
        check_password("wrong", "right", throttle, "s")
    calls.clear()
    assert check_password("right", "right", throttle, "s") == "throttled" and calls == []  # no oracle while locked


@pytest.fixture
def fresh_throttle() -> Iterator[None]:
    from ui.app import password_throttle

    password_throttle.clear()
    yield
    password_throttle.clear()


def test_the_page_refuses_guesses_after_five_failures(make_config: Any, fresh_throttle: None) -> None:
    def gated(config: object) -> None:
        import streamlit as st

        from ui.app import password_gate

        if password_gate(config):  # type: ignore[arg-type]
            st.success("inside")

    app = AppTest.from_function(gated, kwargs={"config": make_config(ui__password="s3cret")}, default_timeout=30)
    app.run()
    for attempt in range(4):
        app.text_input(key="password").input(f"guess{attempt}").run()
        assert not app.success and [e.value for e in app.error] == ["Wrong password."]
    app.run().run()  # reruns with the same value in the box are not more failures
    assert [e.value for e in app.error] == ["Wrong password."]
    app.text_input(key="password").input("guess4").run()
    assert [e.value for e in app.error] == ["Too many wrong passwords. Try again in 30 s."]
    app.text_input(key="password").input("s3cret").run()
    assert not app.success and app.error[0].value.startswith("Too many wrong passwords")
