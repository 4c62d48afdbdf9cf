"""The one configuration object, and the only module that reads (or writes) the environment.

Precedence, lowest first: defaults < ``rag.toml`` (or the file named by ``--config`` /
``RAG_CONFIG``) < ``RAG_*`` environment variables < command-line flags. Every value is
validated by pydantic; an error names the dotted field, the bad value and where it came from.

Environment variables are derived from the field names, so there is no second list to keep in
step: ``kb_dir`` is ``RAG_KB_DIR``, ``embedding.batch_size`` is ``RAG_EMBEDDING_BATCH_SIZE``.
An unknown ``RAG_*`` variable is an error rather than silently ignored, so a typo shows.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from rag.errors import ConfigError

ENV_PREFIX = "RAG_"
CONFIG_FILE_ENV = "RAG_CONFIG"
DEFAULT_CONFIG_FILE = Path("rag.toml")
DEFAULT_EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_GENERATOR_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"

ChunkContext = Literal["page", "document", "none"]
PdfTextEngine = Literal["pdfium", "pypdf"]
OcrMode = Literal["auto", "off", "force"]
OcrEngineName = Literal["auto", "rapidocr", "tesseract"]
PageScoring = Literal["max", "sum", "none"]
CitationMode = Literal["constrained", "inline", "attributed"]
EmbeddingBackend = Literal["torch", "onnx", "openvino"]
EmbeddingQuantization = Literal["none", "int8"]
EmbeddingPrecision = Literal["auto", "float32", "bfloat16"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


MILVUS_SCHEME = "milvus://"
MILVUS_LITE_SCHEME = "milvus-lite:"
DEFAULT_MILVUS_COLLECTION = "rag_chunks"


class MilvusLocation(BaseModel):
    """A knowledge base in Milvus: ``milvus://HOST:PORT/COLLECTION`` (a server or cluster) or
    ``milvus-lite:PATH.db`` (Milvus Lite, in process: tests and laptops; collection
    ``rag_chunks``). ``uri`` is what ``pymilvus.MilvusClient`` takes; ``str()`` gives it back
    as written on the command line."""

    model_config = ConfigDict(frozen=True)

    uri: str
    collection: str

    @property
    def lite(self) -> bool:
        return not self.uri.startswith(("http://", "https://"))

    def __str__(self) -> str:
        if self.lite:
            return f"{MILVUS_LITE_SCHEME}{self.uri}"
        return f"{MILVUS_SCHEME}{self.uri.split('://', 1)[1]}/{self.collection}"


KbLocation = Path | MilvusLocation


def parse_kb_location(value: object) -> object:
    """``--kb`` as written: a directory (the embedded knowledge base) or a Milvus location.
    Anything that is not a string starting with a Milvus scheme is left for pydantic to read."""
    if not isinstance(value, str):
        return value
    if value.startswith(MILVUS_LITE_SCHEME):
        path = value.removeprefix(MILVUS_LITE_SCHEME)
        if not path.endswith(".db"):
            raise ValueError(f"{value!r}: a Milvus Lite location is milvus-lite:PATH.db (its file ends in .db)")
        return MilvusLocation(uri=str(Path(path).expanduser().absolute()), collection=DEFAULT_MILVUS_COLLECTION)
    if value.startswith(MILVUS_SCHEME):
        address, _, collection = value.removeprefix(MILVUS_SCHEME).partition("/")
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit() or not collection.isidentifier():
            raise ValueError(
                f"{value!r}: a Milvus location is milvus://HOST:PORT/COLLECTION "
                "(the collection name made of letters, digits and underscores)"
            )
        return MilvusLocation(uri=f"http://{address}", collection=collection)
    return value


class EmbeddingConfig(_Section):
    """The sentence-transformers model that embeds chunks and queries."""

    model: str = Field(
        DEFAULT_EMBEDDING_MODEL,
        description="Hub id or local folder. The default is provisioned offline from PyPI.",
    )
    batch_size: int = Field(64, gt=0, le=4096, description="Texts per forward pass.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when present.")
    backend: EmbeddingBackend = Field(
        "torch",
        description="What runs the model: torch, or on a CPU onnx (ONNX Runtime) or openvino, from an export made "
        "once, offline, into data_dir on first use. On a GPU an unquantised model runs with torch. Recorded in the "
        "manifest.",
    )
    quantization: EmbeddingQuantization = Field(
        "none",
        description="int8 (backend onnx or openvino): onnx: dynamic int8 quantisation (ONNX Runtime); openvino: "
        "int8 weights (NNCF weight compression, no calibration data). Its vectors differ from the float ones: a "
        "knowledge base embedded with int8 is searched only with the same backend's int8 (README, Configuration).",
    )
    precision: EmbeddingPrecision = Field(
        "auto",
        description="What the model computes passages in (backend torch or openvino; vectors are float32 either "
        "way): bfloat16 about doubles passages/s on a CPU with bfloat16 matrix units (Intel AMX or AVX512-BF16) "
        "and gives float32's vectors to within a cosine of 0.999 (bench/RESULTS.md), so they share an index; "
        "queries stay float32 with torch (one short text gains nothing). auto: bfloat16 on such a CPU, float32 "
        "elsewhere (other CPUs, GPUs, backend onnx).",
    )

    @field_validator("quantization")
    @classmethod
    def _int8_needs_an_export(cls, quantization: str, info: ValidationInfo) -> str:
        if quantization != "none" and info.data.get("backend") == "torch":
            raise ValueError(f"quantization '{quantization}' needs backend 'onnx' or 'openvino' (torch runs float32)")
        return quantization

    @field_validator("precision")
    @classmethod
    def _bfloat16_needs_a_runtime_with_it(cls, precision: str, info: ValidationInfo) -> str:
        if precision == "bfloat16" and info.data.get("backend") == "onnx":
            raise ValueError("precision 'bfloat16' needs backend 'torch' or 'openvino' (ONNX Runtime runs float32)")
        return precision


class ChunkingConfig(_Section):
    """Token-aware chunking, measured with the embedding model's own tokenizer."""

    chunk_tokens: int = Field(200, ge=16, description="Upper bound per chunk; capped at the model's own limit.")
    overlap_tokens: int = Field(32, ge=0, description="Tokens shared by consecutive chunks.")
    context: ChunkContext = Field(
        "page",
        description="page: each chunk is embedded and keyword-indexed with its document's file name and "
        "title and its page's heading before it (the stored, cited text is unchanged); document: the "
        "document's name and title only; none: the chunk alone. Recorded in the manifest.",
    )

    @model_validator(mode="after")
    def _overlap_smaller_than_chunk(self) -> ChunkingConfig:
        if self.overlap_tokens >= self.chunk_tokens:
            raise ValueError(
                f"overlap_tokens ({self.overlap_tokens}) must be smaller than chunk_tokens ({self.chunk_tokens})"
            )
        return self


