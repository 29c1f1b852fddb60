"""The `voxline` command line: chat with an agent, inspect agents, check the local models."""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from voxline.agents.default import default_agent
from voxline.agents.runtime import Agent
from voxline.agents.spec import agent_json_schema, load_agent_spec
from voxline.logging import configure_logging
from voxline.providers.llm.base import ConfigurationError, LLMError
from voxline.settings import Settings, load_settings

app = typer.Typer(
    help="voxline: real-time voice AI agents on the phone, SMS, the browser and the terminal.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
agents_app = typer.Typer(help="Inspect and validate agent definitions.", no_args_is_help=True)
app.add_typer(agents_app, name="agents")

AgentOpt = Annotated[
    Path | None, typer.Option("--agent", "-a", help="Agent JSON file (default: the built-in one).")
]
LLMOpt = Annotated[str | None, typer.Option("--llm", help="LLM spec, e.g. openai:gpt-4.1-mini.")]
ImportOpt = Annotated[
    list[str] | None,
    typer.Option("--import", "-i", help="Python module(s) to import first (they register tools)."),
]


def fail(message: str) -> None:
    """Print one actionable line and exit non-zero: configuration errors are not tracebacks."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def _settings(**flags: Any) -> Settings:
    settings = load_settings(**flags)
    configure_logging(settings.log_level, settings.log_json, redact_pii=settings.redact_pii_in_logs)
    return settings


def build_agent(path: Path | None, llm: str | None, imports: list[str] | None) -> Agent:
    for module in imports or []:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            fail(f"cannot import {module!r}: {exc}")
    if path is None:
        agent = default_agent()
        return (
            Agent(agent.spec.model_copy(update={"llm": llm}), tools=agent.tools()) if llm else agent
        )
    spec = load_agent_spec(path)
    return Agent(spec.model_copy(update={"llm": llm}) if llm else spec)


@app.command()
def chat(
    agent: AgentOpt = None,
    llm: LLMOpt = None,
    session: Annotated[str | None, typer.Option(help="Resume this conversation id.")] = None,
    database: Annotated[str | None, typer.Option("--db", help="Database URL.")] = None,
    imports: ImportOpt = None,
) -> None:
    """Chat with an agent in the terminal; replies stream, tools and approvals show inline."""
    from voxline.chat import run_chat

    settings = _settings(database_url=database, log_level="WARNING")
    try:
        asyncio.run(run_chat(build_agent(agent, llm, imports), settings, session))
    except (ConfigurationError, LLMError) as exc:
        fail(str(exc))
    except (KeyboardInterrupt, EOFError):
        typer.echo()


@agents_app.command("schema")
def agents_schema() -> None:
    """Print the JSON Schema of an agent definition."""
    typer.echo(json.dumps(agent_json_schema(), indent=2))


@agents_app.command("validate")
def agents_validate(path: Path) -> None:
    """Check an agent JSON file and say what is wrong, field by field."""
    try:
        spec = load_agent_spec(path)
    except ConfigurationError as exc:
        fail(str(exc))
    typer.echo(f"ok: agent {spec.name!r}")


@app.command()
def doctor(
    load: Annotated[bool, typer.Option(help="Load each local model to time it.")] = True,
) -> None:
    """Report, for each role (LLM, STT, TTS, VAD), the provider, its model and its load time."""
    from voxline.doctor import collect_report, render

    typer.echo(render(collect_report(_settings(log_level="WARNING"), load=load)))


@app.command()
def version() -> None:
    """Print the installed version."""
    from importlib.metadata import version as dist_version

    typer.echo(dist_version("voxline"))


@app.command()
def serve(
    agents: Annotated[
        list[Path] | None,
        typer.Option("--agents", help="Agent JSON file or directory of them (repeatable)."),
    ] = None,
    default: Annotated[
        str | None, typer.Option("--default-agent", help="Agent behind /twilio/voice and /sms.")
    ] = None,
    host: Annotated[str | None, typer.Option(help="Interface to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    public_url: Annotated[
        str | None, typer.Option("--public-url", help="The server's URL as Twilio sees it.")
    ] = None,
    grace: Annotated[
        float | None,
        typer.Option("--grace", help="Seconds calls in progress may finish on shutdown."),
    ] = None,
    database: Annotated[str | None, typer.Option("--db", help="Database URL.")] = None,
    imports: ImportOpt = None,
) -> None:
    """Serve agents on Twilio voice (ConversationRelay) and SMS, with the approvals API."""
    from voxline.server import ServerConfig, build_server, create_app, load_agents

    settings = _settings(
        server_host=host,
        server_port=port,
        public_url=public_url,
        shutdown_grace_period=grace,
        database_url=database,
    )
    builtin = build_agent(None, None, imports)  # the default agent, after the tool imports
    try:
        hosted: list[Any] = load_agents(agents or [])
        if builtin.name not in {a.name for a in hosted}:
            hosted.append(builtin)
        app_ = create_app(ServerConfig(agents=hosted, settings=settings, default_agent=default))
    except ConfigurationError as exc:
        fail(str(exc))
    if not settings.twilio_validate_signatures:
        typer.secho(
            "WARNING: Twilio signature checks are OFF. Anyone who finds this server can call "
            "your agents and run their tools. Local development only!",
            fg=typer.colors.RED,
            bold=True,
            err=True,
        )
    server = build_server(app_, host=settings.server_host, port=settings.server_port)
    server.run()


@app.command()
def cleanup(
    older_than: Annotated[
        str, typer.Option("--older-than", help="Delete history idle for longer, e.g. 7d, 12h.")
    ],
    database: Annotated[str | None, typer.Option("--db", help="Database URL.")] = None,
) -> None:
    """Delete conversations (turns and approvals too) with no activity for a while."""
    from voxline.server.retention import expire_history, parse_age

    try:
        age = parse_age(older_than)
    except ValueError as exc:
        fail(str(exc))
    settings = _settings(database_url=database)
    deleted = asyncio.run(expire_history(settings, age))
    typer.echo(f"deleted {deleted} conversation(s) idle for more than {older_than}")


def main() -> None:
    try:
        app()
    except ConfigurationError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
