# Sourced by scripts/*: make sure .venv exists and holds this checkout's
# dependencies. Reinstalls only when pyproject.toml changed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"

find_python() {
    for candidate in "${PYTHON:-}" python3.13 python3.12 python3.11 python3; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null 2>&1 &&
           "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$candidate"; return 0
        fi
    done
    echo "error: Python 3.11 or newer is needed (set PYTHON=/path/to/python3.11)" >&2
    return 1
}

if [ ! -x "$PY" ]; then
    base="$(find_python)"
    echo "setting up $VENV with $("$base" --version)" >&2
    "$base" -m venv "$VENV"
    "$PY" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
fi

stamp="$VENV/.installed-$(cat "$ROOT/pyproject.toml" | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
    echo "installing whapi-outbox and its test dependencies into .venv" >&2
    "$PY" -m pip install --quiet --disable-pip-version-check -e "$ROOT[test,embedded]" >&2
    rm -f "$VENV"/.installed-*
    touch "$stamp"
fi
export PATH="$VENV/bin:$PATH"
cd "$ROOT"
