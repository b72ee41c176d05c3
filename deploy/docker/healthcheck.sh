#!/bin/bash
# The image's HEALTHCHECK: GET /healthz on this node's API and succeed on HTTP 200.
#
# The image has no curl or wget, so this speaks HTTP/1.0 over bash's /dev/tcp. The port is
# taken from PIVOT_API__LISTEN when set (host:port or [v6]:port), else 8080 as in the shipped
# /etc/pivot/pivot.toml; the first argument, host:port, overrides both (a config file that
# listens elsewhere needs it). Exit 0 healthy, 1 not.
set -u
target=${1:-}
if [[ -z $target ]]; then
  listen=${PIVOT_API__LISTEN:-0.0.0.0:8080}
  target="127.0.0.1:${listen##*:}"
fi
host=${target%:*}
port=${target##*:}
exec 3<>"/dev/tcp/${host}/${port}" || exit 1
printf 'GET /healthz HTTP/1.0\r\nHost: %s\r\n\r\n' "$host" >&3 || exit 1
IFS=' ' read -r -t 5 _ status _ <&3 || exit 1
[[ $status == 200 ]]
