"""The pool the settings ask for, or a message saying what to install or set."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from orchestrator.pool.factory import make_backend
from orchestrator.pool.local import LocalBackend
from tests.support.net import free_port
from tests.support.orchestrator import orchestrator_settings


def test_a_local_pool_without_the_recorder_installed_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The orchestrator installs without the recorder; a local pool would then start workers that cannot run."""
    settings = orchestrator_settings(tmp_path, port=free_port())
    assert isinstance(make_backend(settings), LocalBackend)

    real = importlib.util.find_spec

    def without_playwright(name: str, *args: Any, **kwargs: Any) -> Any:
        return None if name.split(".")[0] == "playwright" else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", without_playwright)
    named = r"playwright is not installed.*recorder-farm\[recorder\].*POOL_BACKEND=kubernetes"
    with pytest.raises(ValueError, match=named):
        make_backend(settings)


def test_a_kubernetes_pool_without_the_client_installed_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = orchestrator_settings(tmp_path, port=free_port(), pool_backend="kubernetes")
    real = importlib.util.find_spec

    def without_client(name: str, *args: Any, **kwargs: Any) -> Any:
        return None if name.split(".")[0] == "kubernetes_asyncio" else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", without_client)
    with pytest.raises(ValueError, match=r"POOL_BACKEND=kubernetes needs .*recorder-farm\[kubernetes\]"):
        make_backend(settings)
