"""``sapphire config-reference``: the system config's reference, generated from its structs.

Every field, type, default and constraint comes from the frozen msgspec structs that decode
the YAML (``sapphire.config.system`` and the typed ``params`` blocks of the venue, the store
and the built-in agents); the descriptions are the structs' docstrings and the comments beside
their fields. ``docs/config-reference.md`` is this command's output, and a test regenerates it
and compares, so the reference cannot drift from the code.
"""

from __future__ import annotations

import argparse
import enum
import inspect
import io
import sys
import tokenize
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import msgspec.inspect as mi

DOC_PATH = Path("docs") / "config-reference.md"


@dataclass(frozen=True)
class Section:
    """One struct documented at a YAML path (``data.live``, ``exchange.params`` when ...)."""

    path: str
    struct: type[msgspec.Struct]
    note: str = ""
    skip: tuple[str, ...] = ()  # fields the wiring fills in, never written in YAML


def _structs_in(t: mi.Type) -> Iterator[tuple[str, type[msgspec.Struct]]]:
    """The structs a field's type holds, with the path suffix that reaches each."""
    if isinstance(t, mi.Metadata):
        yield from _structs_in(t.type)
    elif isinstance(t, mi.StructType):
        yield "", t.cls
    elif isinstance(t, mi.UnionType):
        for member in t.types:
            yield from _structs_in(member)
    elif isinstance(t, mi.DictType):
        yield from ((f".<key>{rest}", cls) for rest, cls in _structs_in(t.value_type))
    elif isinstance(t, (mi.ListType, mi.VarTupleType, mi.SetType, mi.FrozenSetType)):
        yield from ((f"[]{rest}", cls) for rest, cls in _structs_in(t.item_type))


def _tree(root: type[msgspec.Struct], path: str) -> list[Section]:
    """``root`` and every struct nested in it, each once, at the paths that reach it (new
    blocks appear here as soon as the structs gain them)."""
    paths: dict[type[msgspec.Struct], list[str]] = {root: [path]}
    pending = [(root, path)]
    while pending:
        cls, where = pending.pop(0)
        info = mi.type_info(cls)
        assert isinstance(info, mi.StructType)
        for field in info.fields:
            for rest, inner in _structs_in(field.type):
                at = f"{where}.{field.encode_name}{rest}" if where else f"{field.encode_name}{rest}"
                if inner in paths:
                    paths[inner].append(at)
                    continue
                paths[inner] = [at]
                pending.append((inner, at))
    return [Section(", ".join(p) or "(top level)", cls) for cls, p in paths.items()]


def _sections() -> list[Section]:
    # imported here: the adapters pull in ccxt and google-cloud, which `sapphire --help` need not
    from sapphire.adapters.ccxt_gateway import CcxtGatewayConfig
    from sapphire.adapters.stores import BigQueryParams
    from sapphire.agents.avellaneda_stoikov import AvellanedaStoikovConfig
    from sapphire.agents.basis import BasisConfig
    from sapphire.agents.grid_maker import GridMakerConfig
    from sapphire.agents.indicator_agent import IndicatorAgentConfig
    from sapphire.agents.llm_agent import LlmAgentConfig
    from sapphire.agents.mean_reversion import MeanReversionConfig
    from sapphire.agents.momentum import MomentumConfig
    from sapphire.config.system import SystemConfig
    from sapphire.exchange.config import PaperExchangeConfig

    paper = _tree(PaperExchangeConfig, "exchange.params")
    paper[0] = Section(
        "exchange.params (kind: paper)",
        PaperExchangeConfig,
        "the paper venue's modelling assumptions; the instruments come from the data",
        skip=("instruments",),
    )
    paper = [s for s in paper if "instruments" not in s.path]
    ccxt = _tree(CcxtGatewayConfig, "exchange.params")
    ccxt[0] = Section("exchange.params (kind: ccxt)", CcxtGatewayConfig, "a live venue via ccxt")
    agents: list[tuple[str, type[msgspec.Struct]]] = [
        ("momentum", MomentumConfig),
        ("mean_reversion", MeanReversionConfig),
        ("avellaneda_stoikov", AvellanedaStoikovConfig),
        ("grid_maker", GridMakerConfig),
        ("basis", BasisConfig),
        ("indicator:<Strategy>", IndicatorAgentConfig),
        ("llm", LlmAgentConfig),
    ]
    agent_sections = [
        section for kind, cls in agents for section in _tree(cls, f"agents[].params (kind: {kind})")
    ]
    from sapphire.research.tune_config import TuneConfig

    # the tune file (`sapphire tune --config`): its own top level, apart from the system's
    tune = [
        Section(
            "tune file: " + s.path if s.path != "(top level)" else "tune file (top level)",
            s.struct,
            "`sapphire tune --config`; its paths are relative to the tune file's folder"
            if s.path == "(top level)"
            else "",
        )
        for s in _tree(TuneConfig, "")
    ]
    return [
        *_tree(SystemConfig, ""),
        *paper,
        *ccxt,
        Section("storage.params (backend: bigquery)", BigQueryParams),
        *agent_sections,
        *tune,
    ]