class IndexConfig(_Section):
    """The FAISS vector index."""

    kind: Literal["flat", "ivf", "hnsw"] = Field(
        "flat", description="flat: exact; ivf / hnsw: approximate, for large collections."
    )
    ivf_nlist: int = Field(1024, gt=0, description="IVF cells; trained once 39 x nlist vectors exist.")
    ivf_nprobe: int = Field(16, gt=0, description="IVF cells searched per query.")
    hnsw_m: int = Field(32, gt=1, description="HNSW graph degree.")
    hnsw_ef_search: int = Field(64, gt=0, description="HNSW search breadth.")
    gpu: Literal["auto", "off"] = Field("auto", description="auto: search on a GPU when FAISS sees one.")
    milvus_gpu: bool = Field(
        False,
        description="A knowledge base in Milvus: build Milvus's GPU index for the kind (flat: GPU_BRUTE_FORCE, "
        "ivf: GPU_IVF_FLAT, hnsw: GPU_CAGRA), for a Milvus deployed with GPUs. Read when the collection is created.",
    )


class IngestConfig(_Section):
    """The ingestion job."""

    workers: int = Field(
        1,
        ge=0,
        le=64,
        description="Loader processes that extract text while the model encodes. 0: in this process, where "
        "ingest.file_timeout_s and ingest.file_memory_mb cannot apply: a hostile file can then hang or exhaust "
        "the whole run.",
    )
    embed_batch_chunks: int = Field(256, gt=0, description="Chunks gathered across files before one encode call.")
    commit_seconds: float = Field(20.0, gt=0, description="At most this much work is redone after a crash.")
    max_file_mb: float = Field(256.0, gt=0, description="Larger files are reported and skipped.")
    file_timeout_s: float = Field(
        300.0,
        gt=0,
        description="A file whose loading takes longer has its worker killed and is reported; the run goes on. "
        "A 190-page 10-K loads in about 3 s.",
    )
    file_memory_mb: float = Field(
        2048.0,
        gt=0,
        description="Memory one file's loading may take in its worker, beyond the worker's own at start; a file "
        "that needs more is reported and the run goes on. A 190-page 10-K needs about 20 MB.",
    )
    pdf_text: PdfTextEngine = Field(
        "pdfium",
        description="Who extracts a PDF page's text: pdfium (a table row's label and numbers stay on one line; "
        "about 19x faster on SEC filings) or pypdf (each table cell on a line of its own). Recorded in the manifest.",
    )
    ocr: OcrMode = Field(
        "auto",
        description="Scanned pages: auto: a PDF page whose text layer has fewer than ocr_min_chars characters and "
        "that draws something besides text (a scan is a picture) is drawn at ocr_dpi and read by OCR, and OCR's "
        "text is kept when it finds more; force: every page that draws anything is read by OCR, and its text "
        "replaces the text layer's where it finds any; off: no OCR (a PDF with no text layer fails, and its "
        "textless pages are stored empty). Applies to files read from now on; `rag ingest --reindex` also reads "
        "again the stored PDFs that have pages without text.",
    )
    ocr_engine: OcrEngineName = Field(
        "auto",
        description="Who reads scanned pages: tesseract (Debian's tesseract-ocr, which `make install` installs "
        "where apt is available) or rapidocr (PP-OCR models inside the rapidocr package, run by ONNX Runtime); "
        "auto: tesseract when its program is installed, else rapidocr. On 300-dpi pictures of SEC filings' pages "
        "both read 99% of the characters right, and tesseract is about 3.7x faster (bench/RESULTS.md, OCR).",
    )
    ocr_min_chars: int = Field(
        32,
        ge=1,
        description="ocr = auto: a PDF page with fewer characters (not counting spaces) in its text layer is read "
        "by OCR.",
    )
    ocr_dpi: int = Field(
        300, ge=72, le=600, description="Resolution at which a page is drawn for OCR (300 suits both engines)."
    )
    ocr_page_timeout_s: float = Field(
        120.0,
        gt=0,
        description="Time allowed per page read by OCR: a file's OCR runs in a loader worker after its text is "
        "read, and is stopped (the file reported) past this many seconds times its pages to read. One core "
        "reads a page in about 6 s (tesseract) or 21 s (rapidocr).",
    )
    ray_cpus: int | None = Field(
        None,
        ge=1,
        description="`rag ingest --engine ray` without --ray-address: CPUs of the local Ray instance it starts "
        "(default: this machine's).",
    )
    ray_embed_actors: int = Field(
        0,
        ge=0,
        description="`rag ingest --engine ray`: embedding actors, each loading the model once. 0: one per GPU of "
        "the cluster, or one (on CPUs) where it has none.",
    )


