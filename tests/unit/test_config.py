from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import pytest

import rag
from rag.config import AppConfig, env_var_names, load_config, parse_assignments, vllm_environment
from rag.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_defaults_need_no_file_or_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(environ={})
    assert config == AppConfig()
    assert config.kb_dir == Path("kb")
    assert config.embedding.model == "sentence-transformers/all-MiniLM-L6-v2"


def test_precedence_file_then_environment_then_flags(tmp_path: Path) -> None:
    file = tmp_path / "rag.toml"
    file.write_text(
        'kb_dir = "from-file"\n[chunking]\nchunk_tokens = 100\noverlap_tokens = 10\n[embedding]\nbatch_size = 8\n'
    )
    env = {"RAG_KB_DIR": "from-env", "RAG_EMBEDDING_BATCH_SIZE": "16"}
    config = load_config(file, {"kb_dir": "from-flag"}, environ=env)
    assert config.kb_dir == Path("from-flag")
    assert config.embedding.batch_size == 16
    assert config.chunking.chunk_tokens == 100


def test_config_file_from_environment(tmp_path: Path) -> None:
    file = tmp_path / "elsewhere.toml"
    file.write_text("[index]\nkind = 'hnsw'\n")
    assert load_config(environ={"RAG_CONFIG": str(file)}).index.kind == "hnsw"


def test_error_names_field_value_and_source(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(environ={"RAG_EMBEDDING_BATCH_SIZE": "-3"})
    message = str(caught.value)
    assert "embedding.batch_size" in message
    assert "'-3'" in message
    assert "RAG_EMBEDDING_BATCH_SIZE" in message


def test_bad_choice_from_flag_is_named() -> None:
    with pytest.raises(ConfigError, match=r"index\.kind.*'annoy'.*command-line setting index\.kind"):
        load_config(overrides={"index.kind": "annoy"}, environ={})


def test_unknown_setting_in_file_is_an_error(tmp_path: Path) -> None:
    file = tmp_path / "rag.toml"
    file.write_text("[chunking]\nchunk_size = 100\n")
    with pytest.raises(ConfigError, match=r"chunking\.chunk_size: unknown setting"):
        load_config(file, environ={})


def test_unknown_environment_variable_is_an_error() -> None:
    with pytest.raises(ConfigError, match="RAG_EMBEDING_MODEL"):
        load_config(environ={"RAG_EMBEDING_MODEL": "x"})


def test_overlap_must_be_smaller_than_chunk() -> None:
    with pytest.raises(ConfigError, match="overlap_tokens"):
        load_config(overrides={"chunking.chunk_tokens": 32, "chunking.overlap_tokens": 32}, environ={})


def test_embedding_backend_and_quantization_are_checked_and_named() -> None:
    config = load_config(environ={"RAG_EMBEDDING_BACKEND": "openvino", "RAG_EMBEDDING_QUANTIZATION": "int8"})
    assert (config.embedding.backend, config.embedding.quantization) == ("openvino", "int8")
    assert (AppConfig().embedding.backend, AppConfig().embedding.quantization) == ("torch", "none")
    with pytest.raises(ConfigError, match=r"embedding\.backend: .*'tensorrt'.*command-line setting"):
        load_config(overrides={"embedding.backend": "tensorrt"}, environ={})
    with pytest.raises(ConfigError, match=r"embedding\.quantization: .*'int4'"):
        load_config(overrides={"embedding.backend": "onnx", "embedding.quantization": "int4"}, environ={})
    # torch runs the model as it is: int8 needs an export.
    with pytest.raises(ConfigError, match=r"embedding\.quantization: .*needs backend 'onnx' or 'openvino'.*RAG_EMB"):
        load_config(environ={"RAG_EMBEDDING_QUANTIZATION": "int8"})


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("http://router:8000/v1", "http://router:8000/v1"),
        ("https://llm.example.org/v1/", "https://llm.example.org/v1"),  # the trailing slash goes
        ("http://10.0.0.5:30000", "http://10.0.0.5:30000/v1"),  # no path: vLLM's and its routers' /v1
        ("http://[::1]:8000/", "http://[::1]:8000/v1"),
        ("https://gateway.example.org/serve/llm/v1", "https://gateway.example.org/serve/llm/v1"),  # a path: as given
        (" http://router:8000/v1 ", "http://router:8000/v1"),
    ],
)
def test_the_generator_base_url_is_kept_as_an_api_root(given: str, kept: str) -> None:
    assert load_config(overrides={"generator.base_url": given}, environ={}).generator.base_url == kept
    assert load_config(environ={"RAG_GENERATOR_BASE_URL": given}).generator.base_url == kept