def _comments(cls: type) -> dict[str, str]:
    """Field name -> the comment lines above it and the comment at the end of its line."""
    try:
        lines, _ = inspect.getsourcelines(cls)
    except (OSError, TypeError):
        return {}
    source = "".join(lines)
    by_line: dict[int, str] = {}
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT:
                by_line[tok.start[0]] = tok.string.lstrip("#").strip()
    except tokenize.TokenError:
        return {}
    out: dict[str, str] = {}
    text_lines = source.splitlines()
    for number, line in enumerate(text_lines, start=1):
        stripped = line.strip()
        name, colon, _ = stripped.partition(":")
        if not colon or not name.isidentifier() or line[: len(line) - len(line.lstrip())] == "":
            continue
        above: list[str] = []
        prev = number - 1
        while prev >= 1 and text_lines[prev - 1].strip().startswith("#"):
            above.insert(0, by_line.get(prev, ""))
            prev -= 1
        parts = [*above, by_line.get(number, "")]
        text = " ".join(p for p in parts if p)
        if text and name not in out:
            out[name] = text
    return out


def _type_name(t: mi.Type) -> str:
    if isinstance(t, mi.Metadata):
        return _type_name(t.type)
    if isinstance(t, mi.UnionType):
        return " | ".join(_type_name(x) for x in t.types)
    if isinstance(t, mi.LiteralType):
        return " | ".join(repr(v).replace("'", '"') for v in t.values)
    if isinstance(t, mi.EnumType):
        return " | ".join(f'"{m.value}"' for m in t.cls)
    if isinstance(t, mi.StructType):
        return t.cls.__name__
    if isinstance(t, mi.DictType):
        return f"map {_type_name(t.key_type)} -> {_type_name(t.value_type)}"
    if isinstance(t, (mi.ListType, mi.VarTupleType, mi.SetType, mi.FrozenSetType)):
        return f"list of {_type_name(t.item_type)}"
    names = {
        mi.StrType: "string",
        mi.IntType: "int",
        mi.FloatType: "float",
        mi.BoolType: "bool",
        mi.NoneType: "null",
        mi.AnyType: "any",
        mi.DecimalType: "decimal string",
    }
    for kind, name in names.items():
        if isinstance(t, kind):
            return name
    return type(t).__name__.removesuffix("Type").lower()


def _constraints(t: mi.Type) -> str:
    out: list[str] = []
    if isinstance(t, mi.UnionType):
        return "; ".join(c for c in (_constraints(x) for x in t.types) if c)
    for attr, word in (
        ("gt", "> "),
        ("ge", ">= "),
        ("lt", "< "),
        ("le", "<= "),
        ("min_length", "length >= "),
        ("max_length", "length <= "),
        ("pattern", "matches "),
    ):
        value = getattr(t, attr, None)
        if isinstance(value, float) and value.is_integer():
            # msgspec reports a bound as given or as a float depending on what it built
            # before; one spelling keeps the generated file stable
            value = int(value)
        if value is not None:
            out.append(f"{word}`{value}`" if attr == "pattern" else f"{word}{value}")
    return ", ".join(out)


