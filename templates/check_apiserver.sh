#!/bin/sh
# keepalived health check on {{ host.name }}: fails when the local API server or, on the
# VIP holder, the API through haproxy on the VIP does not answer.
set -u

fail() {
    echo "check_apiserver: $*" >&2
    exit 1
}

curl -sfk --max-time 2 -o /dev/null "https://127.0.0.1:{{ endpoint.apiserver_port }}/healthz" \
    || fail "local API server https://127.0.0.1:{{ endpoint.apiserver_port }}/healthz"
if ip -o addr show | grep -qF " {{ vip.address }}/"; then
    curl -sfk --max-time 2 -o /dev/null "https://{{ vip.url_host }}:{{ endpoint.port }}/healthz" \
        || fail "API through the VIP https://{{ vip.url_host }}:{{ endpoint.port }}/healthz"
fi
