"""``outpost keys``: make operator key pairs and sign deployment manifests with them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from outpost.cli.output import err, print_json
from outpost.errors import InputError, ManifestError
from outpost.manifest import load_manifest, parse_json
from outpost.trust.content import sign_document
from outpost.trust.keys import generate as generate_pair
from outpost.trust.keys import key_id, read_private, read_public

app = typer.Typer(help="Operator signing keys (Ed25519): generate pairs, sign manifests.", no_args_is_help=True)

Json = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


def _fail(text: str, code: int = 1) -> typer.Exit:
    err.print(f"[red]error:[/] {escape(text)}")
    return typer.Exit(code)


@app.command()
def generate(
    output: Annotated[Path, typer.Option("-o", "--output", help="Path prefix: writes PREFIX.key and PREFIX.pub.")],
    force: Annotated[bool, typer.Option("--force", help="Replace an existing pair.")] = False,
    json_out: Json = False,
) -> None:
    """Make an Ed25519 key pair: PREFIX.key (private, mode 0600, never printed) and PREFIX.pub.

    Give PREFIX.pub to devices (`outpost agent trust add PREFIX.pub`); keep PREFIX.key offline
    and sign with it (`outpost keys sign`, `outpost bundle create --sign-key`).
    """
    try:
        pair = generate_pair(output, force=force)
    except (InputError, OSError) as exc:
        raise _fail(str(exc)) from exc
    if json_out:
        print_json({"keyId": pair.key_id, "private": str(pair.private), "public": str(pair.public)})
        return
    private, public = escape(str(pair.private)), escape(str(pair.public))
    err.print(f"key [bold]{pair.key_id}[/]: private {private} (mode 0600), public {public}")
    err.print(f"next: `outpost agent trust add {escape(str(pair.public))}` on each device")


@app.command("id")
def show_id(key: Annotated[Path, typer.Argument(help="A .pub or .key file.", dir_okay=False)]) -> None:
    """Print a key's id (the name devices and signatures use for it)."""
    try:
        public = read_public(key) if key.suffix != ".key" else read_private(key).public_key()
    except InputError as exc:
        raise _fail(str(exc)) from exc
    typer.echo(key_id(public))


@app.command()
def sign(
    manifest: Annotated[Path, typer.Argument(help="Deployment manifest (JSON).", exists=True, dir_okay=False)],
    sign_key: Annotated[Path, typer.Option("--sign-key", "-k", help="Private key (PREFIX.key).", dir_okay=False)],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Signed manifest [default: stdout].")] = None,
) -> None:
    """Sign a manifest: its RFC 8785 canonical form, signature stored at /outpost/signatures.

    The manifest is validated first; an invalid one is not signed. Signing again with another
    key adds a second signature (key rotation); with the same key replaces it.
    """
    try:
        document = parse_json(manifest.read_bytes())
        if not isinstance(document, dict):
            raise _fail(f"{manifest}: /: a manifest is a JSON object")
        load_manifest(document)
        signed = sign_document(document, read_private(sign_key))
    except ManifestError as exc:
        for p in exc.problems:
            typer.echo(f"{manifest}: {p.pointer or '/'}: {p.message}", err=True)
        raise typer.Exit(1) from exc
    except InputError as exc:
        raise _fail(str(exc)) from exc
    text = json.dumps(signed, indent=2, ensure_ascii=False) + "\n"
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        err.print(f"signed {escape(str(manifest))} -> {escape(str(output))}")
