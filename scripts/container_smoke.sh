#!/usr/bin/env bash
# `make container-smoke`: build the real Dockerfile with podman on a locally made Debian base image, then
# check the container seeds its registry volume with the shipped pretrained model and serves it: /readyz,
# the image's HEALTHCHECK, a /generate answer, a short training run in the same image (compose's `trainer`)
# that the running service follows, a rollback with `python -m model promote`, and a non-root user.
#
# No Docker engine or registry is needed: the base is `debootstrap` (Debian bookworm + python3.11 + venv)
# imported with `podman import`; podman runs with runc, host networking and explicit ulimits (the VM's
# open-files limit is below podman's default). The base also carries this machine's extra CA certificates
# and a pip.conf (`cert`, and `find-links=/wheels` where /opt/wheels holds a local torch wheel, mounted
# during the build), so pip inside the build works behind the same TLS proxy as the host.
#
# Settings (environment): SMOKE_WORK (cache of the debootstrapped root, default /var/tmp/cvae-container-smoke),
# SMOKE_REBUILD_BASE=1 (make the base again), SMOKE_KEEP=1 (leave the container and volume for inspection).
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
WORK="${SMOKE_WORK:-/var/tmp/cvae-container-smoke}"
MIRROR="${SMOKE_MIRROR:-http://deb.debian.org/debian}"
BASE="localhost/cvae-smoke-base:bookworm"
IMAGE="localhost/cvae-digits:smoke"
NAME="cvae-smoke-api-$$"
VOLUME="cvae-smoke-registry-$$"
WHEELS="${SMOKE_WHEELS:-/opt/wheels}"
PODMAN=(podman --runtime runc)
LIMITS=(--ulimit nofile=16384:16384 --ulimit nproc=32768:32768)
# No systemd here to time podman's periodic healthchecks: the check is run once by hand below instead.
RUN=("${PODMAN[@]}" run --network host "${LIMITS[@]}" --health-interval=disable)

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

ensure_tools() {
  local missing=()
  for tool in podman buildah debootstrap runc; do command -v "$tool" >/dev/null || missing+=("$tool"); done
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -q update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -q install -y \
      --no-install-recommends podman buildah debootstrap runc uidmap
  fi
}

make_base() {
  if [ "${SMOKE_REBUILD_BASE:-0}" != 1 ] && "${PODMAN[@]}" image exists "$BASE"; then
    say "base image $BASE exists (SMOKE_REBUILD_BASE=1 makes it again)"; return
  fi
  local root="$WORK/rootfs"
  if [ ! -x "$root/usr/bin/python3" ]; then
    say "debootstrap: Debian bookworm (minbase) + python3 + python3-venv into $root (a few minutes)"
    rm -rf "$root" && mkdir -p "$WORK"
    as_root debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
      bookworm "$root" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 || { tail -20 "$WORK/debootstrap.log"; exit 1; }
  fi
  say "trusting this machine's extra CA certificates inside the base; pip.conf for the build"
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    as_root cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
    as_root chroot "$root" update-ca-certificates >/dev/null
  fi
  printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\nfind-links = /wheels\n' |
    as_root tee "$root/etc/pip.conf" >/dev/null
  as_root rm -rf "$root/var/cache/apt/archives/"*.deb "$root/var/lib/apt/lists/"*
  say "podman import -> $BASE"
  as_root tar -C "$root" -c . | "${PODMAN[@]}" import --change 'CMD ["/bin/bash"]' - "$BASE" >/dev/null
}

build_image() {
  local mounts=()
  [ -d "$WHEELS" ] && mounts=(--volume "$WHEELS:/wheels:ro")
  say "podman build --format docker --build-arg BASE_IMAGE=$BASE -t $IMAGE $REPO"
  "${PODMAN[@]}" build --format docker --network host "${LIMITS[@]}" "${mounts[@]}" \
    --build-arg BASE_IMAGE="$BASE" --build-arg TORCH_INDEX_URL=https://pypi.org/simple \
    --tag "$IMAGE" --file "$REPO/Dockerfile" "$REPO"
  say "image size: $("${PODMAN[@]}" image inspect "$IMAGE" --format '{{.Size}}' | awk '{printf "%.0f MB", $1/1e6}')"
}

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

cleanup() {
  if [ "${SMOKE_KEEP:-0}" = 1 ]; then echo "kept container $NAME and volume $VOLUME"; return; fi
  "${PODMAN[@]}" rm -f "$NAME" >/dev/null 2>&1 || true
  "${PODMAN[@]}" volume rm -f "$VOLUME" >/dev/null 2>&1 || true
}

