"""The CLI in-process: help, usage errors, exit codes, and the commands that need no daemon."""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from meshnode.cli import ExitStatus, build_parser, exit_status_for, render_docs, run
from meshnode.cli.rendering import print_bulletin, unreadable_line
from meshnode.client import Client
from meshnode.core.identity import parse_key
from meshnode.core.views import BulletinRecord, UnreadableInfo
from meshnode.errors import (
    AmbiguousChannel,
    DaemonUnreachable,
    HandshakeError,
    MeshError,
    OperationTimeout,
    PeerDisconnected,
    UnknownChannel,
)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def _commands(
    parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
) -> list[tuple[str, ...]]:
    found = [prefix]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found += _commands(child, (*prefix, name))
    return found


ALL_COMMANDS = _commands(build_parser())


@pytest.mark.parametrize("command", ALL_COMMANDS, ids=lambda c: " ".join(c) or "meshnode")
def test_every_command_has_help(
    command: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run([*command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: meshnode")
    assert len(out.splitlines()) > 3


def test_cli_docs_are_current() -> None:
    assert DOCS.read_text() == render_docs() + "\n", "docs/cli.md is stale: run 'make docs'"


def test_usage_error_is_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["post", "--nonsense"]) == ExitStatus.USAGE
    err = capsys.readouterr().err
    assert err.startswith("meshnode: error: ")
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    "extra", [["--follow"], ["--since", "2h"], ["--limit", "3"], ["strike-support"]]
)
def test_read_unreadable_takes_no_filter(
    extra: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["read", "--unreadable", *extra]) == ExitStatus.USAGE
    assert capsys.readouterr().err.count("\n") == 1


def test_an_unreadable_bulletin_reads_as_its_reason() -> None:
    info = UnreadableInfo(
        id=bytes([0xCD]) * 32, author=bytes(32), author_name="local12", kind="channel",
        channel="strike-support", channel_id=bytes(32), created_at=0,
        reason="unknown epoch 3", author_at_fault=False,
    )  # fmt: skip
    head, tail = unreadable_line(info).splitlines()
    assert head.endswith("#strike-support local12: unknown epoch 3")
    assert tail == "    id cdcdcdcdcdcdcdcd"
    altered = dataclasses.replace(info, kind="direct", channel=None, author_at_fault=True)
    assert "direct local12: " in unreadable_line(altered)
    assert unreadable_line(altered).splitlines()[0].endswith("(the author's doing)")


def test_bare_noun_asks_for_an_action(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["channel"]) == ExitStatus.USAGE
    assert "needs an action" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (MeshError("x"), ExitStatus.ERROR),
        (UnknownChannel("x"), ExitStatus.ERROR),
        (AmbiguousChannel("x"), ExitStatus.ERROR),
        (DaemonUnreachable("x"), ExitStatus.DAEMON_UNREACHABLE),
        (OperationTimeout("x"), ExitStatus.TIMEOUT),
        (HandshakeError("x"), ExitStatus.PEER_FAILURE),
        (PeerDisconnected("x"), ExitStatus.PEER_FAILURE),
    ],
)
def test_exit_codes_are_pinned(error: MeshError, status: ExitStatus) -> None:
    assert exit_status_for(error) == status
    assert [int(s) for s in ExitStatus] == [0, 1, 2, 3, 4, 5, 130]


