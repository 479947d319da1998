#!/usr/bin/env bash
# Installs porchlight on a Raspberry Pi (any systemd Linux host) over ssh, or removes it.
#
#   deploy/deploy.sh install HOST [BINARY]     copy the binary, unit, docs and (first time) an
#                                              example config; enable and start the service
#   deploy/deploy.sh uninstall HOST [--purge]  stop and remove it; --purge also deletes the
#                                              config, the events and snapshots, and the user
#
# HOST is anything ssh accepts (pi@door.local). The user there needs sudo. BINARY defaults to
# the Pi Zero build, target/arm-unknown-linux-gnueabihf/release/porchlight (README.md, "On a
# Raspberry Pi", says how to build it). What runs on the host is deploy/remote.sh.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")

usage() {
  sed -n '2,11s/^# \{0,1\}//p' "$0"
}

die() {
  echo "deploy: $*" >&2
  exit 2
}

command=${1:-}
host=${2:-}
case $command in
  -h | --help)
    usage
    exit 0
    ;;
  install | uninstall) ;;
  *)
    usage >&2
    exit 2
    ;;
esac
[ -n "$host" ] || die "which host? (e.g. deploy/deploy.sh $command pi@door.local)"

# Everything goes to a private directory on the host, then remote.sh runs there under sudo.
files=("$here/remote.sh")
remote_args=()
if [ "$command" = install ]; then
  binary=${3:-$repo/target/arm-unknown-linux-gnueabihf/release/porchlight}
  [ -f "$binary" ] || die "no binary at $binary: build it first (README.md, \"On a Raspberry Pi\")"
  files+=("$binary" "$repo/systemd/porchlight.service" "$here/porchlight.toml" "$repo/README.md")
else
  case ${3:-} in
    "") ;;
    --purge) remote_args+=(--purge) ;;
    *) die "unknown option ${3}: only --purge" ;;
  esac
fi

staging=$(ssh "$host" 'mktemp -d /tmp/porchlight-deploy.XXXXXX')
[ -n "$staging" ] || die "could not make a staging directory on $host"
echo "deploy: copying ${#files[@]} file(s) to $host:$staging"
scp -q "${files[@]}" "$host:$staging/"
# -t: sudo may ask for a password.
ssh -t "$host" "sudo bash $staging/remote.sh $command $staging ${remote_args[*]:-}"