class RetrievalConfig(_Section):
    """How passages are found for a question."""

    mode: Literal["hybrid", "dense", "keyword"] = Field("hybrid", description="hybrid: dense and BM25, fused.")
    top_k: int = Field(5, gt=0, le=100, description="Passages given to the model.")
    candidates: int = Field(
        100,
        gt=0,
        description="Hits taken from each retriever before fusion, and fused hits ranked as pages. A passage "
        "past this depth in one ranking counts as absent from it: 50 lost statement pages that one retriever "
        "ranks 60th (README, Retrieval).",
    )
    rrf_k: int = Field(60, ge=0, description="Reciprocal rank fusion constant (Cormack et al., 2009).")
    dense_weight: float = Field(1.0, ge=0, description="Weight of the dense ranking in the fusion.")
    keyword_weight: float = Field(1.0, ge=0, description="Weight of the BM25 ranking in the fusion.")
    page_scoring: PageScoring = Field(
        "max",
        description="How passages are ranked as pages: max: a page scores its best passage's score, sum: the sum "
        "of its passages' (a page several passages match rises); passages are returned page by page. none: "
        "passages alone, pages interleaved.",
    )
    reranker_model: str | None = Field(
        None, description="A sentence-transformers CrossEncoder (hub id or folder); none by default."
    )
    rerank_candidates: int = Field(20, gt=0, description="Fused hits the reranker rescores.")


