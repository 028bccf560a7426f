"""Committed JSON Schema snapshots of every topic's message, and the check that keeps them honest.

``schemas/<topic>.json`` holds what a consumer of the topic's current major version accepts
(the model's validation JSON Schema; ``additionalProperties: false`` is left out because
consumers drop unknown fields, see :mod:`gxami_contracts.messages`). Within one
``schema_version`` the only change allowed is a new *optional* field, because producers and
consumers of one major version are upgraded in any order and both must read each other:

- a field removed, a type changed, a field made required or a required field added, a default
  changed, a constraint changed either way (tighter: old messages refused; looser: old consumers
  refuse new messages) are incompatible: bump ``schema_version`` (and let consumers that must
  read both list both, as ``DeadLetter`` does), or undo the change;
- titles and descriptions are ignored; ``$ref`` targets are compared by content, not by name.

Check: ``python -m gxami_contracts.snapshots``. After a compatible change or a version bump,
write the snapshots: ``python -m gxami_contracts.snapshots --write`` (it refuses to write an
incompatible change at the same version; ``--accept-incompatible`` overrides that, for a topic
that no deployment has produced to yet).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gxami_contracts.messages import Message
from gxami_contracts.topics import CATALOG, TopicSpec

SNAPSHOT_DIR = Path(__file__).parent / "schemas"
WRITE_COMMAND = "python -m gxami_contracts.snapshots --write"

# Words for people, not rules for parsers: never a compatibility question.
_IGNORED = frozenset({"title", "description", "examples", "$comment", "$defs"})
# Keys whose change is a change of type rather than of a bound.
_TYPE_KEYS = frozenset({"type", "format", "const", "enum", "anyOf", "oneOf", "allOf", "items", "prefixItems"})
_MAX_DEPTH = 64  # the schemas are not recursive; a recursive one is compared this deep
# Keys that hold one nested schema, and how a path into them is written.
_NESTED = {"items": "[]", "additionalProperties": "{}", "propertyNames": "{name}"}


def wire_schema(model: type[Message]) -> dict[str, Any]:
    """The JSON Schema of what a consumer of ``model`` accepts, as JSON values (lists, not tuples)."""
    schema: dict[str, Any] = _drop_closed_objects(json.loads(json.dumps(model.model_json_schema())))
    return schema


def _drop_closed_objects(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _drop_closed_objects(v) for k, v in node.items() if not (k == "additionalProperties" and v is False)}
    if isinstance(node, list):
        return [_drop_closed_objects(v) for v in node]
    return node


def schema_version(schema: Mapping[str, Any]) -> object:
    """The major version a snapshot was written at (the default of its ``schema_version``)."""
    return schema.get("properties", {}).get("schema_version", {}).get("default")


def incompatibilities(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Each change from ``old`` to ``new`` that breaks a reader of either, as ``path: what``; [] if compatible."""
    found: list[str] = []
    _compare(_inline(old, old, 0), _inline(new, new, 0), "(message)", found)
    return found


