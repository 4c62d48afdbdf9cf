"""The Streamlit app: ``rag serve`` runs it (``streamlit run ui/app.py -- [--kb DIR] ...``).

The script runs once per interaction of each browser session. The configuration is read from
the arguments after ``--`` (the same ``--kb``, ``--config`` and ``--set`` as the ``rag``
command); the models and the knowledge base are loaded once per process by
:func:`chat_service` and shared by every session; the conversation lives in each session's
own ``st.session_state``.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import streamlit as st

from rag.config import AppConfig, load_config, parse_assignments
from rag.errors import RagError
from ui.auth import PasswordThrottle, check_password
from ui.chat_page import render_chat
from ui.eval_page import render_evaluation
from ui.render import markdown_literal
from ui.service import ChatService


def parse_app_arguments(argv: Sequence[str]) -> AppConfig:
    parser = argparse.ArgumentParser(prog="ui/app.py", add_help=False)
    parser.add_argument("--config", type=Path)
    parser.add_argument("--kb")
    parser.add_argument("--set", dest="settings", action="append", default=[])
    args, _ = parser.parse_known_args(list(argv))
    overrides: dict[str, Any] = parse_assignments(args.settings)
    if args.kb is not None:
        overrides["kb_dir"] = args.kb
    return load_config(args.config, overrides)


@st.cache_resource(show_spinner="Loading the models (once per server)…")
def chat_service(_config: AppConfig, key: str) -> ChatService:
    """One service per configuration per process; ``key`` (the configuration as JSON) is what
    Streamlit caches by, since the configuration object itself is not hashed."""
    del key
    service = ChatService(_config)
    service.load()
    return service


@st.cache_resource
def password_throttle() -> PasswordThrottle:
    """The one throttle of this process: every session's failures count towards its limit."""
    return PasswordThrottle()


def password_gate(config: AppConfig) -> bool:
    """True when the page may be shown: no password is configured, or this session gave it.

    Wrong passwords are throttled (:class:`ui.auth.PasswordThrottle`): after 5 in a session, or
    20 in the process, further ones are refused for a growing delay. A value is checked once:
    reruns while it stays in the box do not count again."""
    secret = config.ui.password
    state: Any = st.session_state
    if secret is None or state.get("authenticated"):
        return True
    st.title("Ask your documents")
    throttle = password_throttle()
    session = state.setdefault("auth_session", secrets.token_urlsafe(16))
    given = st.text_input("Password", type="password", key="password")
    digest = hashlib.sha256(given.encode()).digest()  # what was last checked, not the password itself
    if given and digest != state.get("password_checked"):
        outcome = check_password(given, secret.get_secret_value(), throttle, session)
        if outcome == "accepted":
            state.authenticated = True
            st.rerun()
        if outcome == "wrong":
            state.password_checked = digest
    wait = throttle.retry_after(session)
    if wait > 0:
        st.error(f"Too many wrong passwords. Try again in {math.ceil(wait)} s.")
    elif given:
        st.error("Wrong password.")
    return False


def main(argv: Sequence[str]) -> None:
    st.set_page_config(page_title="Ask your documents", page_icon="📚", layout="wide")
    try:
        config = parse_app_arguments(argv)
    except RagError as exc:
        st.error(f"Configuration error: {exc}")
        return
    if not password_gate(config):
        return

    def ask() -> None:
        try:
            service = chat_service(config, config.model_dump_json())
        except RagError as exc:
            st.error(markdown_literal(str(exc)))
            return
        render_chat(service)

    def evaluation() -> None:
        render_evaluation(config.eval.runs_dir)

    pages = [
        st.Page(ask, title="Ask", icon="💬", url_path="ask", default=True),
        st.Page(evaluation, title="Evaluation", icon="📊", url_path="evaluation"),
    ]
    st.navigation(pages).run()


if __name__ == "__main__":
    main(sys.argv[1:])
