"""YAML to plain Python values, remembering where each value sits in its file.

Rule files arrive from the rules topic as well as from disk, so parsing must stay cheap whatever
the text: anchors and aliases are refused while the document is composed (before any value is
built, so an alias bomb or a self-referencing anchor never expands), and nesting depth and node
count are bounded there too. File and rule-set sizes are bounded by the caller, before parsing.
"""

from __future__ import annotations

from typing import Any

import yaml

Path = tuple[str | int, ...]
Marks = dict[Path, tuple[int, int]]

MAX_DEPTH = 20
MAX_NODES = 10_000
ALIASES_REFUSED = "YAML anchors/aliases are not allowed in rule files"


class YamlLimitError(Exception):
    """A rule file uses a YAML feature or a size we refuse; 1-based line and column."""

    def __init__(self, message: str, mark: yaml.Mark | None) -> None:
        super().__init__(message)
        self.message = message
        self.line, self.column = (mark.line + 1, mark.column + 1) if mark else (1, 1)


class _Loader(yaml.SafeLoader):
    """SafeLoader (no Python tags) that refuses aliases and anchors and bounds the tree."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise YamlLimitError(ALIASES_REFUSED, event.start_mark)
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise YamlLimitError(f"more than {MAX_NODES} YAML values in one file", event.start_mark)
        if self._depth >= MAX_DEPTH:
            raise YamlLimitError(f"YAML nested deeper than {MAX_DEPTH} levels", event.start_mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def load_with_marks(text: str, name: str) -> tuple[Any, Marks]:
    """Parse YAML and return (data, marks): marks maps a key path to its 1-based (line, column)."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
    finally:
        loader.dispose()
    marks: Marks = {}
    if node is None:
        return None, marks
    return _convert(node, (), marks), marks


def _convert(node: yaml.Node, path: Path, marks: Marks) -> Any:
    marks[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        first: dict[Any, yaml.Mark] = {}
        for key_node, value_node in node.value:
            key = _scalar(key_node)
            if key in result:
                seen = first[key]
                raise yaml.MarkedYAMLError(
                    problem=f"duplicate key {key!r} (first at line {seen.line + 1}, "
                    f"column {seen.column + 1})",
                    problem_mark=key_node.start_mark,
                )
            first[key] = key_node.start_mark
            result[key] = _convert(value_node, (*path, key), marks)
            marks[(*path, key, "<key>")] = (
                key_node.start_mark.line + 1,
                key_node.start_mark.column + 1,
            )
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_convert(item, (*path, i), marks) for i, item in enumerate(node.value)]
    return _scalar(node)


def _scalar(node: yaml.Node) -> Any:
    if not isinstance(node, yaml.ScalarNode):
        raise yaml.MarkedYAMLError(
            problem="expected a plain value here", problem_mark=node.start_mark
        )
    loader = _Loader("")
    try:
        return loader.construct_object(node)
    except ValueError as exc:  # e.g. an integer literal over Python's 4300-digit limit
        raise YamlLimitError(f"YAML value not allowed: {exc}", node.start_mark) from None
