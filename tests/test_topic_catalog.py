"""The topic catalog says who produces and consumes each topic; this checks it against the code (issue 7, item 6).

A static scan of ``services/*/src``: a service *produces* to a topic when it calls
``send``/``send_many`` with the topic's logical name or builds a ``DeadLetters`` (which sends to
``ami.dead-letter``), and *consumes* it when it passes the topic to ``make_consumer``,
``start_clients``, ``AIOKafkaConsumer``, ``subscribe`` or ``partitions_for_topic``. A topic
reference is ``READINGS.name``, ``DEAD_LETTER``, a catalog name as a string, ``settings.topic(...)``
of one of those, or a local name bound to one of those. Flows the design has but no code does
yet are ``planned_producers`` / ``planned_consumers``, and the scan must *not* find them.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from gxami_contracts import CATALOG, topics
from gxami_contracts.topics import TopicSpec

ROOT = Path(__file__).resolve().parents[1]
SERVICES = sorted(p.name for p in (ROOT / "services").iterdir() if (p / "src").is_dir())

# How code names a topic: the catalog's constants and the names themselves.
_SPEC_CONSTANTS = {name: spec.name for name, spec in vars(topics).items() if isinstance(spec, TopicSpec)}
_NAME_CONSTANTS = {name: value for name, value in vars(topics).items() if isinstance(value, str) and value in CATALOG}
_PRODUCE_CALLS = {"send", "send_many"}
# The call, and the first positional argument that can be a topic (after settings and group id).
_CONSUME_CALLS = {
    "make_consumer": 2,
    "start_clients": 2,
    "AIOKafkaConsumer": 0,
    "subscribe": 0,
    "partitions_for_topic": 0,
}
_CATALOG_MODELS = {spec.model.__name__ for spec in CATALOG.values()}

Flow = tuple[str, str]  # (topic, "produces" | "consumes")


def _call_name(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return None


def _topic(expr: ast.expr, bound: dict[str, str]) -> str | None:
    """The logical topic ``expr`` names, if it names one."""
    if isinstance(expr, ast.Attribute) and expr.attr == "name" and isinstance(expr.value, ast.Name):
        return _SPEC_CONSTANTS.get(expr.value.id)
    if isinstance(expr, ast.Name):
        return _NAME_CONSTANTS.get(expr.id) or bound.get(expr.id)
    if isinstance(expr, ast.Constant) and isinstance(expr.value, str) and expr.value in CATALOG:
        return expr.value
    if isinstance(expr, ast.Call) and _call_name(expr) == "topic" and len(expr.args) == 1:
        return _topic(expr.args[0], bound)
    return None


def _scopes(tree: ast.Module) -> Iterator[ast.AST]:
    yield tree
    yield from (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))


def flows_in_source(source: str) -> set[Flow]:
    """What one module produces and consumes, by the rules in the module docstring."""
    tree = ast.parse(source)
    found: set[Flow] = set()
    for scope in _scopes(tree):
        nodes = list(ast.walk(scope)) if scope is not tree else list(ast.iter_child_nodes(tree))
        bound: dict[str, str] = {}
        for node in nodes:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                named = _topic(node.value, bound)
                if named is not None:
                    bound[node.targets[0].id] = named
        for node in nodes:
            if not isinstance(node, ast.Call):
                continue
            name = _call_name(node)
            if name in _PRODUCE_CALLS and node.args and (t := _topic(node.args[0], bound)) is not None:
                found.add((t, "produces"))
            elif name is not None and name.endswith("DeadLetters"):  # DeadLetters or a subclass of it
                found.add((topics.DEAD_LETTER, "produces"))
            elif name in _CONSUME_CALLS:
                for arg in node.args[_CONSUME_CALLS[name] :]:
                    if (t := _topic(arg, bound)) is not None:
                        found.add((t, "consumes"))
    return found


def _service_flows(service: str) -> set[Flow]:
    found: set[Flow] = set()
    for path in sorted((ROOT / "services" / service / "src").rglob("*.py")):
        found |= flows_in_source(path.read_text(encoding="utf-8"))
    return found


def _declared(service: str, *, planned: bool) -> set[Flow]:
    out: set[Flow] = set()
    for spec in CATALOG.values():
        producers = spec.planned_producers if planned else spec.producers
        consumers = spec.planned_consumers if planned else spec.consumers
        out |= {(spec.name, "produces")} if service in producers else set()
        out |= {(spec.name, "consumes")} if service in consumers else set()
    return out


@pytest.mark.parametrize("service", SERVICES)
def test_the_catalog_names_exactly_what_each_service_produces_and_consumes(service: str) -> None:
    found = _service_flows(service)
    declared = _declared(service, planned=False)
    missing = sorted(declared - found)
    unlisted = sorted(found - declared)
    assert not unlisted, (
        f"{service} does {unlisted} in its code but the catalog (gxami_contracts.topics) does not say so"
    )
    assert not missing, f"the catalog says {service} does {missing}, but no code of {service} does"


@pytest.mark.parametrize("service", SERVICES)
def test_a_planned_flow_is_not_yet_in_the_code(service: str) -> None:
    done = sorted(_declared(service, planned=True) & _service_flows(service))
    assert not done, f"{service} now does {done}: move it from planned_* to producers/consumers in the catalog"


def test_every_role_is_a_service_and_every_topic_has_both_ends() -> None:
    for spec in CATALOG.values():
        roles = set(spec.producers + spec.consumers + spec.planned_producers + spec.planned_consumers)
        assert roles <= set(SERVICES), (spec.name, roles - set(SERVICES))
        assert spec.producers or spec.planned_producers, spec.name
        assert spec.consumers or spec.planned_consumers, spec.name
        if spec.planned:
            assert spec.planned_producers and spec.planned_consumers, spec.name
    assert {s.name for s in CATALOG.values() if s.planned} == set()  # the command topics have code now (issue 9)


def test_the_scan_sees_each_way_of_naming_a_topic() -> None:
    source = """
from gxami_contracts.topics import READINGS, EVENTS, READ_JOBS, DEAD_LETTER

async def run(s, publisher, batch):
    producer, consumer = await start_clients(s, s.consumer_group, s.topic(READ_JOBS.name))
    await publisher.send(READINGS.name, batch.meter_id, batch)
    await publisher.send_many("ami.events", [])
    dead = DeadLetters(publisher, "x")

def listing(settings):
    topic = settings.topic(DEAD_LETTER)
    consumer = AIOKafkaConsumer(group_id=None)
    parts = consumer.partitions_for_topic(topic)

def elsewhere(settings):
    log.info("started", extra={"topic": settings.topic(EVENTS.name)})
    consumer = make_consumer(settings, "group-named-ami.job-results", settings.topic("ami.job-results"))
"""
    assert flows_in_source(source) == {
        ("ami.read-jobs", "consumes"),
        ("ami.readings", "produces"),
        ("ami.events", "produces"),
        ("ami.dead-letter", "produces"),
        ("ami.dead-letter", "consumes"),
        ("ami.job-results", "consumes"),
    }


def test_consumers_read_contract_messages_off_the_wire_through_from_wire() -> None:
    """``model_validate_json`` refuses a newer producer's added field; ``Message.from_wire`` drops it."""
    offenders = []
    for path in sorted([*(ROOT / "services").glob("*/src/**/*.py"), *(ROOT / "libs").glob("*/src/**/*.py")]):
        if "gxami_contracts" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "model_validate_json"
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id in _CATALOG_MODELS
            ):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []
