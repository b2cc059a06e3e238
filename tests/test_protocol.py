"""The kernel/front-end message shapes: Python defines them, the TypeScript mirror must match."""

from __future__ import annotations

import pathlib
import re
import typing

from torchmagic.display import protocol

TS = (pathlib.Path(__file__).resolve().parents[1] / "labextension" / "src" / "protocol.ts").read_text()


def _ts_constant(name: str) -> str:
    match = re.search(rf"export const {name} = '([^']*)';", TS)
    assert match, f"{name} missing from protocol.ts"
    return match.group(1)


def _ts_fields(interface: str) -> set[str]:
    body = re.search(rf"export interface {interface} \{{(.*?)\n\}}", TS, re.S)
    assert body, f"interface {interface} missing from protocol.ts"
    text = re.sub(r"/\*\*.*?\*/", "", body.group(1), flags=re.S)
    return set(re.findall(r"^\s*(\w+)\??:", text, re.M))


def test_constants_match():
    for name in ("MODULE_NAME", "MODULE_VERSION", "COMM_TARGET", "REFRESH", "HELLO"):
        assert _ts_constant(name) == getattr(protocol, name), name


def test_sections_match_in_order():
    match = re.search(r"export const SECTIONS = \[(.*?)\] as const;", TS)
    assert match
    assert tuple(re.findall(r"'([^']*)'", match.group(1))) == protocol.SECTIONS


def test_message_fields_match():
    for cls in (protocol.ColumnBatch, protocol.Progress, protocol.RefreshMessage, protocol.HelloMessage):
        assert _ts_fields(cls.__name__) == set(typing.get_type_hints(cls)), cls.__name__


def test_python_side_sends_only_declared_fields():
    from torchmagic.display.dashboard import LiveDashboard
    from torchmagic.display.testing import recording_comms

    with recording_comms() as rec:
        dash = LiveDashboard("m", transport="lab")
        dash._send_lab({"header": "<b>x</b>"}, {"fraction": 0.5, "label": "half"}, [])
        dash.close()
    content = next(d["content"] for kind, d, _ in rec.messages if d.get("method") == "custom")
    assert set(content) == set(typing.get_type_hints(protocol.RefreshMessage))
    assert content["kind"] == protocol.REFRESH


def _ts_number(name: str) -> float:
    match = re.search(rf"export const {name} = ([0-9.]+);", TS)
    assert match, f"{name} missing from protocol.ts"
    return float(match.group(1))


def test_status_protocol_matches():
    for name in ("SUBSCRIBE", "UNSUBSCRIBE", "STATUS"):
        assert _ts_constant(name) == getattr(protocol, name), name
    for name in ("MIN_INTERVAL", "MAX_INTERVAL", "HISTORY_ROWS"):
        assert _ts_number(name) == getattr(protocol, name), name
    kinds = re.search(r"export const MESSAGE_KINDS = \[(.*?)\] as const;", TS)
    assert kinds
    assert tuple(getattr(protocol, k.strip()) for k in kinds.group(1).split(",")) == protocol.MESSAGE_KINDS
    for cls in (
        protocol.SubscribeMessage,
        protocol.UnsubscribeMessage,
        protocol.DeviceStatus,
        protocol.ProcessMemory,
        protocol.RunStatus,
        protocol.MemoryRow,
        protocol.StatusMessage,
    ):
        assert _ts_fields(cls.__name__) == set(typing.get_type_hints(cls)), cls.__name__


def test_ts_validator_checks_every_status_field():
    """statusProblem() in protocol.ts checks each declared field of each nested shape."""
    tables = {
        "DEVICE_FIELDS": protocol.DeviceStatus,
        "MEMORY_FIELDS": protocol.ProcessMemory,
        "RUN_FIELDS": protocol.RunStatus,
        "ROW_FIELDS": protocol.MemoryRow,
    }
    for table, cls in tables.items():
        body = re.search(rf"const {table} = \{{(.*?)\}};", TS, re.S)
        assert body, table
        assert set(re.findall(r"(\w+):", body.group(1))) == set(typing.get_type_hints(cls)), table
    top = re.search(r"export function statusProblem.*?^}", TS, re.S | re.M)
    assert top
    checked = set(re.findall(r"^\s+(\w+): ", top.group(0), re.M)) | {"kind", "devices", "history", "memory", "run"}
    assert checked == set(typing.get_type_hints(protocol.StatusMessage))


def test_kernel_sends_only_declared_status_fields():
    from torchmagic.core import memtrack
    from torchmagic.display.kernel_status import StatusPublisher

    memtrack.record(memtrack.CellMemory(cell=1, code="a = 1"))
    try:
        message = StatusPublisher(lambda m: None).build()
    finally:
        memtrack.clear_history()
    assert set(message) == set(typing.get_type_hints(protocol.StatusMessage))
    assert set(message["memory"]) == set(typing.get_type_hints(protocol.ProcessMemory))
    for device in message["devices"]:
        assert set(device) == set(typing.get_type_hints(protocol.DeviceStatus))
    assert [set(r) for r in message["history"]] == [set(typing.get_type_hints(protocol.MemoryRow))]
