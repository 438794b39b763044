"""The guides and the README name only commands and options that exist, and the example
testnet config is a valid live config (system config, ccxt params, instruments)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import msgspec
import pytest

from sapphire.adapters.ccxt_gateway import CcxtGatewayConfig
from sapphire.cli import build_parser
from sapphire.config.system import load_config
from sapphire.kernel.assembly import load_instruments
from tests.conftest import REPO_ROOT

DOCS = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
CODE = re.compile(r"```[a-z]*\n(.*?)```|`([^`\n]+)`", re.S)
COMMAND = re.compile(r"\bsapphire ([a-z][a-z-]*)((?:[ \t]+[^\s`#]+)*)")


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def commands_in(text: str) -> list[tuple[str, list[str], list[str]]]:
    """(verb, its words, its options) of each command shown."""
    out = []
    for block, span in CODE.findall(text):
        for line in (block or span).splitlines():
            for verb, rest in COMMAND.findall(line):
                words = rest.split()
                out.append((verb, words, [t.split("=")[0] for t in words if t.startswith("--")]))
    return out


def _parser_of(parser: argparse.ArgumentParser, words: list[str]) -> argparse.ArgumentParser:
    """The sub-command's own parser where the verb has sub-commands (``data inspect``):
    its options are not the verb's."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if subs and words and words[0] in subs[0].choices:
        return _parser_of(subs[0].choices[words[0]], words[1:])
    return parser


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_command_and_option_named_exists(doc: Path) -> None:
    known = subcommands()
    found = commands_in(doc.read_text(encoding="utf-8"))
    for verb, words, options in found:
        assert verb in known, f"{doc.name}: `sapphire {verb}` is not a command"
        parser = _parser_of(known[verb], words)
        for option in options:
            assert option in parser._option_string_actions, (
                f"{doc.name}: `{parser.prog}` has no option {option}"
            )
    if doc.parent.name == "docs" and doc.name != "config-reference.md":
        assert found, f"{doc.name} shows no command"


def test_the_check_sees_commands_in_code_only() -> None:
    text = "run sapphire now\n```bash\nsapphire query R --root x  # c\n```\n`sapphire stop R --all`"
    assert [(verb, options) for verb, _, options in commands_in(text)] == [
        ("query", ["--root"]),
        ("stop", ["--all"]),
    ]


def test_a_sub_commands_options_are_checked_against_its_own_parser() -> None:
    """``sapphire data instruments META --symbol S``: --symbol is the sub-command's, not
    ``data``'s (the check read only the verb's parser and refused every sub-command option)."""
    data = subcommands()["data"]
    assert "--symbol" in _parser_of(data, ["instruments", "META"])._option_string_actions
    assert "--symbol" not in _parser_of(data, ["inspect", "F"])._option_string_actions


def test_the_testnet_example_is_a_valid_live_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO_ROOT)  # its paths are relative to the repository root
    config = load_config(REPO_ROOT / "configs" / "live_testnet.yaml")
    assert config.data.source == "ccxt" and config.exchange.kind == "ccxt"
    params = msgspec.convert(config.exchange.params, CcxtGatewayConfig)
    assert params.sandbox, "the example must never point at a real account"
    urls = msgspec.json.encode(config.data.live.api_urls).decode()
    assert "testnet" in urls and "api.binance.com" not in urls
    instruments = load_instruments(config.data)
    assert {a.symbol for a in config.agents} <= set(instruments)


def test_the_llm_demo_is_the_demo_plus_one_llm_agent() -> None:
    """The README's claim about ``./dev llm``: configs/demo_llm.yaml runs the three demo agents
    (same kinds, symbols and parameters) plus one LLM agent, sized for 2 cores."""
    demo = load_config(REPO_ROOT / "configs" / "demo.yaml")
    llm = load_config(REPO_ROOT / "configs" / "demo_llm.yaml")
    same = {(a.id, a.kind, a.symbol, msgspec.json.encode(a.params)) for a in demo.agents}
    others = [a for a in llm.agents if a.kind != "llm"]
    assert {(a.id, a.kind, a.symbol, msgspec.json.encode(a.params)) for a in others} == same
    assert [a.kind for a in llm.agents].count("llm") == 1
    assert not any(a.kind == "llm" for a in demo.agents)  # ./dev demo needs no LLM extra
    assert llm.llm.engine["n_threads"] == 1  # one decode thread: the other core replays


def test_the_guides_tune_file_tunes_the_agent_new_agent_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/first-agent.md's tune file, beside the agent `sapphire new-agent flow_chaser`
    writes: it parses, every space path is one of the agent's params (checked by building
    the agent, as `sapphire tune` does before Ray starts), and a misspelt one is refused."""
    import re

    import yaml

    from sapphire.cli import main
    from sapphire.research.tune_config import TuneConfigError, parse_tune_config

    text = (REPO_ROOT / "docs" / "first-agent.md").read_text(encoding="utf-8")
    block = next(b for b in re.findall(r"```yaml\n(.*?)```", text, re.S) if "walk_forward" in b)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["new-agent", "flow_chaser"]) == 0
    raw = yaml.safe_load(block)
    config = parse_tune_config(raw, "first-agent.md")
    assert set(config.params_space) == {"alpha", "threshold"}
    written = yaml.safe_load((tmp_path / "flow_chaser.yaml").read_text())
    assert raw["system"]["agents"] == written["agents"]  # the agent as new-agent wrote it
    raw["space"]["treshold"] = raw["space"].pop("threshold")
    with pytest.raises(TuneConfigError, match="treshold"):
        parse_tune_config(raw, "first-agent.md")
