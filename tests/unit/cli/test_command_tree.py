"""Every ``outpost`` command, found from typer's own metadata, run with generated arguments (hypothesis).

Nothing here names a command: the tree is walked from ``typer.main.get_command(app)``, and each
parameter's values are drawn from what its metadata says it is (path, number, text, flag, choice,
repeated, argument). So a command added later is covered without touching this file.

Each run happens in a forked child in its own process group, with stdout/stderr on real file
descriptors and a fresh state dir (``OUTPOST_*`` variables, HOME), a namespace of its own, and free
ports for every option whose name says "port" (never a fixed port). Checked for every run:

- no traceback and no "error: unexpected ..." (the boundary's message for a bug) in any output;
- the exit code is 0, 1 or 2 (``outpost --help``), and 2 whenever the command line had an unknown
  option;
- a command still running after ``RUN_SECS`` (a daemon: ``agent run``, ``hub run``, ``watch``,
  ``logs --follow``) is sent SIGTERM and must exit within ``STOP_SECS`` without a traceback; then
  nothing of its process group may be left running.

Values never include a valid manifest, so nothing is deployed to the machine's Docker engine.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import pytest
import typer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from outpost.cli import app

ROOT = Path(__file__).resolve().parents[3]
RUN_SECS = 4.0
STOP_SECS = 15.0
EXAMPLES = int(os.environ.get("OUTPOST_CLI_FUZZ_EXAMPLES", "12"))
#: Options of the root and of typer itself, not of the commands under test.
SKIP_PARAMS = {"help", "install_completion", "show_completion"}
#: A flag shown as taking a value; text lost to markup ("directory ." once "[default: ...]" was eaten).
HELP_SMELLS = (re.compile(r"<bool>"), re.compile(r"\w \.(\s|$)"), re.compile(r"\[\]"))


def walk(command: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """Every command of the tree with its path, groups included (groups first)."""
    found = [(path, command)]
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        found += walk(sub, (*path, name))
    return found


TREE = walk(typer.main.get_command(app))
LEAVES = [(path, command) for path, command in TREE if not hasattr(command, "commands")]


def _id(entry: tuple[tuple[str, ...], Any]) -> str:
    return " ".join(entry[0]) or "outpost"


# -- help ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("entry", TREE, ids=_id)
def test_help_reads_well(entry: tuple[tuple[str, ...], Any]) -> None:
    """``--help`` of every command and group: exit 0, plain layout, no type placeholders or lost defaults."""
    path, command = entry
    assert getattr(command, "rich_markup_mode", None) is None, "help must not be read as Rich markup"
    with tempfile.TemporaryDirectory(prefix="outpost-help-") as tmp:
        result = run_forked([*path, "--help"], env=_env(Path(tmp)), cwd=Path(tmp))
    assert result.code == 0, result.output
    assert result.stdout.startswith("Usage: outpost")
    for smell in HELP_SMELLS:
        found = smell.search(result.stdout)
        assert found is None, f"{found.group(0)!r} in the help of {_id(entry)}:\n{result.stdout}"
    if command.params and any(p.name not in SKIP_PARAMS for p in command.params):
        assert "Options:" in result.stdout or "Arguments:" in result.stdout


# -- running commands in a forked child ---------------------------------------------------------------


@dataclass(frozen=True)
class Ran:
    code: int | None  # None: killed by a signal
    stdout: str
    stderr: str
    stopped: bool  # still running after RUN_SECS, then stopped with SIGTERM

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def _child(argv: list[str], env: dict[str, str], cwd: Path, out: str, err: str) -> None:
    """In the fork: a process group of its own, its own directory, real fds, the real entry point.

    Never returns. The directory matters: a generated relative path (``--state-dir a.b=1``) is
    created there, not in the clone.
    """
    code = 99
    try:
        os.setpgid(0, 0)
        os.chdir(cwd)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(os.open(out, os.O_WRONLY), 1)
        os.dup2(os.open(err, os.O_WRONLY), 2)
        sys.stdin = open(0, closefd=False)  # noqa: SIM115
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
        for key in [k for k in os.environ if k.startswith("OUTPOST_")]:
            del os.environ[key]
        os.environ.update(env)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            app(args=argv, prog_name="outpost")
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 99
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def run_forked(argv: list[str], env: dict[str, str], cwd: Path) -> Ran:
    with tempfile.NamedTemporaryFile(delete=False) as o, tempfile.NamedTemporaryFile(delete=False) as e:
        out, err = o.name, e.name
    try:
        pid = os.fork()
        if pid == 0:
            _child(argv, env, cwd, out, err)
        with contextlib.suppress(PermissionError, ProcessLookupError):
            os.setpgid(pid, pid)
        status, stopped = _wait(pid, RUN_SECS), False
        if status is None:  # a daemon: ask it to stop as a user's Ctrl-C / systemd would
            stopped = True
            os.killpg(pid, signal.SIGTERM)
            status = _wait(pid, STOP_SECS)
            if status is None:
                os.killpg(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                pytest.fail(f"outpost {' '.join(argv)} did not stop within {STOP_SECS}s of SIGTERM")
        left = _group_alive(pid)
        if left:
            os.killpg(pid, signal.SIGKILL)
            pytest.fail(f"outpost {' '.join(argv)} left processes running in its group")
        code = os.waitstatus_to_exitcode(status)
        return Ran(
            code if code >= 0 else None,
            Path(out).read_text(errors="replace"),
            Path(err).read_text(errors="replace"),
            stopped,
        )
    finally:
        Path(out).unlink(missing_ok=True)
        Path(err).unlink(missing_ok=True)


def _wait(pid: int, secs: float) -> int | None:
    deadline = time.monotonic() + secs
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        if time.monotonic() > deadline:
            return None
        time.sleep(0.02)


def _group_alive(pgid: int) -> bool:
    for _ in range(50):  # children of the group may take a moment to exit after their parent
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        time.sleep(0.1)
    return True


# -- generated command lines ------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(root: Path) -> dict[str, str]:
    home = root / "home"
    home.mkdir(parents=True, exist_ok=True)
    return {
        "HOME": str(home),
        "OUTPOST_STATE_DIR": str(root / "agent"),
        "OUTPOST_HUB_STATE_DIR": str(root / "hub"),
        "OUTPOST_AGENT_STATE_DIR": str(root / "agent"),
        "OUTPOST_NAMESPACE": f"fuzz{secrets.token_hex(4)}",
        "OUTPOST_HUB_PORT": str(_free_port()),
        "OUTPOST_HUB_METRICS_PORT": str(_free_port()),
        "OUTPOST_DEVICE_ID": "fuzz-device",
        "OUTPOST_FLEET_STATE": str(root / "fleet"),
        "OUTPOST_FLEET_URL": f"http://127.0.0.1:{_free_port()}",
    }


def _files(root: Path) -> dict[str, Path]:
    """Files a user might hand over by mistake: none of them a valid manifest."""
    root.mkdir(parents=True, exist_ok=True)
    files = {
        "missing": root / "missing.json",
        "directory": root / "a-directory",
        "empty": root / "empty.json",
        "not-json": root / "notjson.json",
        "array": root / "array.json",
        "invalid-manifest": root / "invalid.json",
        "binary": root / "binary.bin",
        "huge": root / "huge.json",
        "unicode": root / "dépl☃yment.json",
        "unreadable": root / "unreadable.json",  # unreadable unless the tests run as root
    }
    files["directory"].mkdir(exist_ok=True)
    files["empty"].write_bytes(b"")
    files["not-json"].write_text('{"modulesContent": ')
    files["array"].write_text("[1, 2, 3]")
    shutil.copy(ROOT / "tests" / "corpus" / "invalid" / "several-problems.json", files["invalid-manifest"])
    files["binary"].write_bytes(bytes(range(256)) * 8)
    files["huge"].write_bytes(b"[" * 200_000)
    files["unicode"].write_text('{"x": "\u2603"}')
    files["unreadable"].write_text("{}")
    files["unreadable"].chmod(0)
    return files


TEXT = st.one_of(
    st.sampled_from(
        [
            "",
            " ",
            "x",
            "=",
            "KEY",
            "KEY=VALUE",
            "a.b=1",
            "a=1",
            "-",
            "--",
            "notahost",
            "127.0.0.1:1",
            "127.0.0.1:99999",
            "host:port",
            ":",
            "FROM /messages/* INTO $upstream",
            "FROM /messages/* WHERE INTO",
            "default-but-not",
            "\x00",
            "☃",
            "9" * 400,
            "x" * 10_000,
            "http://127.0.0.1:1/metrics",
            "not a url",
        ]
    ),
    st.text(min_size=0, max_size=30).filter(lambda s: s != "default"),
)
NUMBER = st.one_of(
    st.sampled_from(["0", "-1", "1", "1.5", "abc", "", "nan", "inf", "-inf", "1e308", "9" * 60, "0x10"]),
    st.integers(min_value=-10, max_value=10**6).map(str),
)


def _kind(param: Any) -> str:
    """What typer's own description of the parameter says its values are."""
    desc = param.type_descriptor
    if desc.is_choice:
        return "choice"
    if desc.is_path or desc.is_file:
        return "path"
    base = desc.annotation
    if desc.is_list and get_args(base):
        base = get_args(base)[0]
    if base in (int, float):
        return "number"
    return "text"