def _default(field: mi.Field) -> str:
    if field.required:
        return "**required**"
    if field.default is not msgspec.NODEFAULT:
        value = field.default
    elif field.default_factory is not msgspec.NODEFAULT:
        value = field.default_factory()
    else:  # pragma: no cover - msgspec always gives one of the two
        return ""
    if isinstance(value, msgspec.Struct):
        return "see below"
    if isinstance(value, enum.Enum):
        value = value.value
    text = msgspec.json.encode(value).decode()
    return f"`{text}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _doc(cls: type) -> str:
    doc = cls.__doc__ or ""
    if doc.startswith(f"{cls.__name__}("):  # msgspec's generated signature: no docstring
        return ""
    return inspect.cleandoc(doc)


def _section(section: Section) -> Iterator[str]:
    info = mi.type_info(section.struct)
    assert isinstance(info, mi.StructType)
    yield f"## `{section.path}`"
    yield ""
    note = f" ({section.note})" if section.note else ""
    yield f"Struct: `{section.struct.__module__}.{section.struct.__qualname__}`{note}"
    yield ""
    doc = _doc(section.struct)
    if doc:
        yield doc
        yield ""
    comments = _comments(section.struct)
    yield "| field | type | default | constraint | description |"
    yield "|---|---|---|---|---|"
    for field in info.fields:
        if field.name in section.skip:
            continue
        yield (
            f"| `{field.encode_name}` | {_cell(_type_name(field.type))} | "
            f"{_cell(_default(field))} | {_cell(_constraints(field.type))} | "
            f"{_cell(comments.get(field.name, ''))} |"
        )
    yield ""


def render() -> str:
    """The whole reference as Markdown (deterministic: the test compares it byte for byte)."""
    head = [
        "# Configuration reference",
        "",
        "<!-- generated by `sapphire config-reference --out docs/config-reference.md`;",
        "     do not edit: tests/docs/test_config_reference.py regenerates and compares -->",
        "",
        "The system config is the YAML file `sapphire run`, `sapphire backtest` and",
        "`sapphire tune` (its `system:` file) read. Every block is a frozen struct that rejects",
        "unknown fields: a typo is an error naming the file and the field, never ignored.",
        "Money is a decimal string in the instrument's settlement asset; times are nanoseconds",
        "(`_ns`) or seconds (`_s`). Relative paths (`data.files`, `data.instrument_files`,",
        "`storage.root`) are relative to the working directory; `shared:REL` names the shared",
        "recorded data (`$SAPPHIRE_SHARED_DATA`) and `sample:REL` the bundled sample.",
        "The tune file (`sapphire tune --config`, the last sections) is another file: its",
        "paths (`output.storage_path`, `output.system_template`, a bar backtest's data) are",
        "relative to its own folder; its `system:` block is a system config as above.",
        "Regenerate with `sapphire config-reference --out docs/config-reference.md`.",
        "",
    ]
    body = [line for section in _sections() for line in _section(section)]
    return "\n".join([*head, *body]).rstrip("\n") + "\n"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "config-reference",
        help="print (or write, or check) the config reference generated from the structs",
        description=__doc__,
    )
    parser.add_argument("--out", type=Path, default=None, help=f"write here (e.g. {DOC_PATH})")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if --out differs from the generated text"
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    text = render()
    if args.check and args.out is None:  # it printed the reference and exited 0: no check
        print("sapphire config-reference: --check needs --out FILE to compare", file=sys.stderr)
        return 2
    if args.out is None:
        sys.stdout.write(text)
        return 0
    if args.check:
        try:
            current = args.out.read_text(encoding="utf-8")
        except OSError as exc:
            print(f"sapphire config-reference: cannot read {args.out}: {exc}", file=sys.stderr)
            return 1
        if current != text:
            print(
                f"sapphire config-reference: {args.out} is out of date; rerun "
                f"`sapphire config-reference --out {args.out}`",
                file=sys.stderr,
            )
            return 1
        print(f"{args.out} is up to date")
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}")
    return 0
