"""Every command shown in README.md and docs/*.md runs as written, so the docs cannot drift from the CLI.

What is extracted:

- in ```sh / ```bash / ```shell blocks, every line (with ``\\`` continuations) that starts with
  ``outpost`` or ``scripts/``; a ``# comment`` is dropped;
- in ```console blocks, every ``$ outpost ...`` / ``$ scripts/...`` line, and the lines after it up to
  the next ``$`` are output the command must print (each line verbatim, on stdout or stderr);
- inline code spans that start with ``outpost `` (prose like "run `outpost hub run`"): the command
  path and every ``--option`` must exist in the CLI (placeholders like MODULE are not run).

Each block command runs from the top of the clone with ``outpost`` on PATH (this venv's) in a fresh
state dir (agent, hub, demo, launcher dirs and HOME under tmp), and fails on "command not found", a
traceback, or a usage error (exit 2). Exit 1 is allowed: in a fresh state dir a command that needs a
deployment says so and exits 1.

Prerequisites: a block preceded by ``<!-- docs-test: needs=NAME -->`` (or a command matched by
``NEEDS_BY_COMMAND``) needs something a fresh state dir does not have. ``PREREQUISITES`` says what
each NAME means; a NAME it does not list fails the test, so a new section cannot opt out silently.
Such a command is not run here: its command line is parsed against the CLI (options exist, values
convert, named files exist) or, for a script, the script must exist and be executable, and the test
is then reported as skipped with the prerequisite, so ``pytest -ra`` lists every command not run.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer

from outpost.cli import app

ROOT = Path(__file__).resolve().parents[3]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TIMEOUT_SECS = 60

#: What each ``needs=NAME`` means. None of these is provided by this unit test; the test that does
#: exercise them is named, so nothing is left unrun without a reason.
PREREQUISITES: dict[str, str] = {
    "demo": "starts the whole reference device (agent, hub, four modules) until stopped; "
    "tests/integration/test_reference_app.py runs it",
    "device": "a device with the reference deployment applied and its hub running (scripts/demo); "
    "tests/integration/test_agent_cli.py, test_hub.py and test_watch.py run these commands",
    "gate": "the whole test gate (this test is part of it)",
    "bench": "the benchmarks (scripts/bench), minutes each",
    "network": "installs packages from PyPI into .venv",
    "docker": "a Docker engine",
    "fleet": "a running fleet service",
    "registry": "Docker, QEMU, the base images and a local registry (scripts/local-registry); "
    "tests/integration/test_build.py runs these commands",
    "kafka": "a local Apache Kafka (scripts/services/kafka.sh start); tests/integration/test_bundle_upstream.py "
    "and test_bundle_roundtrip.py run these commands",
}

#: Commands that need a prerequisite wherever they are shown (docs this test does not own).
NEEDS_BY_COMMAND: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^scripts/bench\b"), "bench"),
    (re.compile(r"^scripts/test\b"), "gate"),
    (re.compile(r"^scripts/setup\b"), "network"),
    (re.compile(r"^scripts/build-images\b"), "docker"),
    (re.compile(r"^scripts/demo(?!\s+(--help|-h|--stop)\s*$)"), "demo"),
]

_FENCE = re.compile(r"^```(\w*)\s*$")
_MARKER = re.compile(r"<!--\s*docs-test:\s*needs=([\w,-]+)\s*-->")
_INLINE = re.compile(r"(?<!`)`((?:outpost|scripts/[\w./-]+)(?: [^`]*)?)`(?!`)")


@dataclass(frozen=True)
class DocCommand:
    source: str  # file:line
    text: str
    needs: tuple[str, ...] = ()
    output: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"{self.source}: {self.text}"


def _is_command(line: str) -> bool:
    return line.startswith(("outpost ", "scripts/")) or line == "outpost"


def _strip_comment(line: str) -> str:
    """Drop a trailing ``# comment`` outside quotes (shlex knows where quotes are)."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=False)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        words = list(lexer)
    except ValueError:
        return line
    if not words:
        return ""
    # keep the original quoting: cut at the comment's '#', found after the last word's end
    index = line.find(" #")
    while index != -1:
        try:
            if shlex.split(line[:index]) == words:
                return line[:index].rstrip()
        except ValueError:
            pass
        index = line.find(" #", index + 1)
    return line.rstrip()


