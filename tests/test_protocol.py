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
