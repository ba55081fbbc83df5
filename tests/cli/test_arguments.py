"""How the command line reads what is typed: options that add up, options and
positionals in any order, texts that say something."""

from __future__ import annotations

import io
import json
import tomllib
from typing import TYPE_CHECKING, Any

import pytest

from meshnode.cli import ExitStatus, build_parser, run
from meshnode.client import Client
from meshnode.errors import MeshError

if TYPE_CHECKING:
    from pathlib import Path

# --bootstrap (and --keep) add up: repeated, listed, or both -------------------------------


@pytest.mark.parametrize(
    "given",
    [
        ["--bootstrap", "10.0.0.1:7447", "--bootstrap", "10.0.0.2:7447", "10.0.0.3:7447"],
        ["--bootstrap", "10.0.0.1:7447", "10.0.0.2:7447", "--bootstrap", "10.0.0.3:7447"],
        ["--bootstrap", "10.0.0.1:7447", "10.0.0.2:7447", "10.0.0.3:7447"],
    ],
)
@pytest.mark.parametrize("command", ["init", "daemon"])
def test_bootstrap_addresses_add_up(command: str, given: list[str]) -> None:
    args = build_parser().parse_args([command, *given])
    assert args.bootstrap == ["10.0.0.1:7447", "10.0.0.2:7447", "10.0.0.3:7447"]


def test_upgrade_keeps_every_group_named() -> None:
    args = build_parser().parse_args(["channel", "upgrade", "strike", "--keep", "a", "--keep", "b"])
    assert args.keep == ["a", "b"]


def test_init_writes_every_bootstrap_address(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["init", "--data-dir", str(tmp_path), "--name", "Local 12", "--json"]
    argv += ["--bootstrap", "10.0.0.1:7447", "--bootstrap", "10.0.0.2:7447"]
    assert run(argv) == ExitStatus.OK
    config = tomllib.loads((tmp_path / "meshnode.toml").read_text())
    assert config["bootstrap"] == ["10.0.0.1:7447", "10.0.0.2:7447"]
    assert json.loads(capsys.readouterr().out)["name"] == "Local 12"


def test_the_daemon_gets_every_bootstrap_address(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import meshnode.daemon

    assert run(["init", "--data-dir", str(tmp_path), "--name", "Local 12"]) == ExitStatus.OK
    started: dict[str, Any] = {}
    monkeypatch.setattr(meshnode.daemon, "run_daemon", lambda path, **kw: started.update(kw))
    argv = ["daemon", "--data-dir", str(tmp_path), "--bootstrap", "10.0.0.1:7447"]
    assert run([*argv, "--bootstrap", "10.0.0.2:7447", "10.0.0.3:7447"]) == ExitStatus.OK
    assert started["bootstrap"] == ("10.0.0.1:7447", "10.0.0.2:7447", "10.0.0.3:7447")
    capsys.readouterr()
    assert run([*argv, "--bootstrap", "nowhere"]) == ExitStatus.USAGE
    assert capsys.readouterr().err == (
        "meshnode: error: --bootstrap: expected \"host:port\", got 'nowhere'\n"
    )


# An empty text is refused before anything is posted ---------------------------------------


@pytest.mark.parametrize("text", ["", "   ", "\n\t \n"])
@pytest.mark.parametrize("command", [["post", "strike"], ["post", "--public"], ["send", "tenants"]])
def test_an_empty_text_is_a_usage_error(
    command: list[str],
    text: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # No daemon runs on tmp_path: exit 2, not 3, shows that nothing was sent.
    for argv in ([*command, text], [*command, "-"]):
        monkeypatch.setattr("sys.stdin", io.StringIO(text))
        assert run(["--data-dir", str(tmp_path), *argv]) == ExitStatus.USAGE, argv
        assert capsys.readouterr().err == (
            "meshnode: error: the text is empty: a bulletin needs something to say\n"
        )


# Options and positionals in any order ------------------------------------------------------

REPLY_TO = "ab" * 32


@pytest.mark.parametrize(
    "argv",
    [
        ["post", "strike", "--reply-to", REPLY_TO, "Bring banners"],
        ["post", "--reply-to", REPLY_TO, "strike", "Bring banners"],
        ["post", "strike", "Bring banners", "--reply-to", REPLY_TO],
        ["post", "--json", "strike", "--reply-to", REPLY_TO, "Bring banners"],
    ],
)
def test_options_and_positionals_mix(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert (args.channel, args.text, args.reply_to) == ("strike", "Bring banners", REPLY_TO)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["read", "--since", "2h", "strike"], {"channel": "strike", "since": "2h"}),
        (["channel", "invite", "--expires", "1d", "strike"], {"name": "strike", "expires": "1d"}),
        (["channel", "remove", "strike", "a", "--json", "b"], {"groups": ["a", "b"]}),
        (["send", "--json", "tenants", "hello"], {"group": "tenants", "text": "hello"}),
        (["post", "strike", "--", "--public"], {"text": "--public", "public": False}),
    ],
)
def test_every_command_takes_options_anywhere(argv: list[str], expected: dict[str, Any]) -> None:
    args = vars(build_parser().parse_args(argv))
    assert {k: args[k] for k in expected} == expected


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """What a command asks of the daemon: the op and its arguments, recorded by
    ``Client.call``, which then fails as a daemon may (exit 1)."""
    request: dict[str, object] = {}

    def call(self: Client, op: str, **args: object) -> object:
        request.update(op=op, **args)
        raise MeshError("stop here")

    monkeypatch.setattr(Client, "call", call)
    return request


def test_a_reply_after_the_channel_reaches_the_daemon(
    sent: dict[str, object], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["post", "strike", "--reply-to", REPLY_TO, "Bring banners"]
    assert run(argv) == ExitStatus.ERROR
    assert capsys.readouterr().err == "meshnode: error: stop here\n"
    assert sent["op"] == "post"
    assert (sent["channel"], sent["text"]) == ("strike", "Bring banners")
    assert sent["reply_to"] == bytes.fromhex(REPLY_TO)


@pytest.mark.parametrize(("given", "expires"), [([], None), (["--expires", "1d"], 86400)])
def test_send_takes_expires_as_post_does(
    given: list[str], expires: int | None, sent: dict[str, object]
) -> None:
    assert run(["send", "tenants", "Bring banners", *given]) == ExitStatus.ERROR
    assert sent == {
        "op": "send", "recipients": ["tenants"], "text": "Bring banners", "expires": expires
    }  # fmt: skip