class GeneratorConfig(_Section):
    """The language model that writes answers, served by vLLM."""

    model: str = Field(
        DEFAULT_GENERATOR_MODEL,
        description="Hub id or local folder. The default is converted offline by `make install`.",
    )
    max_model_len: int = Field(2048, ge=256, description="Context length: prompt plus answer, in tokens.")
    max_answer_tokens: int = Field(
        128,
        gt=0,
        description="Longest answer, in tokens. Answers are at most answer.max_sentences sentences; the 135M "
        "default model fills any budget with repetition, so a longer one only costs time.",
    )
    temperature: float = Field(0.0, ge=0, le=2)
    dtype: str = Field("auto", description="auto: float32 on a CPU (twice bfloat16's speed there), else bfloat16.")
    enforce_eager: bool | None = Field(None, description="None: eager on a CPU (no 5-minute compile), graphs on a GPU.")
    kv_cache_gib: int = Field(
        2,
        ge=1,
        description="Paged KV cache size on a CPU, in whole GiB: vLLM reads VLLM_CPU_KVCACHE_SPACE as an integer "
        "(its server fails to start on 0.5). 1 GiB holds about 46k tokens of the 135M default model.",
    )
    prefix_caching: bool = Field(
        True, description="Reuse the KV cache of prompt prefixes already computed (the fixed instructions first)."
    )
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1, description="Share of GPU memory vLLM may take.")
    host: str = Field(
        "127.0.0.1",
        description="Where `rag model start` binds the OpenAI-compatible server, and where clients reach it "
        "unless base_url is set. Anything but loopback needs api_key.",
    )
    port: int = Field(8000, gt=0, lt=65536)
    api_key: SecretStr | None = Field(
        None,
        description="The key the model server requires (given to vLLM as VLLM_API_KEY, not on its command line) "
        "and the clients send, to base_url too. Required when host is not loopback.",
    )
    base_url: str | None = Field(
        None,
        description="An OpenAI-compatible API that serves generator.model elsewhere, e.g. http://router:8000/v1: "
        "vllm-router in front of several `vllm serve`, `vllm serve --data-parallel-size N`, Ray Serve LLM. When "
        "set, the page and `rag ask` send their requests there (with api_key, when set), and rag starts and stops "
        "no server: host and port are not used, and `rag model stop` refuses. A URL without a path gets /v1 (the "
        "API root of vLLM and its routers); one with a path is used as given (the root an OpenAI client adds "
        "/chat/completions to). The server's model name must be generator.model, and its context length at least "
        "max_model_len.",
    )
    startup_timeout_s: float = Field(600.0, gt=0, description="How long to wait for the server to be healthy.")
    request_timeout_s: float = Field(300.0, gt=0)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("WARNING", description="vLLM's own log level.")

    @field_validator("base_url")
    @classmethod
    def _an_api_root(cls, url: str | None) -> str | None:
        return None if url is None or not url.strip() else openai_api_root(url)