def _repeated(param: Any) -> bool:
    return bool(getattr(param, "multiple", False) or param.type_descriptor.is_list)


_ADDRESS = re.compile(r"^(?P<head>(?:[a-z][a-z0-9+.-]*://)?[\w.\-\[\]]+:)(?P<port>\d+)(?P<tail>/.*)?$")


def _address_default(param: Any) -> re.Match[str] | None:
    """A default that is a network address (``127.0.0.1:9700``, ``http://127.0.0.1:9600/metrics``)."""
    default = param.default
    return _ADDRESS.match(default) if isinstance(default, str) else None


def _fixed_network_default(param: Any) -> bool:
    """Left out, this option would use a fixed port: a port number or an address by default."""
    return "port" in (param.name or "").lower() or _address_default(param) is not None


def _value(param: Any, files: dict[str, Path]) -> st.SearchStrategy[str]:
    kind = _kind(param)
    name = (param.name or "").lower()
    if "port" in name:
        return st.one_of(st.just("free"), st.sampled_from(["0", "-1", "70000", "x", ""]))
    if (address := _address_default(param)) is not None:
        free = f"{address.group('head')}{{free}}{address.group('tail') or ''}"
        return st.one_of(st.just(free), st.just(free), TEXT)
    if kind == "path":
        paths = st.sampled_from(sorted(str(p) for p in files.values()))
        return st.one_of(paths, paths, paths, TEXT)  # mostly the bad files
    if kind == "number":
        return NUMBER
    if kind == "choice":
        return st.one_of(st.sampled_from([str(c) for c in param.type_descriptor.choices or ()] or ["x"]), TEXT)
    return TEXT


