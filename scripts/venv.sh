# Sourced by start.sh and test.sh: creates or updates .venv and installs the project with its test extras.
# Re-installs only when pyproject.toml changed, so a second run starts at once.
VENV="${VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
stamp="$VENV/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e '.[test]'
  rm -f "$VENV"/.installed-*
  touch "$stamp"
fi
# shellcheck disable=SC1091
source "$VENV/bin/activate"