def openai_api_root(url: str) -> str:
    """``url`` as the root of an OpenAI-compatible API: http(s), a host, no query, no trailing
    slash, ``/v1`` added when it has no path. Raises ValueError saying what is wrong."""
    parts = urlsplit(url.strip())
    example = "e.g. http://router:8000/v1"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http:// or https:// URL with a host, {example}")
    try:
        parts.port  # noqa: B018 - parsing the port is the check: urlsplit reads it lazily
    except ValueError:
        raise ValueError(f"has a port that is not a number from 0 to 65535, {example}") from None
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not carry credentials: set generator.api_key, which is sent as a bearer token")
    if parts.query or parts.fragment:
        raise ValueError(f"must have no query or fragment: it is the API's root, {example}")
    path = parts.path.rstrip("/")
    if path.endswith(("/completions", "/models")):
        raise ValueError(f"must be the API's root, not one of its endpoints, {example}")
    return urlunsplit((parts.scheme, parts.netloc, path or "/v1", "", ""))


class AnswerConfig(_Section):
    """How answers are made to cite their passages (see the README's "Citations" for the measurements)."""

    citations: CitationMode = Field(
        "constrained",
        description="constrained: vLLM's structured outputs admit only sentences that end in markers of "
        "passages in the prompt (or the abstention); inline: the model writes freely and sentences it left "
        "uncited are attributed after the fact; attributed: the model's markers are ignored and every sentence "
        "is attributed after the fact.",
    )
    max_sentences: int = Field(2, ge=1, le=20, description="Most sentences an answer may have (more are cut).")
    repetition_penalty: float = Field(
        1.0,
        ge=1.0,
        le=2.0,
        description="vLLM's repetition penalty; 1.0 is off. vLLM applies it to the prompt's tokens too, so it "
        "penalises copying the passages' words: 1.1 took the 135M model from 11 to 5 of 32 right answers on the "
        "samples set. Repetition is bounded by max_sentences and the removal of repeated sentences instead.",
    )


class CitationsConfig(_Section):
    """The check that decides whether a citation supports its sentence."""

    min_support: float = Field(
        0.45,
        ge=0,
        le=1,
        description="A citation whose support is below this is unsupported; a sentence without a supported "
        "citation is unverified; an answer without a verified sentence abstains. Calibrated by "
        "bench/calibrate_support.py on the samples and FinanceBench dev sets (README, Citations).",
    )
    support_model: str | None = Field(
        None,
        description="An NLI CrossEncoder (hub id or folder) whose entailment probability is the support; "
        "none: the embedding model and word overlap (offline, the default).",
    )


class UiConfig(_Section):
    """The web page (`rag serve`)."""

    host: str = Field("127.0.0.1", description="Where the page binds; loopback unless you mean to expose it.")
    port: int = Field(8501, gt=0, lt=65536)
    password: SecretStr | None = Field(
        None, description="When set, the page asks for it before anything else (set it when the page is exposed)."
    )
    max_upload_mb: float = Field(50.0, gt=0, description="Largest file the page accepts for upload.")