def _resolve(value: str) -> str:
    if value == "free":
        return str(_free_port())
    return value.replace("{free}", str(_free_port())) if "{free}" in value else value


@st.composite
def command_lines(draw: st.DrawFn, command: Any, files: dict[str, Path]) -> tuple[list[str], bool]:
    """(argv after the command path, whether it contains an unknown option)."""
    argv: list[str] = []
    positional: list[str] = []
    for param in command.params:
        if param.name in SKIP_PARAMS or getattr(param, "is_eager", False):
            continue
        if param.param_type_name == "argument":
            count = draw(st.integers(0, 3)) if _repeated(param) else draw(st.sampled_from([0, 1, 1, 1]))
            positional += [draw(_value(param, files)) for _ in range(count)]
            continue
        option = max(param.opts, key=len)
        ports = _fixed_network_default(param)
        if getattr(param, "is_flag", False) and not param.secondary_opts:
            if draw(st.booleans()):
                argv.append(option)
            continue
        if getattr(param, "is_flag", False):
            choice = draw(st.sampled_from([None, *param.opts, *param.secondary_opts]))
            if choice:
                argv.append(choice)
            continue
        repeat = draw(st.integers(0, 2)) if _repeated(param) else draw(st.integers(0, 1))
        if ports and repeat == 0:
            repeat = 1  # left to its default, it would use a fixed port
        for _ in range(repeat):
            argv += [option, _resolve(draw(_value(param, files)))]
    bogus = draw(st.booleans()) and draw(st.booleans())
    if bogus:
        argv.insert(0, "--bogus-option")  # first: found while parsing, before any value is converted
    if positional:
        argv += ["--", *positional] if any(p.startswith("-") for p in positional) else positional
    return argv, bogus


@pytest.mark.parametrize("entry", LEAVES, ids=_id)
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_every_command_with_generated_arguments(entry: tuple[tuple[str, ...], Any], data: st.DataObject) -> None:
    path, command = entry
    root = Path(tempfile.mkdtemp(prefix="outpost-fuzz-"))
    try:
        files = _files(root / "files")
        args, bogus = data.draw(command_lines(command, files), label="argv")
        argv = [*path, *args]
        work = root / "cwd"
        work.mkdir()
        ran = run_forked(argv, _env(root), cwd=work)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    shown = f"outpost {' '.join(repr(a) if not a or ' ' in a else a for a in argv)}"
    assert "Traceback (most recent call last)" not in ran.output, f"{shown}\n{ran.output}"
    assert "error: unexpected" not in ran.output, f"{shown}: a bug reached the boundary\n{ran.output}"
    if ran.stopped:
        assert ran.code in (0, 1, 130, None), f"{shown}: exit {ran.code} after SIGTERM\n{ran.output}"
        return
    assert ran.code in (0, 1, 2), f"{shown}: exit {ran.code}\n{ran.output}"
    if bogus:
        assert ran.code == 2, f"{shown}: an unknown option must be a usage error\n{ran.output}"
        assert "No such option" in ran.output


def test_the_tree_has_the_commands_of_the_readme():
    """The walk finds the tree (guards the walk itself, not a list of commands to test)."""
    names = {" ".join(path) for path, _ in LEAVES}
    assert {"manifest validate", "route check", "agent run", "hub run", "watch", "check"} <= names