@pytest.mark.parametrize(
    "argv",
    [
        ["channel", "invite", "strike"],
        ["channel", "leave", "strike"],
        ["channel", "rekey", "strike"],
        ["post", "strike", "text"],
        ["read", "strike"],
    ],
)
def test_an_ambiguous_channel_is_one_line_exit_1(
    argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    message = (
        "2 channels are named 'strike' (aa.., bb..): name the one you mean by its id "
        "(see 'meshnode channel list')"
    )

    def call(self: Client, op: str, **args: object) -> object:
        assert args["channel"] == "strike"  # the CLI passes the NAME text as it is
        raise AmbiguousChannel(message)

    monkeypatch.setattr(Client, "call", call)
    monkeypatch.setattr(Client, "stream", call)
    assert run(argv) == ExitStatus.ERROR
    assert capsys.readouterr().err == f"meshnode: error: {message}\n"


def test_init_then_id(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    assert run(["--data-dir", str(home), "init", "--name", "Local 12", "--json"]) == 0
    created = json.loads(capsys.readouterr().out)
    assert created["name"] == "Local 12"
    assert (home / "identity.key").stat().st_mode & 0o777 == 0o600
    assert (home / "meshnode.toml").exists()
    assert run(["id", "--json", "--data-dir", str(home)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["key"] == created["key"]
    assert shown["fingerprint"] == created["fingerprint"]
    assert run(["--data-dir", str(home), "init"]) == ExitStatus.ERROR
    assert "already holds an identity" in capsys.readouterr().err
    assert run(["--data-dir", str(home), "init", "--if-missing"]) == 0


def test_id_without_init_says_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["id", "--data-dir", str(tmp_path / "nothing")]) == ExitStatus.ERROR
    err = capsys.readouterr().err
    assert "meshnode init" in err
    assert err.count("\n") == 1


def test_daemon_unreachable_exit_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["status", "--data-dir", str(tmp_path)]) == ExitStatus.DAEMON_UNREACHABLE
    err = capsys.readouterr().err
    assert "meshnode daemon" in err
    assert err.count("\n") == 1


def test_wrong_passphrase_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from meshnode.home import DataDir

    DataDir(tmp_path).initialise("Local 12", "right", opslimit=1, memlimit=8192)
    monkeypatch.setenv("MESHNODE_PASSPHRASE", "wrong")
    assert run(["id", "--data-dir", str(tmp_path)]) == ExitStatus.ERROR
    err = capsys.readouterr().err
    assert "wrong passphrase" in err
    assert err.count("\n") == 1


def test_private_mesh_writes_a_network_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["init", "--data-dir", str(tmp_path), "--private-mesh", "--name", "A"]) == 0
    key = (tmp_path / "network.key").read_text().strip()
    assert len(bytes.fromhex(key)) == 32
    assert (tmp_path / "network.key").stat().st_mode & 0o777 == 0o600
    assert "network_key_file" in (tmp_path / "meshnode.toml").read_text()


def test_an_endorsement_reads_as_what_it_endorses(capsys: pytest.CaptureFixture[str]) -> None:
    record = BulletinRecord(
        id=bytes(32), author=bytes(32), author_name="local12", kind="endorsement",
        channel=None, channel_id=None, text="", created_at=0, expires_at=None,
        reply_to=None, endorses=bytes([0xAB]) * 32, seq=1, cursor=1,
    )  # fmt: skip
    print_bulletin(record)
    assert "local12: stands behind abababababababab" in capsys.readouterr().out


def test_python_dash_m_runs_the_command(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "meshnode.cli", "--data-dir", str(tmp_path), "status"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == ExitStatus.DAEMON_UNREACHABLE
    assert done.stderr.startswith("meshnode: error: no meshnode daemon")


def test_id_shows_the_contact_card(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["init", "--data-dir", str(tmp_path), "--name", "Local 12", "--json"]) == 0
    created = json.loads(capsys.readouterr().out)
    card = f"meshnode:{created['key']}?name=Local%2012"
    assert created["contact_card"] == card
    assert run(["id", "--data-dir", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["contact_card"] == card
    assert run(["id", "--data-dir", str(tmp_path)]) == 0
    assert f"contact card  {card}\n" in capsys.readouterr().out
    assert run(["id", "--data-dir", str(tmp_path), "--json", "--qr"]) == 0
    shown = capsys.readouterr()
    assert json.loads(shown.out)["contact_card"] == card
    assert shown.err.count("\n") > 10  # the same card as a QR code, off stdout
    # What 'contact add NAME CARD' reads: the card names the key.
    assert parse_key(card) == parse_key(created["key"])
