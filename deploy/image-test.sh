#!/usr/bin/env bash
# `make image-test`: build deploy/Dockerfile and check the image, on a machine with no Docker engine
# and no reachable image registry. podman and buildah build with chroot isolation; the base image is
# Debian bookworm made from Debian's packages with debootstrap, imported once and then reused.
# Containers cannot be started here (`podman run` fails), so the checks use `buildah run`.
set -euo pipefail
cd "$(dirname "$0")/.."

started=$SECONDS
work=build/image-test
base=localhost/deskledger-base:bookworm
image=localhost/deskledger:image-test
ca=/etc/ssl/certs/ca-certificates.crt

step() { printf '\n== image-test: %s (%ss)\n' "$1" "$((SECONDS - started))"; }

missing=()
for tool in podman buildah debootstrap; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if ((${#missing[@]})); then
    step "installing ${missing[*]}"
    apt-get update && apt-get install -y podman buildah debootstrap
fi

mkdir -p "$work"
# This sandbox refuses the rlimits podman sets by default; an empty list leaves them alone.
export CONTAINERS_CONF="$PWD/$work/containers.conf"
printf '[containers]\ndefault_ulimits = []\n' >"$CONTAINERS_CONF"

if podman image exists "$base"; then
    step "base image $base is cached"
else
    step "making $base with debootstrap (about a minute, once)"
    rm -rf "$work/rootfs"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$work/rootfs" http://deb.debian.org/debian
    tar -C "$work/rootfs" -c . | podman import - "$base"
    rm -rf "$work/rootfs"
fi

step "building deploy/Dockerfile on $base"
# The CA bundle is mounted, not copied: pip and uv inside the build reach the package index through
# this machine's TLS setup, and nothing of it ends up in a layer. --format docker keeps HEALTHCHECK.
podman build --isolation=chroot --network=host --format docker \
    --build-arg BASE="$base" -v "$ca:$ca:ro" \
    -f deploy/Dockerfile -t "$image" .

step "checking the image"
# Entrypoint, user and HEALTHCHECK as recorded in the image; the check's Python line is kept.
podman image inspect "$image" | python3 -c '
import json, sys
image = json.load(sys.stdin)[0]
config, test = image["Config"], image["Healthcheck"]["Test"]
assert config["Entrypoint"] == ["deskledger"], config["Entrypoint"]
assert config["User"].split(":")[0] not in ("", "0", "root"), config["User"]
assert test[:3] == ["CMD", "python", "-c"] and "/healthz" in test[3], test
print("entrypoint", config["Entrypoint"], "| user", config["User"], "| HEALTHCHECK GET /healthz")
open(sys.argv[1], "w").write(test[3])
' "$work/healthcheck.py"
healthcheck=$(cat "$work/healthcheck.py")
container=$(buildah from "$image")
trap 'buildah rm "$container" >/dev/null' EXIT
in_image() { buildah run --isolation=chroot --network=host "$container" -- "$@"; }

in_image sh -c 'test "$(id -u)" != 0 && echo "runs as uid $(id -u)"'
in_image sh -c 'test ! -e /app/.env && echo "no .env in the image"'
in_image deskledger migrate --list
# The HEALTHCHECK line itself, inside the image: it passes against a stand-in /healthz on a free
# port (read from DESKLEDGER_HTTP_PORT, as in a container) and fails once nothing listens there.
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
in_image sh -c '
    export DESKLEDGER_HTTP_PORT="$1"
    cd "$(mktemp -d)" && : >healthz
    python -m http.server "$1" --bind 127.0.0.1 >/dev/null 2>&1 &
    server=$!
    for _ in 1 2 3 4 5 6 7 8 9 10; do python -c "$2" 2>/dev/null && break; sleep 0.5; done
    python -c "$2" && echo "HEALTHCHECK passes against a 200 /healthz" || exit 1
    kill "$server" && wait "$server" 2>/dev/null
    if python -c "$2" 2>/dev/null; then echo "HEALTHCHECK passed with nothing listening"; exit 1; fi
    echo "HEALTHCHECK fails with nothing listening"
' sh "$port" "$healthcheck"
in_image deskledger --help

# `make install` as on a stock Debian: the base's python3 and python3-venv, make to run it, and
# no uv anywhere (the Makefile bootstraps one into build/uv-venv; pip into the system Python is
# refused there, PEP 668). The working tree goes in as it is, without .venv, build and .git.
step "make install on the plain base ($base: python3, python3-venv, make)"
plain=$(buildah from "$base")
trap 'buildah rm "$container" "$plain" >/dev/null' EXIT
on_plain() { buildah run --isolation=chroot --network=host -v "$ca:$ca:ro" "$plain" -- "$@"; }
on_plain sh -c 'apt-get update -qq && apt-get install -y -qq --no-install-recommends make >/dev/null'
tar --exclude=./.venv --exclude=./build --exclude=./.git --exclude=./var -c . | on_plain sh -c 'mkdir /src && tar -C /src -x'
on_plain sh -c '! command -v uv && ! python3 -c "import uv" 2>/dev/null && echo "no uv on the base"'
on_plain sh -c 'cd /src && UV_SYSTEM_CERTS=1 make install'
on_plain sh -c 'cd /src && .venv/bin/deskledger --help >/dev/null && echo "deskledger --help runs from .venv"'
on_plain sh -c '! python3 -c "import uv" 2>/dev/null && echo "the system python3 is untouched"'

step "passed: $image (FROM $base)"
