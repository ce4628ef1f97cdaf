"""YAML to plain Python values, remembering where each value sits in its file."""

from __future__ import annotations

from typing import Any

import yaml

Path = tuple[str | int, ...]
Marks = dict[Path, tuple[int, int]]


class _Loader(yaml.SafeLoader):
    """SafeLoader: no Python tags, no object construction from rule files."""


def load_with_marks(text: str, name: str) -> tuple[Any, Marks]:
    """Parse YAML and return (data, marks): marks maps a key path to its 1-based (line, column)."""
    node = yaml.compose(text, Loader=_Loader)
    marks: Marks = {}
    if node is None:
        return None, marks
    return _convert(node, (), marks), marks


def _convert(node: yaml.Node, path: Path, marks: Marks) -> Any:
    marks[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _scalar(key_node)
            if key in result:
                raise yaml.MarkedYAMLError(
                    problem=f"duplicate key {key!r}", problem_mark=key_node.start_mark
                )
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
    return loader.construct_object(node)
