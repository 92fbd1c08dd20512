"""Shared fixtures live in tests/support, one module per concern."""

pytest_plugins = [
    "tests.support.leaks",
    "tests.support.media",
    "tests.support.s3",
    "tests.support.farm",
    "tests.support.kube_apiserver",
    "tests.support.orchestrator",
]
