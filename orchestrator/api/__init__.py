"""The HTTP API (aiohttp): public recording routes, the worker protocol routes and operations routes."""

from orchestrator.api.app import create_api
from orchestrator.api.context import ApiContext

__all__ = ["ApiContext", "create_api"]
