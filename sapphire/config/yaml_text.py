"""The one way a config file's YAML is read: as PyYAML's safe loader reads it, except that a
key given twice in one mapping is an error naming its line. The safe loader keeps the last
one silently: ``agents: [...]`` followed further down by ``agents: []`` ran with no agent."""

from __future__ import annotations

from typing import Any

import yaml


class DuplicateKeyError(yaml.YAMLError):  # type: ignore[misc]  # PyYAML has no types here
    """A mapping names one key twice."""


class _Loader(yaml.SafeLoader):  # type: ignore[misc]
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue  # ``<<`` merges (its keys may be overridden); other keys are scalars
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                line = key_node.start_mark.line + 1
                raise DuplicateKeyError(f"line {line}: key {key!r} given twice in one mapping")
            seen.add(key)
        mapping: dict[Any, Any] = super().construct_mapping(node, deep=deep)
        return mapping


def load_yaml(text: str | bytes) -> Any:
    """The document's value; :class:`yaml.YAMLError` (incl. :class:`DuplicateKeyError`) when it
    is not valid YAML or repeats a key."""
    return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: no arbitrary objects


def describe(exc: Exception) -> str:
    """One line for a YAML error: where in the file, and what the parser expected (PyYAML's
    own text is several lines and names "<unicode string>", not the file)."""
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    what = f"{context}, {problem}" if context else problem
    return " ".join(f"{where}{what}".split())
