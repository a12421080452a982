"""YAML for configs, read defensively: bounded alias expansion, no duplicate keys.

``yaml.safe_load`` runs no code, but it still trusts the document's shape: a few hundred
bytes of nested aliases ("billion laughs") expand to millions of values and minutes of work
before anything validates them, and a key written twice silently keeps the last value (an
edited config that still carries the old ``learning_rate`` further down). Here the document
is composed into nodes first, its expanded size is counted without expanding it (aliases
are shared nodes, so a memoized walk is linear in the text), and only a document within
bounds and without duplicate keys is constructed.
"""

from __future__ import annotations

from typing import Any

import yaml

MAX_VALUES = 100_000
"""Values (scalars, lists, mappings) the document may expand to; a config has a few hundred."""


class YamlError(ValueError):
    """The text is not a YAML document recslm accepts; the message names the line."""


def _expanded_size(root: yaml.Node, limit: int) -> int:
    sizes: dict[int, int] = {}
    on_path: set[int] = set()

    def size(node: yaml.Node) -> int:
        ident = id(node)
        if ident in sizes:
            return sizes[ident]
        if ident in on_path:
            raise YamlError(f"line {node.start_mark.line + 1}: an alias refers to a node that contains it (a recursive document)")
        on_path.add(ident)
        if isinstance(node, yaml.SequenceNode):
            total = 1 + sum(size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total = 1 + sum(size(k) + size(v) for k, v in node.value)
        else:
            total = 1
        on_path.discard(ident)
        if total > limit:
            raise YamlError(f"line {node.start_mark.line + 1}: the document expands to more than {limit:,} values through aliases; refusing to expand it")
        sizes[ident] = total
        return total

    return size(root)


def _check_duplicate_keys(root: yaml.Node) -> None:
    seen_nodes: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict[Any, int] = {}
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                    line = key.start_mark.line + 1
                    if key.value in first:
                        raise YamlError(f"line {line}: duplicate key {key.value!r} (first at line {first[key.value]}); a key may appear once per mapping")
                    first[key.value] = line
                stack.extend((key, value))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)


def load_yaml(text: str, max_values: int = MAX_VALUES) -> Any:
    """Parse one YAML document safely (SafeLoader types only); ``None`` for an empty one."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, max_values)
        _check_duplicate_keys(node)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise YamlError(str(exc)) from None
    finally:
        loader.dispose()
