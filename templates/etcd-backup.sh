#!/bin/sh
# Scheduled etcd snapshot on {{ host.name }} (kbs-etcd-backup.timer, schedule {{ backup.schedule }}).
# Takes a snapshot of member {{ backup.member }}, checks it, names it
# {{ cluster.name }}-<UTC time>-rev<revision>.db with a .sha256 sidecar in {{ backup.dir }}, and keeps
# the newest {{ backup.keep }}. `kbs backup INVENTORY --fetch` copies them to the state directory.
set -eu
umask 077
dir={{ backup.dir | q }}
keep={{ backup.keep }}
pki=/etc/kbs/etcd/pki
install -d -m 0700 "$dir"
ts=$(date -u +%Y%m%dT%H%M%SZ)
part="$dir/.snapshot-$ts.part"
trap 'rm -f "$part" "$part.part"' EXIT
ETCDCTL_API=3 etcdctl --endpoints={{ backup.endpoint | q }} --cacert="$pki/ca.crt" \
    --cert="$pki/healthcheck-client.crt" --key="$pki/healthcheck-client.key" \
    --command-timeout=120s snapshot save "$part"
# etcd 3.5+ moved the offline tools to etcdutl; 3.4 has them in etcdctl.
if command -v etcdutl >/dev/null 2>&1; then
    status=$(etcdutl snapshot status "$part" -w json)
else
    status=$(ETCDCTL_API=3 etcdctl snapshot status "$part" -w json)
fi
rev=$(printf '%s' "$status" | sed -n 's/.*"revision":\([0-9]*\).*/\1/p')
[ -n "$rev" ] || { echo "snapshot status gave no revision: $status" >&2; exit 1; }
name="{{ cluster.name }}-$ts-rev$rev.db"
mv -f "$part" "$dir/$name"
(cd "$dir" && sha256sum "$name" > "$name.sha256.part" && mv -f "$name.sha256.part" "$name.sha256")
echo "kbs-etcd-backup: $dir/$name"
# Retention: the names sort by time; keep the newest $keep.
ls -1 "$dir" | grep -E '^{{ cluster.name }}-[0-9]{8}T[0-9]{6}Z-rev[0-9]+\.db$' | sort -r \
    | tail -n +$((keep + 1)) | while read -r old; do
        rm -f "$dir/$old" "$dir/$old.sha256"
        echo "kbs-etcd-backup: removed $old (keep $keep)"
    done
