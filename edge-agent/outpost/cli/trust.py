"""``outpost agent trust``: the operator keys this device accepts deployment content from."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from outpost.cli.agent import StateOpt, default_state_dir
from outpost.cli.output import err, out, print_json
from outpost.errors import InputError
from outpost.trust.keys import device_key, key_id, public_pem, read_public
from outpost.trust.store import TrustStore

app = typer.Typer(
    help="Trusted operator keys: with any key here, the agent refuses unsigned or tampered content.",
    no_args_is_help=True,
)

Json = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


def _store(state_dir: Path | None) -> TrustStore:
    return TrustStore.of_state_dir(state_dir or default_state_dir())


def _fail(text: str) -> typer.Exit:
    err.print(f"[red]error:[/] {escape(text)}")
    return typer.Exit(1)


@app.command()
def add(
    keys: Annotated[list[Path], typer.Argument(help="Public key files (.pub).", dir_okay=False)],
    state_dir: StateOpt = None,
) -> None:
    """Trust one or more public keys (several at once is how keys rotate)."""
    store = _store(state_dir)
    try:
        loaded = [(path, read_public(path)) for path in keys]  # all or nothing
        for path, key in loaded:
            kid = store.add(key, path.stem)
            err.print(f"trusting [bold]{kid}[/] ({escape(path.stem)})")
    except InputError as exc:
        raise _fail(str(exc)) from exc
    err.print("from now on the agent refuses deployment content not signed by a trusted key")


@app.command()
def remove(
    keys: Annotated[list[str], typer.Argument(help="Key ids or public key files.")],
    state_dir: StateOpt = None,
) -> None:
    """Stop trusting keys. Removing the last key removes the trust root (anything is accepted)."""
    store = _store(state_dir)
    try:
        ids = [key_id(read_public(Path(k))) if Path(k).is_file() else k for k in keys]
        missing = [kid for kid in ids if not store.remove(kid)]
    except InputError as exc:
        raise _fail(str(exc)) from exc
    if missing:
        raise _fail(f"not trusted: {', '.join(missing)} (see `outpost agent trust list`)")
    left = len(store.keys())
    err.print(f"removed {len(ids)} key(s); {left} trusted" + ("" if left else ": no trust root, anything is accepted"))


@app.command("list")
def list_keys(state_dir: StateOpt = None, json_out: Json = False) -> None:
    """Show trusted keys and the digest policy."""
    store = _store(state_dir)
    try:
        keys, require = store.keys(), store.require_digests
    except InputError as exc:
        raise _fail(str(exc)) from exc
    if json_out:
        rows = [{"keyId": k.key_id, "name": k.name, "addedAt": k.added_at} for k in keys]
        print_json({"keys": rows, "requireDigests": require})
        return
    table = Table("key id", "name", "added")
    for k in keys:
        table.add_row(k.key_id, escape(k.name), k.added_at)
    out.print(table)
    err.print(f"{len(keys)} trusted key(s); images named by tag only are {'refused' if require else 'a warning'}")


@app.command()
def policy(
    require_digests: Annotated[
        bool, typer.Option("--require-digests/--allow-tags", help="Refuse images not pinned by digest.")
    ],
    state_dir: StateOpt = None,
) -> None:
    """Set whether content naming an image by tag only is refused (default: a warning)."""
    try:
        _store(state_dir).set_require_digests(require_digests)
    except InputError as exc:
        raise _fail(str(exc)) from exc
    err.print("images must be pinned by digest" if require_digests else "tag-only images are accepted with a warning")


@app.command("device-key")
def device_key_cmd(
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write the public key here [default: print it].")
    ] = None,
    state_dir: StateOpt = None,
) -> None:
    """This device's own public key (made on first use), which signs what it sends home.

    Register it at the fleet (`outpost device signing-key DEVICE device.pub`) so that the fleet
    accepts the reported properties of this device's `bundle export-upstream` files.
    """
    try:
        public = device_key(state_dir or default_state_dir()).public_key()
    except (InputError, OSError) as exc:
        raise _fail(str(exc)) from exc
    pem = public_pem(public)
    if output is None:
        typer.echo(pem.decode(), nl=False)
    else:
        output.write_bytes(pem)
        err.print(f"wrote [bold]{escape(str(output))}[/]")
    err.print(f"device key {key_id(public)}")