def _block_needs(text: str) -> tuple[str, ...]:
    found = _MARKER.search(text)
    return tuple(found.group(1).split(",")) if found else ()


def extract(path: Path, root: Path = ROOT) -> tuple[list[DocCommand], list[DocCommand]]:
    """(block commands, inline command spans) of one Markdown file."""
    lines = path.read_text(encoding="utf-8").splitlines()
    rel = path.relative_to(root)
    blocks: list[DocCommand] = []
    inline: list[DocCommand] = []
    i = 0
    while i < len(lines):
        fence = _FENCE.match(lines[i])
        if not fence:
            inline += [DocCommand(f"{rel}:{i + 1}", m.group(1)) for m in _INLINE.finditer(lines[i])]
            i += 1
            continue
        lang = fence.group(1)
        previous = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        needs = _block_needs(previous)
        i += 1
        body: list[tuple[int, str]] = []
        while i < len(lines) and not lines[i].startswith("```"):
            body.append((i + 1, lines[i]))
            i += 1
        i += 1
        if lang in {"sh", "bash", "shell"}:
            blocks += _shell_commands(body, rel, needs)
        elif lang == "console":
            blocks += _console_commands(body, rel, needs)
    return blocks, inline


def _shell_commands(body: list[tuple[int, str]], rel: Path, needs: tuple[str, ...]) -> list[DocCommand]:
    found = []
    j = 0
    while j < len(body):
        number, line = body[j]
        text = line.strip()
        while text.endswith("\\") and j + 1 < len(body):
            j += 1
            text = text[:-1].rstrip() + " " + body[j][1].strip()
        j += 1
        text = _strip_comment(text)
        if _is_command(text):
            found.append(DocCommand(f"{rel}:{number}", text, needs))
    return found


def _console_commands(body: list[tuple[int, str]], rel: Path, needs: tuple[str, ...]) -> list[DocCommand]:
    found: list[DocCommand] = []
    for number, line in body:
        if line.startswith("$ "):
            text = _strip_comment(line[2:].strip())
            if _is_command(text):
                found.append(DocCommand(f"{rel}:{number}", text, needs))
        elif found and line.strip():
            last = found[-1]
            found[-1] = DocCommand(last.source, last.text, last.needs, (*last.output, line))
    return found


def _all() -> tuple[list[DocCommand], list[DocCommand]]:
    blocks: list[DocCommand] = []
    inline: list[DocCommand] = []
    for path in DOCS:
        b, i = extract(path)
        blocks += b
        inline += i
    return blocks, inline


BLOCKS, INLINE = _all()


def _needs(command: DocCommand) -> tuple[str, ...]:
    extra = [need for pattern, need in NEEDS_BY_COMMAND if pattern.search(command.text)]
    return tuple(dict.fromkeys([*command.needs, *extra]))


def _bin_dir() -> Path:
    return Path(sys.executable).parent


