"""The ``rag`` command: thin, it parses, calls the library, renders.

Exit status: 0 success; 1 usage or configuration error (or a knowledge base that cannot be
used); 2 partial failure (some files failed; the output says which).
Results go to standard output (``--json`` for scripts); progress and diagnostics go to
standard error, so ``rag ingest --json docs/ | jq`` works.
"""

from __future__ import annotations

import argparse
import json
import logging
import sqlite3
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from rag.components import Components
from rag.config import AppConfig, load_config, parse_assignments
from rag.errors import KnowledgeBaseError, RagError
from rag.records import AnswerRecord, HitRecord
from rag.types import Answer

EXIT_OK, EXIT_USAGE, EXIT_PARTIAL = 0, 1, 2


class UsageError(RagError):
    """The command line was used wrongly."""


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, help="configuration file (default: ./rag.toml if present)")
    common.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a configuration field, e.g. --set chunking.chunk_tokens=128 (repeatable)",
    )
    common.add_argument(
        "--kb",
        help="knowledge base: a directory (default: ./kb or RAG_KB_DIR), milvus://HOST:PORT/COLLECTION "
        "or milvus-lite:PATH.db",
    )
    common.add_argument("-v", "--verbose", action="store_true", help="log what happens")

    parser = argparse.ArgumentParser(prog="rag", description="Question answering over your own documents.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ingest = commands.add_parser("ingest", parents=[common], help="add or update documents in a knowledge base")
    ingest.add_argument(
        "paths", nargs="*", type=Path, metavar="PATH", help="files or folders to ingest (none: only --reindex)"
    )
    ingest.add_argument("--prune", action="store_true", help="remove documents whose files are gone")
    ingest.add_argument("--reindex", action="store_true", help="re-embed everything (after a model or chunking change)")
    ingest.add_argument("--json", action="store_true", help="print one JSON summary object")
    ingest.add_argument(
        "--engine",
        choices=["inprocess", "ray"],
        default="inprocess",
        help="inprocess (default): this process and its loader workers; ray: Ray Data stages, embedding on a "
        "GPU actor per GPU of the cluster (no --reindex yet)",
    )
    ingest.add_argument(
        "--ray-address", metavar="ADDR", help="with --engine ray: the Ray cluster to use (default: start a local one)"
    )

    check = commands.add_parser(
        "check", parents=[common], help="check a knowledge base for damage; --repair rebuilds what can be rebuilt"
    )
    check.add_argument(
        "--repair",
        action="store_true",
        help="rebuild the manifest, FAISS and BM25 indexes and manifest.json from the stored rows (deletes nothing)",
    )
    check.add_argument("--json", action="store_true", help="print one JSON object")

    info = commands.add_parser("info", parents=[common], help="describe a knowledge base")
    info.add_argument("--json", action="store_true", help="print one JSON object")

    search = commands.add_parser("search", parents=[common], help="show the passages that best match a query")
    search.add_argument("query", metavar="QUERY")
    search.add_argument("-k", type=int, default=5, help="how many passages (default 5)")
    search.add_argument("--json", action="store_true", help="print a JSON list, best first")

    ask = commands.add_parser("ask", parents=[common], help="answer a question, with citations")
    ask.add_argument("question", nargs="?", metavar="QUESTION")
    ask.add_argument("--json", action="store_true", help="print the Answer record as JSON")
    ask.add_argument("--stream", action="store_true", help="print the answer as it is generated")
    ask.add_argument(
        "--batch",
        type=Path,
        metavar="FILE",
        help="answer every question in FILE (one per line, or JSONL with a 'question' field) with in-process vLLM",
    )

    serve = commands.add_parser("serve", parents=[common], help="the web page, with the model server behind it")
    serve.add_argument("--host", help="address to bind (default: ui.host, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port of the page (default: ui.port, 8501)")

    model = commands.add_parser("model", parents=[common], help="the vLLM model server (OpenAI-compatible, loopback)")
    model.add_argument("action", choices=["start", "stop", "status", "provision"])
    model.add_argument("--port", type=int, help="port to serve on (default: generator.port)")

    add_eval_parser(commands, common)
    return parser


EVAL_USAGE = """\
rag eval DATASET [--kb DIR] [--out DIR] [--format own|beir|financebench] [--docs DIR]
                 [--retrieval-only | --closed-book] [--limit N] [--set KEY=VALUE ...] [--json]
rag eval compare RUN_A RUN_B [--out DIR] [--json]"""


def add_eval_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    """``rag eval``: one positional list, so ``compare`` needs no subcommand of its own (a dataset
    path stays a plain positional); :func:`cmd_eval` tells the two forms apart."""
    evaluate = commands.add_parser(
        "eval",
        parents=[common],
        usage=EVAL_USAGE,
        help="evaluate on a question set; `rag eval compare RUN_A RUN_B` compares two runs",
        description="Run a question set through the pipeline and write samples.jsonl, metrics.json, report.html "
        "and run.trec to a run folder; or compare two run folders question by question. A DATASET is the "
        "project's own JSONL, a BEIR folder or FinanceBench's JSONL. `compare` is read as the comparison only "
        "when two run folders follow it (write ./compare for a dataset of that name).",
    )
    evaluate.add_argument("targets", nargs="+", metavar="DATASET | compare RUN_A RUN_B")
    evaluate.add_argument(
        "--out",
        type=Path,
        help="run folder (default: <eval.runs_dir>/<dataset>-<UTC time>); "
        "an existing one is resumed. For compare: where compare.html goes (default: RUN_B)",
    )
    evaluate.add_argument(
        "--format", choices=["own", "jsonl", "beir", "financebench"], help="dataset format (default: detected)"
    )
    evaluate.add_argument("--docs", type=Path, help="FinanceBench's PDF folder (default: pdfs/ beside the file)")
    evaluate.add_argument("--retrieval-only", action="store_true", help="retrieve and score retrieval; no generator")
    evaluate.add_argument(
        "--closed-book",
        action="store_true",
        help="answer with no passages (the baseline that measures the gain from retrieval)",
    )
    evaluate.add_argument("--limit", type=int, help="only the first N questions")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")


def main(argv: Sequence[str] | None = None, components: Callable[[AppConfig], Components] | None = None) -> int:
    """Run the ``rag`` command; the exit status. ``components`` builds the models and clients
    from the configuration the command line gives (default :class:`Components`; tests pass a fake)."""
    args = build_parser().parse_args(argv)
    level = logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    err = Console(stderr=True, highlight=False)
    config: AppConfig | None = None
    try:
        config = _config_from(args)
        handler = {
            "ingest": cmd_ingest,
            "info": cmd_info,
            "check": cmd_check,
            "search": cmd_search,
            "ask": cmd_ask,
            "model": cmd_model,
            "serve": cmd_serve,
            "eval": cmd_eval,
        }[args.command]
        return handler(args, (components or Components)(config), err)
    except RagError as exc:
        err.print(f"[red]error:[/red] {exc}", markup=True, soft_wrap=True)
        return EXIT_USAGE
    except sqlite3.DatabaseError as exc:
        # Damage below the manifest (a torn or overwritten page of kb.sqlite) shows where a query
        # touches it; one line, as for every damaged knowledge base, not a stack trace.
        from rag.kb.sqlite_rows import database_damaged

        where = config.kb_dir if config is not None else "(unknown)"
        err.print(f"[red]error:[/red] {database_damaged(str(where), exc)}", markup=True, soft_wrap=True)
        return EXIT_USAGE
    except KeyboardInterrupt:
        err.print("interrupted: what was committed is kept; run the same command again to resume")
        return 130


def _config_from(args: argparse.Namespace) -> AppConfig:
    overrides: dict[str, Any] = parse_assignments(args.settings)
    if args.kb is not None:
        overrides["kb_dir"] = args.kb
    return load_config(args.config, overrides)


def _print_json(value: Any) -> None:
    """Print ``value`` (JSON data, a record, or a list of records) as indented JSON."""
    from pydantic import TypeAdapter

    sys.stdout.write(TypeAdapter(Any).dump_json(value, indent=2).decode("utf-8") + "\n")


def cmd_ingest(args: argparse.Namespace, components: Components, err: Console) -> int:
    from ingest.job import run_ingest
    from ingest.progress import IngestReporter, LineReporter, RichReporter, ocr_note, shown_path, textless_note

    if not args.paths and not args.reindex:
        raise UsageError("rag ingest needs a PATH (a file or folder), or --reindex to re-index what is stored")
    if args.ray_address and args.engine != "ray":
        raise UsageError("--ray-address needs --engine ray")
    config = components.config
    reporter: IngestReporter = RichReporter(err) if err.is_terminal else LineReporter(sys.stderr)
    if args.engine == "ray":
        from ingest.ray_job import run_ray_ingest

        summary = run_ray_ingest(
            args.paths,
            config,
            components.embedder,  # each Ray actor builds its own model with it
            reporter,
            prune=args.prune,
            reindex=args.reindex,
            address=args.ray_address,
        )
    else:
        embedder = components.embedder()
        summary = run_ingest(args.paths, config, embedder, reporter, prune=args.prune, reindex=args.reindex)
    if args.json:
        _print_json(summary.as_dict())
    else:
        if summary.failed:
            print(f"{len(summary.failed)} file(s) failed:")
            for failure in summary.failed:
                print(f"  {shown_path(failure.path)}: {failure.reason}")
        if summary.pages_read_by_ocr:
            print(f"{summary.ocr_pages} scanned page(s) of {len(summary.pages_read_by_ocr)} file(s) read by OCR:")
            for scanned in summary.pages_read_by_ocr:
                print(f"  {shown_path(scanned.path)}: {ocr_note(scanned.of, tuple(scanned.pages))} ({scanned.engine})")
        if summary.pages_without_text:
            print(f"{len(summary.pages_without_text)} file(s) have pages without text, stored empty:")
            for textless in summary.pages_without_text:
                print(f"  {shown_path(textless.path)}: {textless_note(textless.of, tuple(textless.pages))}")
        if not summary.changed and not args.reindex:
            print(f"nothing changed: {summary.unchanged} file(s) already up to date")
        else:
            print(
                f"added {summary.added}, updated {summary.updated}, unchanged {summary.unchanged}, "
                f"removed {summary.removed}, failed {len(summary.failed)}"
                + (f", skipped {summary.skipped} unsupported" if summary.skipped else "")
            )
        print(
            f"knowledge base {config.kb_dir}: {summary.documents} documents, {summary.chunks} chunks "
            f"({summary.seconds:.1f} s)"
        )
    return EXIT_PARTIAL if summary.failed else EXIT_OK


def cmd_check(args: argparse.Namespace, components: Components, err: Console) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from rag.check import check_knowledge_base, repair_knowledge_base

    config = components.config
    if not isinstance(config.kb_dir, Path):
        raise KnowledgeBaseError(
            f"`rag check` examines an embedded knowledge base directory; {config.kb_dir} is kept by Milvus, "
            "which checks its own storage (`rag info` shows its counts)"
        )
    if not args.repair:
        report = check_knowledge_base(config.kb_dir, config)
    else:
        columns = ("embedding passages again", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, console=err, transient=True) as bar:
            task = bar.add_task("embed", total=None)
            report = repair_knowledge_base(
                config.kb_dir,
                config,
                lambda built: components.embedder(built.embedding),  # the knowledge base's own model
                lambda done, total: bar.update(task, completed=done, total=total),
            )
    if args.json:
        _print_json(report.as_dict())
        return EXIT_OK if report.whole else EXIT_PARTIAL
    for line in report.repaired:
        print(f"repaired   {line}")
    for finding in report.findings:
        if args.repair and finding.level != "note":
            continue  # what a repair left wrong is listed below as not saved
        print(f"{finding.level:<10} {finding.part}: {finding.problem}")
        if finding.repair and finding.level != "note" and not args.repair:
            print(f"{'':<10} rag check --repair will {finding.repair}")
    for line in report.not_saved:
        print(f"not saved  {line}")
    problems = sum(f.level != "note" for f in report.findings)
    verdict = "whole" if report.whole else f"{problems} problem(s)"
    print(f"knowledge base {config.kb_dir}: {verdict}")
    return EXIT_OK if report.whole else EXIT_PARTIAL


def cmd_info(args: argparse.Namespace, components: Components, err: Console) -> int:
    from rag.kb import open_knowledge_base
    from rag.manifest import indexing_settings

    config = components.config
    with open_knowledge_base(config.kb_dir) as kb:
        stats = kb.stats()
        indexing = indexing_settings(kb.manifest)
        backend, quantization = kb.manifest.embedding_backend, kb.manifest.embedding_quantization
    last_run = None
    if stats.last_run is not None:
        run = stats.last_run
        last_run = {
            "id": run.id,
            "started_at": run.started_at,
            "finished_at": run.finished_at,
            "status": run.status,
            "summary": run.summary,
            "failed": run.failed,
        }
    info = {
        "path": str(config.kb_dir),
        "documents": stats.documents,
        "pages": stats.pages,
        "ocr_pages": stats.ocr_pages,
        "chunks": stats.chunks,
        "embedding_model": stats.embedding_model,
        "embedding_backend": backend,
        "embedding_quantization": quantization,
        "dimension": stats.dimension,
        "index": stats.index,
        "indexing": indexing,
        "bytes": stats.bytes,
        "last_run": last_run,
    }
    if args.json:
        _print_json(info)
        return EXIT_OK
    print(f"knowledge base   {info['path']}")
    scanned = f", {stats.ocr_pages} read by OCR" if stats.ocr_pages else ""
    print(f"documents        {stats.documents} ({stats.pages} pages{scanned})")
    print(f"chunks           {stats.chunks}")
    print(
        f"embedding model  {stats.embedding_model} ({stats.dimension} dimensions, {backend}"
        + (f" {quantization})" if quantization != "none" else ")")
    )
    print(f"index            {stats.index}")
    print("built with       " + ", ".join(f"{key} {value}" for key, value in indexing.items()))
    print(f"size on disk     {stats.bytes / 1e6:.1f} MB")
    if stats.last_run is None:
        print("last run         none")
    else:
        run = stats.last_run
        counts = ", ".join(
            f"{key} {run.summary[key]}" for key in ("added", "updated", "unchanged", "removed") if key in run.summary
        )
        print(f"last run         #{run.id} {run.status}, started {run.started_at}" + (f": {counts}" if counts else ""))
        for failure in run.failed:
            print(f"  failed         {failure.path}: {failure.reason}")
    return EXIT_OK


def _where(file: str, page: int | None) -> str:
    return file + (f", page {page}" if page is not None else "")


def cmd_search(args: argparse.Namespace, components: Components, err: Console) -> int:
    from rag.kb import open_knowledge_base

    config = components.config
    with open_knowledge_base(config.kb_dir, config) as kb:  # first: a missing one fails before a model loads
        hits = components.retriever(kb, components.embedder()).retrieve(args.query, args.k)
    rows = [HitRecord.of(hit) for hit in hits]
    if args.json:
        _print_json(rows)
        return EXIT_OK
    if not rows:
        print("no passages found")
    for rank, row in enumerate(rows, 1):
        print(f"[{rank}] {_where(row.file, row.page)}  (score {row.score or 0:.4f}, {'+'.join(row.retrievers)})")
        text = " ".join(row.text.split())
        print(f"    {text[:300]}{'…' if len(text) > 300 else ''}")
    return EXIT_OK


def _print_answer(answer: Answer, *, body: bool = True) -> None:
    if body:
        print(answer.text)
    if answer.abstained:
        print("\n(The documents do not answer this.)")
        if answer.retrieved:
            print("Closest passages:")
            for hit in answer.retrieved[:3]:
                print(f"  - {_where(hit.source, hit.chunk.page)}")
        return
    print()
    for c in answer.citations:
        quote = " ".join(c.quote.split())
        verdict = "" if c.supported else ", unsupported"
        who = "" if c.origin == "model" else ", attributed"
        print(f"[{c.n}] {_where(c.file, c.page)}: \u201c{quote[:240]}\u201d (support {c.support:.2f}{who}{verdict})")
    for start, end in answer.unverified:
        print(f"unverified: {answer.text[start:end]}")


def _read_questions(path: Path) -> list[str]:
    questions = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        if line.startswith("{"):
            try:
                questions.append(str(json.loads(line)["question"]))
            except (ValueError, KeyError):
                raise UsageError(f"{path}:{number}: expected a JSON object with a 'question' field") from None
        else:
            questions.append(line)
    return questions


def cmd_ask(args: argparse.Namespace, components: Components, err: Console) -> int:
    from rag.pipeline import AnswerDelta, build_pipeline

    if (args.question is None) == (args.batch is None):
        raise UsageError("give either a QUESTION or --batch FILE")
    config = components.config
    if args.batch is not None:
        questions = _read_questions(args.batch)
        local = components.vllm_generator()
        pipeline = build_pipeline(config, local, components=components)
        err.print(f"starting vLLM in-process for {len(questions)} questions…")
        local.load()
        try:
            answers = pipeline.answer_many(questions)
        finally:
            local.close()
        if args.json:
            _print_json([AnswerRecord.of(a) for a in answers])
        else:
            for each in answers:
                print(f"Q: {each.question}")
                _print_answer(each)
                print()
        return EXIT_OK

    # Build the pipeline first: a missing knowledge base or an unloadable model fails here, in
    # seconds, before a server start that takes a minute.
    server = components.model_server()
    pipeline = build_pipeline(config, components.server_generator(), components=components)
    if not server.status().healthy:
        if server.managed:  # else (generator.base_url) start only says why the server there does not answer
            err.print("starting the model server (about a minute on a CPU; `rag model stop` stops it)…")
        server.start(wait=True)
    if args.stream and not args.json:
        final: Answer | None = None
        for event in pipeline.stream(args.question):
            if isinstance(event, AnswerDelta):
                sys.stdout.write(event.text)
                sys.stdout.flush()
            else:
                final = event
        assert final is not None
        print()
        _print_answer(final, body=False)
        return EXIT_OK
    answer = pipeline.answer(args.question)
    if args.json:
        _print_json(AnswerRecord.of(answer))
    else:
        _print_answer(answer)
    return EXIT_OK


def cmd_model(args: argparse.Namespace, components: Components, err: Console) -> int:
    from rag.models import provision_default_generator

    server = components.model_server()
    if args.action == "provision":
        print(f"default generator ready at {provision_default_generator(components.config)}")
    elif args.action == "start":
        if server.managed:
            err.print("starting the model server…")
        print(server.start(wait=True, port=args.port).describe())
    elif args.action == "stop":
        print("stopped" if server.stop() else "no model server was running")
    else:
        status = server.status()
        print(status.describe())
        return EXIT_OK if status.healthy else EXIT_PARTIAL
    return EXIT_OK


def cmd_serve(args: argparse.Namespace, components: Components, err: Console) -> int:
    from ui.serve import serve

    config = components.config
    # The page reads the same configuration: pass on what this command line said.
    location = config.kb_dir
    app_arguments = ["--kb", str(location.absolute() if isinstance(location, Path) else location)]
    if args.config is not None:
        app_arguments += ["--config", str(args.config.absolute())]
    for setting in args.settings:
        app_arguments += ["--set", setting]
    host, port = args.host or config.ui.host, args.port or config.ui.port
    return serve(config, components.model_server(), host, port, app_arguments, err)


def cmd_eval(args: argparse.Namespace, components: Components, err: Console) -> int:
    targets = list(args.targets)
    if targets[0] == "compare" and len(targets) == 3:
        return _eval_compare(args, Path(targets[1]), Path(targets[2]), err)
    if len(targets) != 1:
        raise UsageError(f"expected one DATASET, or `compare RUN_A RUN_B`; usage:\n{EVAL_USAGE}")
    if args.retrieval_only and args.closed_book:
        raise UsageError("--retrieval-only and --closed-book exclude each other")
    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit must be at least 1")

    from eval.datasets import load_dataset
    from eval.judges import build_judge
    from eval.kbcache import prepare_kb
    from eval.progress import EvalReporter, LineEvalReporter, RichEvalReporter
    from eval.runner import default_run_dir, run_eval
    from ingest.progress import IngestReporter, LineReporter, RichReporter

    config = components.config
    dataset_format = "jsonl" if args.format == "own" else args.format
    dataset = load_dataset(Path(targets[0]), dataset_format, args.docs)
    out = args.out or default_run_dir(config, dataset)
    reporter: EvalReporter = RichEvalReporter(err) if err.is_terminal else LineEvalReporter(sys.stderr)
    mode = "retrieval-only" if args.retrieval_only else "closed-book" if args.closed_book else "full"
    # Paths may hold [brackets]: printed as they are, not as rich markup.
    err.print(f"evaluating {dataset.name} ({len(dataset.questions)} questions, {mode}) into {out}", markup=False)
    err.print(f"(if it stops, run the same command with --out {out} to continue)", markup=False)

    embedder = None
    kb_dir = config.kb_dir if args.kb is not None else None
    if not args.closed_book:
        embedder = components.embedder()
        # Build a benchmark's knowledge base before vLLM starts: an idle CPU engine spins its
        # threads and would slow the embedding down.
        ingest_reporter: IngestReporter = RichReporter(err) if err.is_terminal else LineReporter(sys.stderr)
        kb_dir = prepare_kb(dataset, config, embedder, kb_dir, ingest_reporter=ingest_reporter, reporter=reporter)
    judge = build_judge(config.eval) if not (args.retrieval_only or args.closed_book) else None
    generator, tokenizer = None, None
    if not args.retrieval_only:
        tokenizer = components.chat_tokenizer()
        generator = components.vllm_generator()
        err.print("starting vLLM in-process…")
        generator.load()
    try:
        summary = run_eval(
            dataset,
            config,
            out,
            generator=generator,
            embedder=embedder,
            kb_dir=kb_dir,
            retrieval_only=args.retrieval_only,
            closed_book=args.closed_book,
            limit=args.limit,
            judge=judge,
            tokenizer=tokenizer,
            reporter=reporter,
        )
    finally:
        if generator is not None:
            generator.close()
    if args.json:
        _print_json(summary.as_dict())
    else:
        print(
            f"{summary.dataset} ({summary.mode}): {summary.questions} questions, {summary.evaluated} evaluated now, "
            f"{summary.resumed} resumed, {len(summary.failed)} failed ({summary.seconds:.1f} s)"
        )
        for question_id, reason in summary.failed:
            print(f"  failed {question_id}: {reason}")
        for name, value in summary.headline().items():
            print(f"  {name:<20} {'-' if value is None else f'{value:.4f}'}")
        for name, path in summary.files.items():
            print(f"{name + ':':<9} {path}")
    return EXIT_PARTIAL if summary.failed else EXIT_OK


def _eval_compare(args: argparse.Namespace, run_a: Path, run_b: Path, err: Console) -> int:
    from eval.compare import compare_runs, comparison_html, comparison_page, render_text
    from eval.records import COMPARE_FILE, METRICS_FILE
    from eval.report import add_comparison_to_report
    from rag.files import write_text_atomic

    unused = [flag for flag, value in (("--format", args.format), ("--docs", args.docs), ("--limit", args.limit),
              ("--retrieval-only", args.retrieval_only), ("--closed-book", args.closed_book)) if value]  # fmt: skip
    if unused:
        raise UsageError(f"{', '.join(unused)} do(es) not apply to `rag eval compare`")
    comparison = compare_runs(run_a, run_b)
    out = args.out or run_b
    out.mkdir(parents=True, exist_ok=True)
    page = out / COMPARE_FILE
    write_text_atomic(page, comparison_page(comparison))
    written = [page]
    if (run_b / METRICS_FILE).is_file():
        written.append(add_comparison_to_report(run_b, comparison_html(comparison)))
    if args.json:
        _print_json(comparison.as_dict() | {"files": [str(path) for path in written]})
    else:
        sys.stdout.write(render_text(comparison))
        for path in written:
            print(f"written: {path}")
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
