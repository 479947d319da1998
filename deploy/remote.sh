#!/usr/bin/env bash
# The host's half of deploy/deploy.sh, run as root in the staging directory it copied:
#
#   remote.sh install STAGING     install what STAGING holds and (re)start the service
#   remote.sh uninstall STAGING [--purge]
#
# Safe to run again: an existing config is kept, the user is created only once.
set -euo pipefail

command=${1:?install or uninstall}
staging=${2:?staging directory}
purge=${3:-}

bin=/usr/local/bin/porchlight
unit=/etc/systemd/system/porchlight.service
config_dir=/etc/porchlight
config=$config_dir/porchlight.toml
data_dir=/var/lib/porchlight
doc_dir=/usr/local/share/doc/porchlight

say() { echo "porchlight: $*"; }

[ "$(id -u)" = 0 ] || { say "run me as root (deploy.sh uses sudo)" >&2; exit 1; }

# A token of 24 characters from the token alphabet (base64 with - for +).
new_token() { head -c 18 /dev/urandom | base64 | tr '+' '-'; }

install_all() {
  # The service user, in the groups that own the camera (video) and sysfs GPIO (gpio). Raspberry
  # Pi OS has both groups and a udev rule that gives /sys/class/gpio to gpio; elsewhere the
  # group alone does not open sysfs GPIO (README.md, "Troubleshooting").
  getent group gpio >/dev/null || {
    groupadd --system gpio
    say "created group gpio: without Raspberry Pi OS's udev rule it does not grant sysfs GPIO"
  }
  if ! id porchlight >/dev/null 2>&1; then
    useradd --system --user-group --home-dir "$data_dir" --no-create-home \
      --shell /usr/sbin/nologin --comment "porchlight doorbell" porchlight
    say "created user porchlight"
  fi
  usermod --append --groups video,gpio porchlight

  install -m 0755 "$staging/porchlight" "$bin"
  install -m 0644 "$staging/porchlight.service" "$unit"
  install -d -m 0755 "$doc_dir"
  install -m 0644 "$staging/README.md" "$doc_dir/README.md"
  # The config holds tokens: readable by root and the service only.
  install -d -m 0750 -o root -g porchlight "$config_dir"
  local admin="" viewer=""
  if [ ! -e "$config" ]; then
    admin=$(new_token)
    viewer=$(new_token)
    sed -e "s|@ADMIN_TOKEN@|$admin|" -e "s|@VIEWER_TOKEN@|$viewer|" \
      "$staging/porchlight.toml" >"$config.new"
    chown root:porchlight "$config.new"
    chmod 0640 "$config.new"
    mv "$config.new" "$config"
    say "wrote $config (edit it, then: sudo systemctl restart porchlight)"
  else
    say "kept $config"
  fi
  # A bad config stops here, with the line porchlight prints, not in a restart loop.
  "$bin" --check-config "$config" >/dev/null

  systemctl daemon-reload
  systemctl enable porchlight.service
  # Type=notify: restart returns once porchlight sent READY=1 (it listens), or reports failure.
  if ! systemctl restart porchlight.service; then
    journalctl --unit porchlight.service --lines 30 --no-pager || true
    say "the service did not start; the log is above"
    exit 1
  fi
  rm -rf "$staging"
  local port
  port=$(sed -n 's/^listen = ".*:\([0-9]*\)"/\1/p' "$config")
  say "running: http://$(hostname).local:${port:-8080}/"
  if [ -n "$admin" ]; then
    say "admin token:  $admin"
    say "viewer token: $viewer"
  fi
}

uninstall_all() {
  systemctl disable --now porchlight.service 2>/dev/null || true
  rm -f "$unit" "$bin"
  rm -rf "$doc_dir"
  systemctl daemon-reload
  if [ "$purge" = --purge ]; then
    rm -rf "$config_dir" "$data_dir"
    if id porchlight >/dev/null 2>&1; then userdel porchlight; fi
    say "removed, with its config, events, snapshots and user"
  else
    say "removed; kept $config_dir and $data_dir (events, snapshots): --purge deletes them"
  fi
  rm -rf "$staging"
}

case $command in
  install) install_all ;;
  uninstall) uninstall_all ;;
  *)
    say "unknown command $command" >&2
    exit 2
    ;;
esac
