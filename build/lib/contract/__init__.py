"""The contract between the recorder and the orchestrator: what both sides import, and nothing heavier.

- `contract.spec`: what to record, validated once for the CLI, the worker and the API.
- `contract.protocol`: the worker wire messages (lease, heartbeat, report, progress).
- `contract.errors`: the stable error codes.
- `contract.security`: URL canonicalisation and the address table both the API and the egress guard apply.
- `contract.envcheck`, `contract.logs`: the settings checks and the one JSON log stream every process uses.

Its dependencies are pydantic, pydantic-settings, structlog and ada-url: no browser, no media, no cloud SDK.
"""

__version__ = "0.1.0"
