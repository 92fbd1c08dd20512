"""A typo in an environment variable stops the process with a message; it never silently changes behaviour.

Each program owns some prefixes (the worker `WORKER_` and `RECORDER_`, the orchestrator `ORCHESTRATOR_`
and `POOL_`). A variable with one of those prefixes that the program does not read is refused, naming the
closest known name: `WORKER_MAX_RECORDINGS` once made pods silently reusable.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Annotated, Any

from pydantic import AfterValidator, AliasChoices, BeforeValidator
from pydantic_settings import BaseSettings, NoDecode

from contract.security.addresses import AddressPolicy


def split_commas(value: Any) -> Any:
    """`a, b,,c` → ['a', 'b', 'c']; a list (from a CLI flag or code) passes as it is."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _valid_allowlist(value: list[str]) -> list[str]:
    AddressPolicy(value)  # raises ValueError naming a malformed entry
    return value


# A comma-separated environment variable, read as a list.
CommaList = Annotated[list[str], NoDecode, BeforeValidator(split_commas)]
# URL_ALLOWLIST, with the same meaning and checks for the orchestrator and the recorder.
UrlAllowlist = Annotated[CommaList, AfterValidator(_valid_allowlist)]
URL_ALLOWLIST_HELP = (
    "hosts (exact or *.suffix), IPs or CIDRs, each optionally with :port, that recordings may reach although"
    " not public; comma-separated"
)


class UnknownVariable(Exception):
    """One or more variables with an owned prefix are not read by this program."""


def settings_variables(*classes: type[BaseSettings]) -> set[str]:
    """The environment variable names the settings classes read (their upper-case aliases)."""
    names: set[str] = set()
    for cls in classes:
        for field in cls.model_fields.values():
            alias = field.validation_alias
            choices = alias.choices if isinstance(alias, AliasChoices) else [alias] if alias else []
            names.update(c for c in choices if isinstance(c, str) and c.isupper())
    return names


def check_environment(environ: Mapping[str, str], prefixes: Iterable[str], known: Iterable[str]) -> None:
    """Raise UnknownVariable naming every unknown variable with an owned prefix and its nearest known name."""
    known = set(known)
    prefixes = tuple(prefixes)
    problems = []
    for name in sorted(environ):
        if name.startswith(prefixes) and name not in known:
            owned = sorted(k for k in known if k.startswith(prefixes))
            near = difflib.get_close_matches(name, owned, n=1, cutoff=0.5)
            hint = f"; did you mean {near[0]}?" if near else f"; known: {', '.join(owned)}"
            problems.append(f"unknown environment variable {name}{hint}")
    if problems:
        raise UnknownVariable("; ".join(problems))