def _env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    keep = {k: v for k, v in os.environ.items() if not k.startswith("OUTPOST_")}
    return {
        **keep,
        "PATH": f"{_bin_dir()}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(home),
        "OUTPOST_STATE_DIR": str(tmp_path / "agent"),
        "OUTPOST_HUB_STATE_DIR": str(tmp_path / "hub"),
        "OUTPOST_DEMO_DIR": str(tmp_path / "demo"),
        "OUTPOST_BIN_DIR": str(tmp_path / "bin"),
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def _words(text: str) -> list[str]:
    return shlex.split(text)


def parse_only(args: list[str]) -> None:
    """Parse ``outpost ARGS`` against the command tree without running it (typer's usage errors raise)."""
    command = typer.main.get_command(app)
    ctx = command.make_context("outpost", list(args))
    while hasattr(command, "resolve_command"):
        rest = [*ctx._protected_args, *ctx.args]
        if not rest:
            return
        name, command, rest = command.resolve_command(ctx, rest)  # type: ignore[union-attr]
        assert command is not None
        assert name is not None
        ctx = command.make_context(name, rest, parent=ctx)


def _resolve(words: list[str]) -> tuple[object, list[str]]:
    """The command a word list names, and the words after the command path."""
    command: object = typer.main.get_command(app)
    rest = list(words)
    while hasattr(command, "commands") and rest and not rest[0].startswith("-"):
        sub = command.commands.get(rest[0])  # type: ignore[attr-defined]
        assert sub is not None, f"no command {rest[0]!r} (commands: {', '.join(command.commands)})"  # type: ignore[attr-defined]
        command, rest = sub, rest[1:]
    return command, rest


def _options(command: object) -> set[str]:
    return {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}  # type: ignore[attr-defined]


@pytest.mark.parametrize("command", BLOCKS, ids=str)
def test_doc_command_runs_as_written(command: DocCommand, tmp_path: Path) -> None:
    needs = _needs(command)
    unknown = [need for need in needs if need not in PREREQUISITES]
    assert not unknown, f"{command}: needs={','.join(unknown)} is not in PREREQUISITES: say what it means there"
    words = _words(command.text)
    if needs:
        if words[0] == "outpost":
            parse_only(words[1:])
        else:
            script = ROOT / words[0]
            assert script.is_file(), f"{command}: {words[0]} does not exist"
            assert os.access(script, os.X_OK), f"{command}: {words[0]} is not executable"
        reasons = "; ".join(f"needs={need}: {PREREQUISITES[need]}" for need in needs)
        pytest.skip(f"{command}: not run here ({reasons}); its command line was checked")
    done = subprocess.run(
        ["/bin/sh", "-c", command.text],
        cwd=ROOT,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_SECS,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode not in (126, 127), f"{command}: not found or not executable:\n{output}"
    assert "command not found" not in output, f"{command}:\n{output}"
    assert "Traceback (most recent call last)" not in output, f"{command}:\n{output}"
    assert done.returncode != 2, f"{command}: usage error:\n{output}"
    assert done.returncode in (0, 1), f"{command}: exit {done.returncode}:\n{output}"
    got = set(output.splitlines())
    missing = [line for line in command.output if line not in got]
    assert not missing, (
        f"{command}: the docs show output it does not print:\n" + "\n".join(missing) + f"\n---\n{output}"
    )


@pytest.mark.parametrize("command", INLINE, ids=str)
def test_inline_command_names_exist(command: DocCommand) -> None:
    try:
        words = _words(command.text)
    except ValueError:
        words = command.text.split()
    if words[0] != "outpost":
        script = ROOT / words[0]
        assert script.is_file(), f"{command}: {words[0]} does not exist"
        return
    target, rest = _resolve(words[1:])
    known = _options(target)
    for word in rest:
        option = word.split("=", 1)[0]
        if option.startswith("--"):
            assert option in known, f"{command}: no option {option} (options: {', '.join(sorted(known))})"


def test_the_docs_show_commands():
    """The extraction itself works: the README's main commands are among them."""
    texts = [c.text for c in BLOCKS]
    assert "scripts/demo" in texts
    assert "scripts/test" in texts
    assert any(t.startswith("outpost manifest validate") for t in texts)
    assert any(c.output for c in BLOCKS), "the README's validation sample is a checked console block"
    assert any(t.startswith("outpost hub run") for t in [c.text for c in INLINE])


def test_extraction_of_markers_continuations_and_comments(tmp_path: Path) -> None:
    doc = tmp_path / "x.md"
    doc.write_text(
        "Run `outpost list --json` to see.\n\n"
        "<!-- docs-test: needs=device -->\n"
        "```sh\n"
        "outpost route check 'FROM /messages/* INTO $upstream' \\\n"
        "    --json   # a comment with 'quotes'\n"
        "echo not a command\n"
        "```\n\n"
        "```console\n$ outpost --version\noutpost 0.1.0\n```\n"
    )
    blocks, inline = extract(doc, root=tmp_path)
    assert [(c.text, c.needs) for c in blocks] == [
        ("outpost route check 'FROM /messages/* INTO $upstream' --json", ("device",)),
        ("outpost --version", ()),
    ]
    assert blocks[1].output == ("outpost 0.1.0",)
    assert [c.text for c in inline] == ["outpost list --json"]


@pytest.mark.parametrize(
    "args", [["agent", "run", "--manfest", "m.json"], ["agent", "apply", "no-such-file.json"], ["nosuch"]]
)
def test_parse_only_catches_drift(args: list[str]) -> None:
    """What a command with an unmet prerequisite is still checked for: options, files, command names."""
    with pytest.raises(Exception, match=r"No such option|does not exist|No such command"):
        parse_only(args)