class EvalConfig(_Section):
    """Offline evaluation (`rag eval`): where runs go, how citations are judged, batching, statistics."""

    runs_dir: Path = Field(
        Path("eval-runs"),
        description="Runs go to <runs_dir>/<dataset>-<UTC time> unless --out says where; knowledge bases "
        "built for benchmark corpora are cached in <runs_dir>/.kb-cache.",
    )
    judge: Literal["overlap", "nli", "llm"] = Field(
        "overlap",
        description="Who decides whether passages support a sentence (citation metrics, faithfulness): overlap: "
        "the local word-overlap check of `rag ask`; nli: an NLI cross-encoder; llm: a model behind an "
        "OpenAI-compatible server.",
    )
    judge_model: str | None = Field(
        None,
        description="nli: a sentence-transformers CrossEncoder NLI model (hub id or folder); "
        "llm: the served model's name.",
    )
    judge_base_url: str | None = Field(
        None, description="llm: the OpenAI-compatible server's base URL, e.g. http://127.0.0.1:8000/v1."
    )
    judge_api_key: SecretStr | None = Field(
        None,
        description='llm: the key the judge\'s server requires, sent as "Authorization: Bearer <key>"; '
        "none for a server run without one (vLLM on loopback).",
    )
    support_threshold: float = Field(
        0.5,
        ge=0,
        le=1,
        description="overlap: share of content words; nli: entailment probability, to count as support.",
    )
    retrieval_batch: int = Field(64, gt=0, description="Questions whose queries are embedded and searched together.")
    retrieval_depth: int = Field(
        50,
        ge=10,
        le=1000,
        description="Passages retrieved per question for the retrieval metrics (the prompt gets top_k). Passages "
        "come page by page, several to a page, so it is deep enough for the first 10 distinct pages.",
    )
    generation_batch: int = Field(
        256,
        gt=0,
        description="Prompts per generator call: vLLM batches them; a killed run loses at most one such call.",
    )
    bootstrap_resamples: int = Field(1000, ge=100, description="Resamples for the 95% confidence intervals.")
    seed: int = Field(0, description="Seed of the resampling, so a report is reproducible.")

    @model_validator(mode="after")
    def _judge_is_complete(self) -> EvalConfig:
        if self.judge in ("nli", "llm") and not self.judge_model:
            what = "an NLI CrossEncoder (hub id or folder)" if self.judge == "nli" else "the served model's name"
            raise ValueError(f"judge '{self.judge}' needs judge_model: {what}")
        if self.judge == "llm" and not self.judge_base_url:
            raise ValueError(
                "judge 'llm' needs judge_base_url: the OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1"
            )
        return self


class AppConfig(_Section):
    """Everything the product can be configured with. Build it with :func:`load_config`."""

    kb_dir: Annotated[KbLocation, BeforeValidator(parse_kb_location)] = Field(
        Path("kb"),
        description="The knowledge base: a directory (embedded: FAISS, SQLite, BM25), or in Milvus "
        "milvus://HOST:PORT/COLLECTION or milvus-lite:PATH.db (docs/scale.md).",
    )
    data_dir: Path = Field(
        Path.home() / ".local" / "share" / "rag-kb",
        description="Provisioned models, the model server's pid file and log.",
    )
    embedding: EmbeddingConfig = EmbeddingConfig()
    chunking: ChunkingConfig = ChunkingConfig()
    index: IndexConfig = IndexConfig()
    ingest: IngestConfig = IngestConfig()
    retrieval: RetrievalConfig = RetrievalConfig()
    generator: GeneratorConfig = GeneratorConfig()
    answer: AnswerConfig = AnswerConfig()
    citations: CitationsConfig = CitationsConfig()
    ui: UiConfig = UiConfig()
    eval: EvalConfig = EvalConfig()


def env_var_names() -> dict[str, tuple[str, ...]]:
    """Map each accepted ``RAG_*`` variable to the dotted field path it sets."""
    names: dict[str, tuple[str, ...]] = {}
    for name, info in AppConfig.model_fields.items():
        section = info.annotation
        if isinstance(section, type) and issubclass(section, _Section):
            for field_name in section.model_fields:
                names[f"{ENV_PREFIX}{name}_{field_name}".upper()] = (name, field_name)
        else:
            names[f"{ENV_PREFIX}{name}".upper()] = (name,)
    return names