def _inline(root: Mapping[str, Any], node: Any, depth: int) -> Any:
    """``node`` with every local ``$ref`` (``#/$defs/Name``) replaced by its definition, so names do not matter."""
    if depth > _MAX_DEPTH:
        return node
    if isinstance(node, list):
        return [_inline(root, v, depth + 1) for v in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    target = root.get("$defs", {}).get(ref.removeprefix("#/$defs/")) if isinstance(ref, str) else None
    if target is not None:
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return {k: _inline(root, v, depth + 1) for k, v in node.items() if k != "$defs"}


_ABSENT = object()


def _compare(old: Any, new: Any, path: str, out: list[str]) -> None:
    if old == new:
        return
    if not (isinstance(old, dict) and isinstance(new, dict)):
        out.append(f"{path}: type changed ({_short(old)} -> {_short(new)})")
        return
    old_props: dict[str, Any] = old.get("properties", {})
    new_props: dict[str, Any] = new.get("properties", {})
    old_req, new_req = set(old.get("required", [])), set(new.get("required", []))
    for name in old_props:
        if name not in new_props:
            out.append(f"{_join(path, name)}: field removed")
    for name in sorted(new_req - old_req):
        what = "now required" if name in old_props else "required field added"
        out.append(f"{_join(path, name)}: {what}")
    for name in sorted(old_req - new_req):
        if name in new_props:
            out.append(f"{_join(path, name)}: no longer required (consumers of the snapshot need it)")
    for name, sub in old_props.items():
        if name in new_props:
            _compare(sub, new_props[name], _join(path, name), out)
    for key in sorted((old.keys() | new.keys()) - _IGNORED - {"properties", "required"}):
        a, b = old.get(key, _ABSENT), new.get(key, _ABSENT)
        if a == b:
            continue
        if key in _NESTED and isinstance(a, dict) and isinstance(b, dict):
            _compare(a, b, f"{path}{_NESTED[key]}", out)
        elif key in {"anyOf", "oneOf", "allOf", "prefixItems"} and _same_length_lists(a, b):
            for i, (x, y) in enumerate(zip(a, b, strict=True)):
                _compare(x, y, f"{path}|{i}", out)
        elif key in _TYPE_KEYS:
            out.append(f"{path}: type changed ({key}: {_short(a)} -> {_short(b)})")
        elif a is _ABSENT:
            out.append(f"{path}: constraint {key} added ({_short(b)})")
        elif b is _ABSENT:
            out.append(f"{path}: constraint {key} removed (was {_short(a)})")
        else:
            out.append(f"{path}: {key} changed ({_short(a)} -> {_short(b)})")


def _same_length_lists(a: object, b: object) -> bool:
    return isinstance(a, list) and isinstance(b, list) and len(a) == len(b)


def _join(path: str, name: str) -> str:
    return name if path == "(message)" else f"{path}.{name}"


def _short(value: object) -> str:
    text = "absent" if value is _ABSENT else json.dumps(value, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


def snapshot_path(topic: str, directory: Path = SNAPSHOT_DIR) -> Path:
    return directory / f"{topic}.json"


def load_snapshot(topic: str, directory: Path = SNAPSHOT_DIR) -> dict[str, Any] | None:
    path = snapshot_path(topic, directory)
    if not path.exists():
        return None
    snapshot: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return snapshot


def render(schema: Mapping[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


@dataclass(frozen=True, slots=True)
class TopicCheck:
    """How one topic's model stands against its committed snapshot."""

    topic: str
    state: str  # "same", "missing", "compatible", "bumped" (schema_version changed), "incompatible"
    problems: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.state == "incompatible":
            lines = "\n".join(f"  - {p}" for p in self.problems)
            return (
                f"{self.topic}: incompatible change without a schema_version bump:\n{lines}\n"
                "  Undo it, or bump schema_version (consumers that must read both list both), then run "
                f"`{WRITE_COMMAND}`."
            )
        if self.state == "same":
            return f"{self.topic}: matches its snapshot"
        why = {
            "missing": "has no snapshot",
            "compatible": "changed compatibly (an optional field added) and the snapshot is not updated",
            "bumped": "changed schema_version and the snapshot is not updated",
        }[self.state]
        return f"{self.topic}: {why}; run `{WRITE_COMMAND}` and commit libs/contracts/src/gxami_contracts/schemas/"


def check_topic(spec: TopicSpec, directory: Path = SNAPSHOT_DIR) -> TopicCheck:
    current = wire_schema(spec.model)
    snapshot = load_snapshot(spec.name, directory)
    if snapshot is None:
        return TopicCheck(spec.name, "missing")
    if snapshot == current:
        return TopicCheck(spec.name, "same")
    if schema_version(snapshot) != schema_version(current):
        return TopicCheck(spec.name, "bumped")
    problems = incompatibilities(snapshot, current)
    return TopicCheck(spec.name, "incompatible", tuple(problems)) if problems else TopicCheck(spec.name, "compatible")


def check_all(catalog: Mapping[str, TopicSpec] = CATALOG, directory: Path = SNAPSHOT_DIR) -> list[TopicCheck]:
    return [check_topic(spec, directory) for spec in catalog.values()]


def write_snapshots(
    catalog: Mapping[str, TopicSpec] = CATALOG,
    directory: Path = SNAPSHOT_DIR,
    *,
    accept_incompatible: bool = False,
) -> list[TopicCheck]:
    """Write the snapshot of every topic that differs, except incompatible ones (returned, not written)."""
    refused: list[TopicCheck] = []
    directory.mkdir(parents=True, exist_ok=True)
    for spec in catalog.values():
        result = check_topic(spec, directory)
        if result.state == "same":
            continue
        if result.state == "incompatible" and not accept_incompatible:
            refused.append(result)
            continue
        snapshot_path(spec.name, directory).write_text(render(wire_schema(spec.model)), encoding="utf-8")
    return refused


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gxami_contracts.snapshots", description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true", help="write the snapshots of compatible changes and bumps")
    parser.add_argument(
        "--accept-incompatible",
        action="store_true",
        help="with --write, write incompatible changes too (only for a topic nothing has produced to yet)",
    )
    parser.add_argument("--dir", type=Path, default=SNAPSHOT_DIR, help="the snapshot folder (default: the package's)")
    args = parser.parse_args(argv)
    if args.write:
        refused = write_snapshots(directory=args.dir, accept_incompatible=args.accept_incompatible)
        for r in refused:
            sys.stderr.write(r.describe() + "\n")
        return 1 if refused else 0
    results = [r for r in check_all(directory=args.dir) if r.state != "same"]
    for r in results:
        sys.stderr.write(r.describe() + "\n")
    return 1 if results else 0


if __name__ == "__main__":
    raise SystemExit(main())
