"""`orchestrator serve`: every setting is an environment variable (see `config.py`) and a flag here."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Mapping, Sequence

from pydantic import ValidationError

from contract.envcheck import UnknownVariable, check_environment, settings_variables
from contract.logs import configure_logging
from orchestrator.config import OrchestratorSettings

# The prefixes the orchestrator owns: a variable with one of them that nothing reads is a typo.
OWNED_PREFIXES = ("ORCHESTRATOR_", "POOL_")
# Read by the recorder worker, not here, but commonly set in the same environment (the local pool
# hands this environment to its workers).
WORKER_NAMES = frozenset({"ORCHESTRATOR_URL"})


def known_variables() -> set[str]:
    from orchestrator.pool.kubernetes_config import KubernetesSettings

    return settings_variables(OrchestratorSettings, KubernetesSettings) | WORKER_NAMES


def check_variables(environ: Mapping[str, str]) -> str | None:
    """The problem with the environment's owned variables, or None."""
    try:
        check_environment(environ, OWNED_PREFIXES, known_variables())
    except UnknownVariable as exc:
        return str(exc)
    return None


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _env_name(name: str) -> str:
    alias = OrchestratorSettings.model_fields[name].validation_alias
    choices = getattr(alias, "choices", None)
    return str(choices[0]) if choices else name.upper()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orchestrator", description="The recorder farm's orchestrator.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the API, the scheduler and the warm pool")
    for name, field in OrchestratorSettings.model_fields.items():
        help_text = f"{field.description + '; ' if field.description else ''}env {_env_name(name)}"
        serve.add_argument(_flag(name), dest=name, default=None, metavar="VALUE", help=help_text)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    problem = check_variables(os.environ)
    if problem:
        print(f"orchestrator: {problem}", file=sys.stderr)
        return 2
    overrides = {k: v for k, v in vars(args).items() if k != "command" and v is not None}
    try:
        settings = OrchestratorSettings(**overrides)
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            name = str(error["loc"][0]) if error["loc"] else ""
            where = f"{_env_name(name)} ({_flag(name)})" if name in OrchestratorSettings.model_fields else "settings"
            print(f"orchestrator: {where}: {error['msg'].removeprefix('Value error, ')}", file=sys.stderr)
        return 2
    if settings.view_secret_problem:
        print(f"orchestrator: {settings.view_secret_problem}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    from orchestrator.api.server import serve  # after logging is configured
    from orchestrator.pool.factory import pool_components, with_pool_defaults

    settings = with_pool_defaults(settings)
    try:
        pool = pool_components(settings)
    except ValueError as exc:
        print(f"orchestrator: {exc}", file=sys.stderr)
        return 2
    asyncio.run(serve(settings, **pool))
    return 0


if __name__ == "__main__":
    sys.exit(main())