def test_the_generator_base_url_is_none_unless_set() -> None:
    assert load_config(environ={}).generator.base_url is None
    assert load_config(environ={"RAG_GENERATOR_BASE_URL": ""}).generator.base_url is None


@pytest.mark.parametrize(
    ("given", "why"),
    [
        ("router:8000/v1", "http:// or https://"),
        ("ftp://router/v1", "http:// or https://"),
        ("http:///v1", "http:// or https://"),
        ("http://router:99999/v1", "port"),
        ("http://user:secret@router:8000/v1", "credentials"),
        ("http://router:8000/v1?key=x", "no query"),
        ("http://router:8000/v1/chat/completions", "not one of its endpoints"),
        ("http://router:8000/v1/models", "not one of its endpoints"),
    ],
)
def test_a_bad_generator_base_url_is_refused_with_the_reason_and_its_source(given: str, why: str) -> None:
    with pytest.raises(ConfigError, match=rf"generator\.base_url: .*{why}.*RAG_GENERATOR_BASE_URL"):
        load_config(environ={"RAG_GENERATOR_BASE_URL": given})


def test_the_kv_cache_is_whole_gib_as_vllm_reads_it() -> None:
    # vLLM parses VLLM_CPU_KVCACHE_SPACE with int(): "0.5" stops its server before it starts.
    config = load_config(overrides={"generator.kv_cache_gib": 2.0}, environ={})  # 2.0 in a TOML file is 2
    assert vllm_environment(config, cpu=True)["VLLM_CPU_KVCACHE_SPACE"] == "2"
    with pytest.raises(ConfigError, match=r"generator\.kv_cache_gib"):
        load_config(environ={"RAG_GENERATOR_KV_CACHE_GIB": "0.5"})


def test_missing_explicit_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml", environ={})
    bad = tmp_path / "bad.toml"
    bad.write_text("kb_dir = \n")
    with pytest.raises(ConfigError, match="cannot be read"):
        load_config(bad, environ={})


def test_env_names_cover_every_field() -> None:
    names = env_var_names()
    assert names["RAG_KB_DIR"] == ("kb_dir",)
    assert names["RAG_INGEST_WORKERS"] == ("ingest", "workers")
    assert names["RAG_INDEX_HNSW_EF_SEARCH"] == ("index", "hnsw_ef_search")
    assert names["RAG_EVAL_RUNS_DIR"] == ("eval", "runs_dir")


def test_eval_section_from_environment_and_flags() -> None:
    config = load_config(overrides={"eval.retrieval_batch": "16"}, environ={"RAG_EVAL_RUNS_DIR": "/tmp/runs"})
    assert config.eval.runs_dir == Path("/tmp/runs") and config.eval.retrieval_batch == 16
    assert config.eval.judge == "overlap" and config.eval.support_threshold == 0.5
    with pytest.raises(ConfigError, match=r"eval\.retrieval_depth"):
        load_config(overrides={"eval.retrieval_depth": 5}, environ={})


def test_parse_assignments() -> None:
    assert parse_assignments(["a.b=1", " c = x=y "]) == {"a.b": "1", "c": "x=y"}
    with pytest.raises(ConfigError, match="key=value"):
        parse_assignments(["novalue"])


def test_the_judges_key_comes_from_its_environment_variable_and_stays_secret() -> None:
    config = load_config(environ={"RAG_EVAL_JUDGE_API_KEY": "s3cret"})
    assert config.eval.judge_api_key is not None and config.eval.judge_api_key.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(config) and "s3cret" not in config.model_dump_json()
    assert load_config(environ={}).eval.judge_api_key is None


def test_only_the_configuration_touches_the_environment() -> None:
    # rag/faults.py reads its crash point (a test hook, not a setting) from the environment.
    allowed = {REPO / "rag" / "config.py", REPO / "rag" / "faults.py"}
    touching = sorted(
        str(path.relative_to(REPO))
        for package in ("rag", "ingest", "eval", "ui")
        for path in (REPO / package).rglob("*.py")
        if path not in allowed and re.search(r"\bos\.environ\b|\bgetenv\b|\bputenv\b", path.read_text())
    )
    assert touching == []


def test_the_version_is_read_from_the_package_metadata() -> None:
    # Written once, in pyproject.toml; the installed metadata carries it.
    assert rag.__version__ == importlib.metadata.version("rag-kb") != "unknown"