def load_config(
    config_file: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> AppConfig:
    """Build the configuration from the file, the environment and ``overrides``.

    ``overrides`` maps dotted field paths (``"embedding.batch_size"``) to values; they are the
    command line's flags and ``--set key=value`` pairs and win over everything else.
    ``environ`` defaults to ``os.environ``; tests pass their own. A missing explicit
    ``config_file`` is an error; a missing default ``rag.toml`` is not.
    """
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    sources: dict[tuple[str, ...], str] = {}

    path = config_file or (Path(env[CONFIG_FILE_ENV]) if CONFIG_FILE_ENV in env else None)
    if path is not None or DEFAULT_CONFIG_FILE.is_file():
        file_path = path or DEFAULT_CONFIG_FILE
        for key, value in _flatten(_read_toml(file_path)).items():
            _put(values, key, value)
            sources[key] = f"{file_path}"

    known = env_var_names()
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX) or name == CONFIG_FILE_ENV:
            continue
        if name not in known:
            raise ConfigError(f"unknown environment variable {name}; accepted: {', '.join(sorted(known))}")
        _put(values, known[name], raw)
        sources[known[name]] = f"environment variable {name}"

    for dotted, value in (overrides or {}).items():
        key = tuple(dotted.split("."))
        _put(values, key, value)
        sources[key] = f"command-line setting {dotted}"

    try:
        return AppConfig.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, sources)) from None


def vllm_environment(config: AppConfig, *, cpu: bool) -> dict[str, str]:
    """Environment for vLLM, which reads it itself when its engine starts.

    Its logs go to standard error (it writes to standard output by default, which would spoil
    ``--json`` output), at ``generator.log_level``. On a CPU: compute on every core (by default vLLM keeps one core
    for its front end, which halves a 2-core machine; PLATFORM.md) and size the KV cache.
    """
    env = {"VLLM_LOGGING_STREAM": "ext://sys.stderr", "VLLM_LOGGING_LEVEL": config.generator.log_level}
    if cpu:
        cores = os.cpu_count() or 1
        env |= {
            "VLLM_CPU_OMP_THREADS_BIND": f"0-{cores - 1}",
            "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
            "VLLM_CPU_KVCACHE_SPACE": str(config.generator.kv_cache_gib),
        }
    return env


def export_vllm_environment(config: AppConfig, *, cpu: bool) -> None:
    """Put :func:`vllm_environment` into this process's environment, for vLLM run in process.

    vLLM takes these settings from nowhere else: it reads them when it is imported and when its
    engine process (a spawned child, which inherits them) starts. So this is called by the one
    place that starts vLLM in process, before it imports vLLM; the server, a child process, is
    given them with :func:`child_environment` instead.
    """
    os.environ.update(vllm_environment(config, cpu=cpu))


def child_environment(extra: Mapping[str, str]) -> dict[str, str]:
    """This process's environment plus ``extra``, for a child process such as the model server."""
    return {**os.environ, **extra}


def parse_assignments(pairs: list[str]) -> dict[str, str]:
    """Turn ``["embedding.batch_size=16", ...]`` into a dict for ``load_config(overrides=)``."""
    result: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {pair!r}")
        result[key.strip()] = value.strip()
    return result


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path} does not exist") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"configuration file {path} cannot be read: {exc}") from None


def _flatten(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    flat: dict[tuple[str, ...], Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, (*prefix, key)))
        else:
            flat[(*prefix, key)] = value
    return flat


def _put(tree: dict[str, Any], key: tuple[str, ...], value: Any) -> None:
    node = tree
    for part in key[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{'.'.join(key)}: {part} is a value, not a section")
        node = child
    node[key[-1]] = value


def _describe(exc: ValidationError, sources: Mapping[tuple[str, ...], str]) -> str:
    lines = []
    for error in exc.errors():
        loc = tuple(str(part) for part in error["loc"])
        where = sources.get(loc) or next(
            (src for key, src in sources.items() if key[: len(loc)] == loc), "the defaults"
        )
        shown = "" if error["type"] == "extra_forbidden" else f" (got {error['input']!r})"
        field = ".".join(loc) or "configuration"
        if error["type"] == "extra_forbidden":
            lines.append(f"{field}: unknown setting, from {where}")
        else:
            lines.append(f"{field}: {error['msg']}{shown}, from {where}")
    return "invalid configuration: " + "; ".join(lines)