run_and_check() {
  local port url
  port="$(free_port)"
  url="http://127.0.0.1:$port"
  trap cleanup EXIT
  say "seed: python -m model.shipped (the shipped pretrained model) into volume $VOLUME"
  "${RUN[@]}" --rm -v "$VOLUME:/data/registry" "$IMAGE" python -m model.shipped --registry /data/registry
  say "seed again: must find the version and leave the registry alone"
  local again
  again="$("${RUN[@]}" --rm -v "$VOLUME:/data/registry" "$IMAGE" \
    python -m model.shipped --registry /data/registry)"
  echo "$again"
  grep -q "already has versions" <<<"$again"
  say "api: the image's default command on port $port"
  "${RUN[@]}" -d --name "$NAME" -e CVAE_PORT="$port" -v "$VOLUME:/data/registry" "$IMAGE" >/dev/null
  for _ in $(seq 120); do
    if python3 -c "import urllib.request, sys; urllib.request.urlopen('$url/readyz', timeout=2)" 2>/dev/null; then
      break
    fi
    sleep 1
  done
  python3 -c "import urllib.request; print('/readyz', urllib.request.urlopen('$url/readyz', timeout=5).status)" ||
    { "${PODMAN[@]}" logs "$NAME" | tail -30; exit 1; }
  say "HEALTHCHECK (podman healthcheck run): $("${PODMAN[@]}" healthcheck run "$NAME" && echo healthy)"
  say "POST /generate {\"text\": \"42\", \"samples\": 2}"
  python3 - "$url" <<'EOF'
import json, struct, sys, urllib.request
request = urllib.request.Request(sys.argv[1] + "/generate", data=json.dumps({"text": "42", "samples": 2}).encode(),
                                 headers={"Content-Type": "application/json"})
with urllib.request.urlopen(request, timeout=30) as answer:
    body = answer.read()
    width, height = struct.unpack(">II", body[16:24])
    assert answer.status == 200 and body[:8] == b"\x89PNG\r\n\x1a\n", answer.status
    assert (width, height) == (56, 56), (width, height)
    print(f"200 image/png {width}x{height}, model {answer.headers.get('X-Model-Version')}, "
          f"{answer.headers.get('X-Inference-Ms')} ms")
EOF
  say "trainer: the compose profile's command (python -m training, here 2 epochs, no evaluation) into the volume"
  "${RUN[@]}" --rm -v "$VOLUME:/data/registry" "$IMAGE" \
    python -m training --no-progress --epochs 2 --no-eval 2>&1 | tail -3
  say "the running api follows the new active version (registry poll) without a restart"
  serves "$url" v0002
  say "python -m model list, then promote v0001 (a rollback, as \`docker compose run --rm seed python -m model ...\`)"
  "${RUN[@]}" --rm -v "$VOLUME:/data/registry" "$IMAGE" python -m model list
  "${RUN[@]}" --rm -v "$VOLUME:/data/registry" "$IMAGE" python -m model promote v0001
  serves "$url" v0001
  local uid
  uid="$("${PODMAN[@]}" exec "$NAME" id -u)"
  say "the service runs as uid $uid"
  [ "$uid" != 0 ]
  say "SIGTERM: podman stop drains and exits"
  "${PODMAN[@]}" stop --time 30 "$NAME" >/dev/null
  say "exit code $("${PODMAN[@]}" inspect "$NAME" --format '{{.State.ExitCode}}')"
}

# serves URL VERSION: /generate answers 200 from VERSION within 60 s (the registry poll follows the pointer).
serves() {
  python3 - "$1" "$2" <<'EOF'
import json, sys, time, urllib.request
deadline = time.monotonic() + 60
while True:
    request = urllib.request.Request(sys.argv[1] + "/generate", data=json.dumps({"text": "7"}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        version = answer.headers.get("X-Model-Version")
        assert answer.status == 200, answer.status
    if version == sys.argv[2]:
        print(f"200, model {version}")
        break
    assert time.monotonic() < deadline, f"still serving {version}, not {sys.argv[2]}, after 60 s"
    time.sleep(1)
EOF
}

main() {
  local started=$SECONDS
  ensure_tools
  make_base
  build_image
  run_and_check
  say "container-smoke PASSED in $((SECONDS - started)) s"
}

main "$@"
