"""One vocabulary of states (outbox/states.py): the schema's CHECK
constraints are built from it, and no module keeps a list of its own."""

from __future__ import annotations

import ast
import enum
import itertools
import re
from pathlib import Path

from sqlalchemy import CheckConstraint

from outbox import states
from outbox.db.models import Base
from outbox.providers.base import ChannelProblem
from outbox.webhooks.routes import DELETED_STATUS, STATUS_ORDER

ROOT = Path(__file__).resolve().parent.parent
ENUMS: tuple[type[enum.StrEnum], ...] = (
    states.ChannelStatus, states.ChatStatus, states.MessageStatus, states.OutboxStatus,
    states.Direction, states.PauseCause, states.PendingKind, states.EventType,
    states.EndpointStatus, states.DeliveryStatus)
#: Which enum each constrained column holds.
CONSTRAINED = {
    ("channels", "status"): states.ChannelStatus,
    ("chats", "status"): states.ChatStatus,
    ("messages", "status"): states.MessageStatus,
    ("messages", "direction"): states.Direction,
    ("outbox_messages", "status"): states.OutboxStatus,
    ("webhook_pending", "kind"): states.PendingKind,
    ("users", "role"): states.Role,
    ("api_keys", "scopes"): states.Scope,
    ("events", "type"): states.EventType,
    ("webhook_endpoints", "status"): states.EndpointStatus,
    ("webhook_deliveries", "status"): states.DeliveryStatus,
}


def _checks() -> dict[tuple[str, str], list[str]]:
    """(table, column) -> the values its CHECK constraint allows, in order."""
    out: dict[tuple[str, str], list[str]] = {}
    for table in Base.metadata.tables.values():
        for c in table.constraints:
            if isinstance(c, CheckConstraint):
                match = (re.fullmatch(r"(\w+) IN \((.*)\)", str(c.sqltext))
                         or re.match(r"(\w+) <@ ARRAY\[(.*?)\]", str(c.sqltext)))
                if match is None:  # not a list of values (e.g. email = lower(email))
                    continue
                out[(table.name, match[1])] = re.findall(r"'([^']*)'", match[2])
    return out


def test_every_check_constraint_is_its_enum_in_order() -> None:
    assert _checks() == {key: [s.value for s in enum] for key, enum in CONSTRAINED.items()}


def test_outbox_rows_are_never_paused() -> None:
    # A paused channel holds its rows back by the claim's channel filter.
    assert "paused" not in set(states.OutboxStatus)
    assert "paused" in set(states.ChannelStatus)


def test_webhook_status_order_ranks_every_delivery_status() -> None:
    # Every status but `cancelled`, which is ours (taken back before a claim).
    assert set(STATUS_ORDER) | {DELETED_STATUS, states.MessageStatus.CANCELLED} == set(
        states.MessageStatus)
    assert len(STATUS_ORDER) == len(set(STATUS_ORDER))
    assert all(isinstance(s, states.MessageStatus) for s in STATUS_ORDER)


def test_a_provider_channel_problem_is_a_pause_cause() -> None:
    assert {p.value for p in ChannelProblem} <= {c.value for c in states.PauseCause}


#: What holds a state: a row's or an object's field of these names, or a
#: variable ending in `status` (the columns CONSTRAINED lists, and kin).
_STATE_FIELDS = {"status", "outbox_status", "direction", "kind", "role", "pause_cause"}


def _holds_a_state(node: ast.expr) -> bool:
    if isinstance(node, ast.Attribute):
        return node.attr in _STATE_FIELDS or node.attr.endswith("status")
    # A bare `kind` or `method` in the webhook parser is Whapi's word, not ours.
    return isinstance(node, ast.Name) and (node.id.endswith("status") or node.id == "direction")


def _compared_literals(node: ast.AST) -> list[str]:
    """`x.status == "queued"` (or !=): the literals a state is compared to."""
    if not isinstance(node, ast.Compare):
        return []
    found = []
    operands = [node.left, *node.comparators]
    for op, (left, right) in zip(node.ops, itertools.pairwise(operands), strict=True):
        if not isinstance(op, ast.Eq | ast.NotEq):
            continue
        for side, other in ((left, right), (right, left)):
            if isinstance(side, ast.Constant) and isinstance(side.value, str) \
                    and _holds_a_state(other):
                found.append(side.value)
    return found


def test_no_module_keeps_its_own_list_of_states() -> None:
    """A tuple, list or set of two or more string literals that are all
    values of one state enum is a copy of it: use the enum. So is a state
    compared to a literal in the package (`state.status == "queued"`): a
    renamed state would leave it silently false. (Migrations write their
    values out on purpose: a revision records what it did. The simulator in
    providers/ speaks Whapi's words, which happen to be ours.)"""
    every_value = {s.value for states_enum in (*ENUMS, states.Role, states.Scope)
                   for s in states_enum}
    copies = []
    for folder in ("outbox", "db", "providers"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path.name == "states.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if folder != "providers":
                    copies += [f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)} "
                               f"== {value!r}" for value in _compared_literals(node)
                               if value in every_value]
                if not isinstance(node, ast.Tuple | ast.List | ast.Set) or len(node.elts) < 2:
                    continue
                if not all(isinstance(e, ast.Constant) and isinstance(e.value, str)
                           for e in node.elts):
                    continue
                found = {e.value for e in node.elts if isinstance(e, ast.Constant)}
                for states_enum in ENUMS:
                    if found <= {s.value for s in states_enum}:
                        copies.append(f"{path.relative_to(ROOT)}:{node.lineno} "
                                      f"{states_enum.__name__}")
    assert copies == []
