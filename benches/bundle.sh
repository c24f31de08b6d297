#!/usr/bin/env bash
# kbs bundle over the lab mirror and registry (release build): for each Kubernetes version the lab
# mirror serves, the wall time of a bundle from nothing (median of three), what it fetched and the
# bundle's size; then, for the newest version, curl fetching the same files and image blobs in
# parallel (8 at a time, as kbs), and kbs's throughput as a share of curl's (target: at least 80%).
# Prints figures; asserts nothing about time.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
kbs=${CARGO_TARGET_DIR:-$PWD/target}/release/kbs
lab=tests/lab/lab   # honours KBS_LAB_ID, so a bench can run beside a test run
work=$(mktemp -d)
trap 'rm -rf "$work"; $lab down >/dev/null 2>&1 || true' EXIT
# shellcheck source=../tests/lab/versions.env
. tests/lab/versions.env

$lab up 1 >/dev/null 2>&1
inv=$($lab inventory)
ca=$(sed -n 's/^REGISTRY_CA=//p' "$(dirname "$inv")/mirror/env")
reg=$(sed -n 's/^REGISTRY=//p' "$(dirname "$inv")/mirror/env")

# The lab inventory at version $1, bundling into $2.
inventory_at() {
    sed -e "s/^kubernetes_version = .*/kubernetes_version = \"${1#v}\"/" \
        -e "s|^bundle = .*|bundle = \"$2\"|" "$inv" >"$work/inventory-$1.toml"
    echo "$work/inventory-$1.toml"
}
secs() { local s; s=$(date +%s.%N); "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; exit 1; }; awk -v a="$s" -v b="$(date +%s.%N)" 'BEGIN { print b - a }'; }
one_bundle() { rm -rf "$2"; "$kbs" bundle "$1" --out "$2"; }

printf '%-9s %9s %11s %12s %10s\n' version "wall (s)" "fetched MiB" "bundle MiB" "MiB/s"
for v in $K8S_VERSIONS; do
    out=$work/bundle-$v
    i=$(inventory_at "$v" "$out")
    t=$(for _ in 1 2 3; do secs one_bundle "$i" "$out"; done | sort -n | sed -n 2p)
    fetched=$(rm -rf "$out" && "$kbs" bundle "$i" --out "$out" | sed -n 's/.*fetched \([0-9.]*\) MiB.*/\1/p')
    size=$(du -sm --apparent-size "$out" | cut -f1)
    printf '%-9s %9.2f %11.1f %12s %10.1f\n' "$v" "$t" "$fetched" "$size" "$(awk -v f="$fetched" -v t="$t" 'BEGIN { print f / t }')"
    last=$out
    last_t=$t
    last_fetched=$fetched
done

# curl: the same release files (bundle.toml's fetched_from) and every blob of every image (the
# archives' manifests and blobs, from the registry by digest), 8 transfers at a time. kbs also
# fetches the checksum files and each image's index, which curl is spared.
urls=$work/urls
sed -n 's/^fetched_from = "\(.*\)"$/\1/p' "$last/bundle.toml" >"$urls"
python3 - "$last" "$reg" >>"$urls" <<'PY'
import json, sys, tarfile, tomllib
bundle, reg = sys.argv[1], sys.argv[2]
with open(f"{bundle}/bundle.toml", "rb") as f:
    manifest = tomllib.load(f)
for image in manifest["image"]:
    repo = image["name"].split("/", 1)[1].rsplit(":", 1)[0]
    with tarfile.open(f"{bundle}/{image['source']}") as t:
        manifest_digest = json.load(t.extractfile("index.json"))["manifests"][0]["digest"]
        for m in t.getmembers():
            if m.name.startswith("blobs/sha256/"):
                digest = "sha256:" + m.name.rsplit("/", 1)[1]
                # The registry serves a manifest from /manifests/, the config and layers from /blobs/.
                kind = "manifests" if digest == manifest_digest else "blobs"
                print(f"https://{reg}/v2/{repo}/{kind}/{digest}")
PY
mkdir -p "$work/curl"
curl_all() {
    rm -rf "$work/curl" && mkdir -p "$work/curl"
    (cd "$work/curl" && n=0 && while read -r u; do n=$((n + 1)); printf 'url = "%s"\noutput = "f%d"\n' "$u" "$n"; done <"$urls" |
        curl --silent --fail --parallel --parallel-max 8 --cacert "$ca" \
            --header "Accept: application/vnd.oci.image.manifest.v1+json" --config -)
}
# The same, then what kbs does after fetching: unpack the archives and hash every file.
curl_unpack_hash() {
    curl_all
    (cd "$work/curl" && n=0 && while read -r u; do
        n=$((n + 1))
        case $u in *.tar.gz | *.tgz) mkdir -p "x$n" && tar -xzf "f$n" -C "x$n" ;; esac
    done <"$urls" && find . -type f -print0 | xargs -0 -n 20 -P 2 sha256sum >/dev/null)
}
cut=$(for _ in 1 2 3; do secs curl_unpack_hash; done | sort -n | sed -n 2p)
ct=$(for _ in 1 2 3; do secs curl_all; done | sort -n | sed -n 2p)
cbytes=$(du -sb "$work/curl" | cut -f1)
cmib=$(awk -v b="$cbytes" 'BEGIN { print b / 1048576 }')
printf '\ncurl, %d URLs (%s):  %.2f s for %.1f MiB = %.1f MiB/s\n' "$(wc -l <"$urls")" "${last##*-}" "$ct" "$cmib" "$(awk -v m="$cmib" -v t="$ct" 'BEGIN { print m / t }')"
printf 'kbs bundle:                     %.2f s for %.1f MiB = %.1f MiB/s\n' "$last_t" "$last_fetched" "$(awk -v m="$last_fetched" -v t="$last_t" 'BEGIN { print m / t }')"
printf 'curl + tar xzf + sha256sum:     %.2f s (what kbs does besides fetching: unpack, hash)\n' "$cut"
printf "kbs's throughput: %.0f%% of curl's (target >= 80%%), %.0f%% of curl + unpack + hash\n" \
    "$(awk -v km="$last_fetched" -v kt="$last_t" -v cm="$cmib" -v ct="$ct" 'BEGIN { print 100 * (km / kt) / (cm / ct) }')" \
    "$(awk -v kt="$last_t" -v c="$cut" 'BEGIN { print 100 * c / kt }')"
