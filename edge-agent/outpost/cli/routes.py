"""``outpost route check``: parse a route and try a message against it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from outpost.cli.output import err, parse_assignments, print_json
from outpost.errors import QueryError
from outpost.lang import ModuleInputSink, RoutingMessage, parse_route

app = typer.Typer(help="Check routes written in Azure IoT Edge route syntax.", no_args_is_help=True)


def _looks_like_json(body: bytes) -> bool:
    try:
        json.loads(body)
    except ValueError:
        return False
    return True


@app.command()
def check(
    route: Annotated[str, typer.Argument(metavar="ROUTE", help="FROM <source> [WHERE <condition>] INTO <sink>")],
    message: Annotated[
        Path | None,
        typer.Option(
            "--message", metavar="FILE", help="File holding a message body to try.", exists=True, dir_okay=False
        ),
    ] = None,
    prop: Annotated[
        list[str] | None,
        typer.Option("--property", metavar="KEY=VALUE", help="Application property KEY=VALUE of the message."),
    ] = None,
    system: Annotated[
        list[str] | None,
        typer.Option(
            "--system",
            metavar="KEY=VALUE",
            help="System property KEY=VALUE, without '$' (e.g. contentType=text/plain).",
        ),
    ] = None,
    module: Annotated[
        str | None, typer.Option("--module", help="Module the message comes from (default: a leaf device).")
    ] = None,
    output: Annotated[str | None, typer.Option("--output", help="Output of --module the message was sent on.")] = None,
    device_id: Annotated[str, typer.Option("--device-id", help="Device the message comes from.")] = "device",
    json_out: Annotated[bool, typer.Option("--json", help="Print one machine-readable JSON document.")] = False,
) -> None:
    """Parse ROUTE and, with --message or --property, say whether a message matches it.

    A JSON body gets contentType application/json and contentEncoding utf-8 unless
    --system says otherwise, so $body paths work. Exit codes: 0 valid (and matching when a
    message is given), 1 the message does not match, 2 the route is invalid.
    """
    try:
        parsed = parse_route(route)
    except QueryError as exc:
        if json_out:
            print_json({"valid": False, "error": exc.reason, "line": exc.line, "column": exc.column})
        else:
            err.print(f"[red]invalid route[/] at line {exc.line}, column {exc.column}: {exc.reason}")
            err.print(exc.caret(), markup=False)
        raise typer.Exit(2) from exc
    sink = parsed.sink
    sink_text = f"module {sink.module} input {sink.input}" if isinstance(sink, ModuleInputSink) else "$upstream"
    result: dict[str, object] = {
        "valid": True,
        "source": str(parsed.source),
        "condition": parsed.condition.text if parsed.condition else None,
        "sink": sink_text,
    }
    matched = True
    if message is not None or prop or system or module:
        body = message.read_bytes() if message is not None else b""
        system_props = {"connectionDeviceId": device_id}
        if module:
            system_props["connectionModuleId"] = module
        if body and _looks_like_json(body):
            system_props |= {"contentType": "application/json", "contentEncoding": "utf-8"}
        system_props |= {k: str(v) for k, v in parse_assignments(system, "--system", typed=False, nested=False).items()}
        props = {k: str(v) for k, v in parse_assignments(prop, "--property", typed=False, nested=False).items()}
        msg = RoutingMessage(properties=props, system=system_props, body=body)
        matched = parsed.matches(msg, module_id=module, output=output)
        result["matches"] = matched
        result["destination"] = sink_text if matched else None
    if json_out:
        print_json(result)
    else:
        typer.echo(f"source:    {result['source']}")
        typer.echo(f"condition: {result['condition'] or '(none: every message from the source)'}")
        typer.echo(f"sink:      {sink_text}")
        if "matches" in result:
            typer.echo(f"matches:   {'yes -> ' + sink_text if matched else 'no'}")
    raise typer.Exit(0 if matched else 1)
