"""The package boundaries hold: the contract is light, and neither half imports the other."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Every module of a package, imported in a fresh interpreter; what else ended up loaded is the answer.
PROGRAM = """
import json, pkgutil, importlib, sys
package = importlib.import_module(sys.argv[1])
for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
    importlib.import_module(info.name)
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
"""


def loaded_by(package: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM, package], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return set(json.loads(done.stdout))


@pytest.mark.parametrize(
    ("package", "must_not_load"),
    [
        # The contract carries no browser, media, cloud or HTTP stack: a caller of the API could use it alone.
        ("contract", {"recorder", "orchestrator", "playwright", "numpy", "boto3", "aiohttp", "pulsectl", "ffmpeg"}),
        # The orchestrator knows workers only through the contract (the local pool starts them as processes).
        ("orchestrator", {"recorder", "playwright", "pulsectl", "ffmpeg"}),
        # The recorder knows nothing of the orchestrator's store, API or pool.
        ("recorder", {"orchestrator", "aiosqlite", "kubernetes_asyncio"}),
    ],
)
def test_a_package_loads_nothing_across_its_boundary(package: str, must_not_load: set[str]) -> None:
    loaded = loaded_by(package)
    assert package in loaded
    assert not loaded & must_not_load, f"importing {package} loads {sorted(loaded & must_not_load)}"


def test_the_version_lives_in_one_place() -> None:
    import contract
    import orchestrator
    import recorder

    assert recorder.__version__ is contract.__version__ and orchestrator.__version__ is contract.__version__
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject and 'version = {attr = "contract.__version__"}' in pyproject
