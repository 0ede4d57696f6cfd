#!/usr/bin/env bash
# Install the `webuiapi` A1111 client from PyPI into a throw-away venv for tests/server_webuiapi.rs.
#
# Usage (from the repository root):   eval "$(.ci/webuiapi.sh)"
#
# Prints the shell line that points the test at the venv's python; everything else goes to
# stderr. The venv lives in target/webuiapi-venv and is reused while it has the pinned version.
set -euo pipefail
cd "$(dirname "$0")/.."

version=0.9.17
venv="$PWD/target/webuiapi-venv"

installed() {
    "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('webuiapi') != '$version')" 2>/dev/null
}

if ! installed; then
    rm -rf "$venv"
    if ! python3 -m venv "$venv" >&2 2>/dev/null; then
        # Debian's python3 has venv in its own package.
        echo "webuiapi.sh: installing python3-venv" >&2
        apt-get update -qq >&2 && apt-get install -y -qq python3-venv >&2
        python3 -m venv "$venv" >&2
    fi
    echo "webuiapi.sh: installing webuiapi==$version (and requests, Pillow)" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "webuiapi==$version" >&2
fi

echo "export SD_WEBUIAPI_PYTHON=\"$venv/bin/python\""
