"""Shared code of the kbs lab STAND-INS for kubeadm / kube-apiserver / kubelet / kubectl.

These are NOT Kubernetes.  They exist because the lab hosts cannot obtain the
real binaries; they reproduce the parts of kubeadm's behaviour that kbs relies
on (strict config decoding, preflight and certificate checks, token discovery)
and talk to the REAL etcd (via etcdctl) and check certificates with the REAL
openssl.  Only the Python standard library and PyYAML are used.
"""

import base64
import concurrent.futures
import datetime as dt
import hashlib
import hmac
import http.client
import ipaddress
import json
import os
import pkgutil
import re
import secrets
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.parse

import yaml

HERE = os.path.dirname(os.path.realpath(__file__))
FIELDS_NAME = "kubeadm-v1beta4-fields.json"
# Set by a single-file build's __main__.py (tests/lab/standins/package) to the real path of the
# executable zipapp (e.g. /usr/local/bin/kubeadm); None when run from the source directory.
SELF = None
# argv[1] that makes a stand-in zipapp run the API server stand-in instead of its own tool:
#   python3 /usr/local/bin/kubeadm kube-apiserver-standin --advertise-address=... (pgrep -f 'kube-apiserver')
APISERVER_ARG = "kube-apiserver-standin"

KUBEADM_GROUP = "kubeadm.k8s.io"
KUBEADM_V1BETA4 = KUBEADM_GROUP + "/v1beta4"
COMPONENT_CONFIGS = {
    "kubelet.config.k8s.io/v1beta1": "KubeletConfiguration",
    "kubeproxy.config.k8s.io/v1alpha1": "KubeProxyConfiguration",
}
# kubeadm's own table (util/config/common.go): versions it knows but no longer reads.
OLD_KUBEADM_APIS = {
    "kubeadm.k8s.io/v1alpha1": "v1.11", "kubeadm.k8s.io/v1alpha2": "v1.12",
    "kubeadm.k8s.io/v1alpha3": "v1.14", "kubeadm.k8s.io/v1beta1": "v1.15",
    "kubeadm.k8s.io/v1beta2": "v1.22",
    # Real kubeadm 1.31-1.36 still reads v1beta3 with a deprecation warning.
    # kbs targets v1beta4 only, so the stand-in refuses it (as kubeadm 1.37 does).
    "kubeadm.k8s.io/v1beta3": "v1.36",
}
TOKEN_RE = re.compile(r"^([a-z0-9]{6})\.([a-z0-9]{16})$")
DEFAULT_TOKEN_GROUP = "system:bootstrappers:kubeadm:default-node-token"


class StandinError(Exception):
    """An error that ends the command with exit status 1 and this message."""


def log(*parts):
    print(*parts, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- paths, version

ROOT = os.environ.get("KUBEADM_STANDIN_ROOT", "").rstrip("/")


def rooted(path):
    """KUBEADM_STANDIN_ROOT works like a chroot for files: every absolute host path the
    stand-ins read or write (fixed ones like /etc/kubernetes and /etc/systemd/system, and
    those from config files like certificatesDir or etcd.external.caFile) lives under it.
    So the self-test runs several "hosts" on one machine with production-like configs."""
    return ROOT + path if path and path.startswith("/") and ROOT else path


KUBE_DIR = rooted("/etc/kubernetes")
MANIFESTS_DIR = rooted("/etc/kubernetes/manifests")
DEFAULT_CERT_DIR = rooted("/etc/kubernetes/pki")
SYSTEMD_DIR = rooted("/etc/systemd/system")
KUBELET_DIR = rooted("/var/lib/kubelet")
RUN_DIR = rooted("/run/kbs-standins")
APISERVER_UNIT = "kube-apiserver-standin.service"
NO_SYSTEMD = os.environ.get("KUBEADM_STANDIN_NO_SYSTEMD") == "1"


def standin_version():
    """The Kubernetes version the stand-in claims: KUBEADM_STANDIN_VERSION, else the version baked
    into a single-file build (standin_build.py, written by ./package), else the VERSION file."""
    v = os.environ.get("KUBEADM_STANDIN_VERSION")
    if not v:
        try:
            import standin_build  # only inside a zipapp made by ./package
            v = standin_build.VERSION
        except ImportError:
            with open(os.path.join(HERE, "VERSION")) as f:
                v = f.read().strip()
    if not re.match(r"^v\d+\.\d+\.\d+$", v):
        raise StandinError("stand-in VERSION %r is not of the form vMAJOR.MINOR.PATCH" % v)
    return v


def minor_of(version):
    m = re.match(r"^v?(\d+)\.(\d+)", version or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


# kubeadm's per-release constants (cmd/kubeadm/app/constants/constants.go on each release branch):
# MinExternalEtcdVersion (the ExternalEtcdVersion preflight minimum), PauseVersion, CoreDNSVersion,
# and the local etcd image tag (DefaultEtcdVersion; only listed, the stand-in deploys no etcd).
# Sources and how sure each value is: README.md, "kubeadm constants per minor". Values marked
# "unconfirmed" are best guesses; a minor that is missing here is refused rather than guessed.
KUBEADM_CONSTANTS = {
    31: {"minExternalEtcd": "3.5.11-0", "pause": "3.10", "coredns": "v1.11.3", "etcd": "3.5.15-0"},
    32: {"minExternalEtcd": "3.5.11-0", "pause": "3.10", "coredns": "v1.11.3", "etcd": "3.5.16-0"},   # minExternalEtcd unconfirmed
    33: {"minExternalEtcd": "3.5.11-0", "pause": "3.10", "coredns": "v1.12.0", "etcd": "3.5.21-0"},   # unconfirmed except coredns
    34: {"minExternalEtcd": "3.5.11-0", "pause": "3.10.1", "coredns": "v1.12.1", "etcd": "3.6.4-0"},  # unconfirmed except coredns
    35: {"minExternalEtcd": "3.5.24-0", "pause": "3.10.1", "coredns": "v1.13.1", "etcd": "3.6.6-0"},
    36: {"minExternalEtcd": "3.5.24-0", "pause": "3.10.2", "coredns": "v1.14.2", "etcd": "3.6.8-0"},
    37: {"minExternalEtcd": "3.5.24-0", "pause": "3.10.2", "coredns": "v1.14.6", "etcd": "3.7.0-0"},
}
DEFAULT_IMAGE_REPOSITORY = "registry.k8s.io"
DEFAULT_CRI_SOCKET = "unix:///var/run/containerd/containerd.sock"


def kubeadm_constants(version):
    """KUBEADM_CONSTANTS of version's minor; a minor the table lacks is an error, not a guess."""
    mm = minor_of(version)
    if not mm or mm[0] != 1 or mm[1] not in KUBEADM_CONSTANTS:
        raise StandinError("the kubeadm stand-in has no constants (MinExternalEtcdVersion, PauseVersion, CoreDNSVersion) for %s: "
                           "add its minor to KUBEADM_CONSTANTS in standin_common.py (known: %s)"
                           % (version, ", ".join("1.%d" % m for m in sorted(KUBEADM_CONSTANTS))))
    return KUBEADM_CONSTANTS[mm[1]]


def semantic_version(v):
    """k8s.io/apimachinery ParseSemantic, as a sort key: 3.5.24-0 < 3.5.24 < 3.5.30 (a
    pre-release sorts before its release). None if v is not MAJOR.MINOR.PATCH[-PRE][+BUILD]."""
    m = re.match(r"^v?(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$", v or "")
    if not m:
        return None
    pre = m.group(4)
    ids = tuple((0, int(x), "") if x.isdigit() else (1, 0, x) for x in pre.split(".")) if pre else ()
    return (int(m.group(1)), int(m.group(2)), int(m.group(3)), 0 if pre else 1, ids)


def control_plane_images(cc, version):
    """What `kubeadm config images list` prints for ClusterConfiguration cc, in kubeadm's order
    (cmd/kubeadm/app/images/images.go GetControlPlaneImages): apiserver, controller-manager,
    scheduler, kube-proxy (unless proxy.disabled), CoreDNS (unless dns.disabled), pause, and etcd
    only for local etcd."""
    consts = kubeadm_constants(version)  # the kubeadm binary's own constants, as upstream
    repo = cc.get("imageRepository") or DEFAULT_IMAGE_REPOSITORY
    tag = "v" + (cc.get("kubernetesVersion") or version).lstrip("v").replace("+", "_")
    images = ["%s/%s:%s" % (repo, name, tag) for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler")]
    if not dig(cc, "proxy", "disabled"):
        images.append("%s/kube-proxy:%s" % (repo, tag))
    if not dig(cc, "dns", "disabled"):
        dns_repo = dig(cc, "dns", "imageRepository") or repo
        if dns_repo == DEFAULT_IMAGE_REPOSITORY:  # the official image moved to registry.k8s.io/coredns/coredns
            dns_repo += "/coredns"
        images.append("%s/coredns:%s" % (dns_repo, dig(cc, "dns", "imageTag") or consts["coredns"]))
    images.append("%s/pause:%s" % (repo, consts["pause"]))
    if not dig(cc, "etcd", "external"):
        local = dig(cc, "etcd", "local") or {}
        images.append("%s/etcd:%s" % (local.get("imageRepository") or repo, local.get("imageTag") or consts["etcd"]))
    return images


def normalize_image(ref):
    """The name containerd's CRI stores for an image reference (docker's normalisation):
    "pause:3.10" -> "docker.io/library/pause:3.10", "registry.k8s.io/pause:3.10" unchanged."""
    first, _, rest = ref.partition("/")
    if not rest:
        return "docker.io/library/" + ref
    if "." not in first and ":" not in first and first != "localhost":
        return "docker.io/" + ref
    return ref


def write_file(path, data, mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "w" if isinstance(data, str) else "wb") as f:
        f.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def now():
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def rfc3339(t):
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(s):
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00"))


GO_DURATION_RE = re.compile(r"^[-+]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|ms|s|m|h))+$")


def parse_duration(s):
    """Go time.ParseDuration, seconds as float."""
    if s in ("0", "-0", "+0"):
        return 0.0
    if not isinstance(s, str) or not GO_DURATION_RE.match(s):
        raise ValueError("time: invalid duration %r" % s)
    units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
    sign = -1 if s.startswith("-") else 1
    return sign * sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)", s))


# ---------------------------------------------------------------- YAML loading

class _StrictLoader(yaml.SafeLoader):
    """YAML loader that behaves like sigs.k8s.io/yaml for our purposes:
    timestamps stay strings and duplicate keys are errors (strict decoding)."""


_StrictLoader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:timestamp"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _construct_mapping(loader, node, deep=False):
    seen = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise StandinError('strict decoding error: yaml: unmarshal errors:\n  line %d: key "%s" already set in map'
                               % (key_node.start_mark.line + 1, key))
        seen[key] = True
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml_documents(text):
    try:
        return [d for d in yaml.load_all(text, Loader=_StrictLoader) if d is not None]
    except yaml.YAMLError as e:
        raise StandinError("error converting YAML to JSON: %s" % e)


# ---------------------------------------------------------------- strict decoding

_FIELDS = None


def field_spec():
    global _FIELDS
    if _FIELDS is None:
        # pkgutil reads it next to this module, on disk or inside a zipapp alike.
        _FIELDS = json.loads(pkgutil.get_data(__name__, FIELDS_NAME))
    return _FIELDS


def _struct(name):
    spec = field_spec()
    return spec["structs"].get(name) or spec["externalStructs"].get(name)


def _since_minor(since):
    """'1.35' -> 35; v1beta4-era markers ('v1beta4 (1.31)', 'after 1.31 ...') -> None."""
    m = re.match(r"^(?:k8s\.io/api )?1\.(\d+)", since or "")
    return int(m.group(1)) if m else None


def _gvk(api_version, kind):
    group, _, version = api_version.rpartition("/")
    return 'schema.GroupVersionKind{Group:"%s", Version:"%s", Kind:"%s"}' % (group, version, kind)


def _check_value(value, typ, gopath, unknown, type_errors, kube_minor):
    """Walk value against the field-list type `typ`, collecting unknown fields
    (by JSON path) and type errors (json.Unmarshal wording)."""
    if value is None:  # JSON null decodes to the zero value: never an error
        return
    base = typ.lstrip("*")

    def bad(got):
        type_errors.append("json: cannot unmarshal %s into Go struct field %s of type %s" % (got, ".".join(map(str, gopath)), base))

    def json_kind(v):
        # json.Unmarshal's names for what it found.
        t = _json_type(v)
        return {"boolean": "bool", "integer": "number"}.get(t, t)

    if base.startswith("[]"):
        if not isinstance(value, list):
            return bad(json_kind(value))
        for item in value:
            _check_value(item, base[2:], gopath, unknown, type_errors, kube_minor)
        return
    if base.startswith("map[string]"):
        if not isinstance(value, dict):
            return bad(json_kind(value))
        for v in value.values():
            _check_value(v, base[len("map[string]"):], gopath, unknown, type_errors, kube_minor)
        return
    struct = _struct(base)
    if struct is not None:
        if not isinstance(value, dict):
            return bad(json_kind(value))
        fields = struct["fields"]
        for k, v in value.items():
            spec = fields.get(k)
            since = _since_minor(spec.get("since")) if spec else None
            if spec is None or (since is not None and kube_minor < since):
                unknown.append(".".join(gopath[1:] + [str(k)]))
                continue
            _check_value(v, spec["type"], gopath + [k], unknown, type_errors, kube_minor)
        return
    if base in ("bool",):
        if not isinstance(value, bool):
            bad(json_kind(value))
    elif base in ("int", "int32"):
        if isinstance(value, bool) or not isinstance(value, int):
            bad(json_kind(value) if not isinstance(value, float) else "number %s" % value)
        elif base == "int32" and not -2**31 <= value < 2**31:
            bad("number %d" % value)
    elif base == "quantity":
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            bad(json_kind(value))
    elif base == "duration":
        if not isinstance(value, str):
            bad(json_kind(value))
        else:
            try:
                parse_duration(value)
            except ValueError as e:
                type_errors.append(str(e))
    elif base == "time":
        if not isinstance(value, str):
            bad(json_kind(value))
        else:
            try:
                parse_rfc3339(value)
            except ValueError:
                type_errors.append('parsing time "%s" as "2006-01-02T15:04:05Z07:00": cannot parse' % value)
    else:  # string and string-based enum types (validated later, like kubeadm does)
        if not isinstance(value, str):
            bad(json_kind(value))


def decode_documents(text, kube_version=None):
    """Parse a multi-document kubeadm config like kubeadm's strict decoder.
    Returns {kind: document}.  Raises StandinError on the first broken document."""
    kube_minor = minor_of(kube_version or standin_version())[1]
    docs = {}
    for doc in load_yaml_documents(text):
        if not isinstance(doc, dict):
            raise StandinError("error unmarshaling configuration: document is not a YAML mapping")
        api, kind = doc.get("apiVersion"), doc.get("kind")
        if not api or not kind:
            raise StandinError("invalid configuration for GroupVersionKind %s: kind and apiVersion is mandatory information that must be specified"
                               % _gvk(api or "", kind or ""))
        if api in OLD_KUBEADM_APIS:
            raise StandinError("your configuration file uses an old API spec: \"%s\" (kind: \"%s\"). Please use kubeadm %s instead and run "
                               "'kubeadm config migrate --old-config old.yaml --new-config new.yaml', which will write the new, "
                               "similar spec using a newer API version." % (api, kind, OLD_KUBEADM_APIS[api]))
        if api == KUBEADM_V1BETA4 and kind in field_spec()["kinds"]:
            unknown, type_errors = [], []
            _check_value(doc, kind, [kind], unknown, type_errors, kube_minor)
            if type_errors:
                raise StandinError("error unmarshaling configuration %s: %s" % (_gvk(api, kind), type_errors[0]))
            if unknown:
                raise StandinError("error unmarshaling configuration %s: strict decoding error: %s"
                                   % (_gvk(api, kind), ", ".join('unknown field "%s"' % u for u in unknown)))
        elif COMPONENT_CONFIGS.get(api) != kind:
            raise StandinError('no kind "%s" is registered for version "%s" in scheme '
                               '"k8s.io/kubernetes/cmd/kubeadm/app/apis/kubeadm/scheme/scheme.go:31"' % (kind, api))
        if kind in docs:
            raise StandinError("invalid configuration: kind \"%s\" is specified twice in YAML file" % kind)
        docs[kind] = doc
    return docs


def dig(d, *path, default=None):
    for p in path:
        if not isinstance(d, dict) or d.get(p) is None:
            return default
        d = d[p]
    return d


def first_service_ip(service_subnet):
    cidr = service_subnet.split(",")[0].strip()
    net = ipaddress.ip_network(cidr, strict=False)
    return str(net.network_address + 1)


def split_host_port(endpoint, default_port=6443):
    m = re.match(r"^\[([^\]]+)\](?::(\d+))?$", endpoint) or re.match(r"^([^:]+)(?::(\d+))?$", endpoint)
    if not m:
        raise StandinError("invalid endpoint \"%s\": want host[:port]" % endpoint)
    return m.group(1), int(m.group(2) or default_port)


def is_ip(s):
    try:
        ipaddress.ip_address(s)
        return True
    except ValueError:
        return False


def default_node_name():
    return socket.gethostname().lower()


def detect_advertise_address():
    """kubeadm picks the address of the default-route interface; a connected
    UDP socket tells us which source address the kernel would use."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("192.0.2.1", 9))
        return s.getsockname()[0]
    except OSError:
        raise StandinError("unable to select an IP from default routes; set localAPIEndpoint.advertiseAddress")
    finally:
        s.close()


def validation_errors_cluster(cc, kube_version):
    """The subset of kubeadm's ValidateClusterConfiguration that matters here."""
    errs = []
    want = minor_of(kube_version)
    kv = cc.get("kubernetesVersion")
    if not kv:
        errs.append("kubernetesVersion: Required value: the stand-in never resolves 'stable-1' (no Internet); pin it, e.g. %s" % kube_version)
    elif not re.match(r"^v?\d+\.\d+\.\d+", kv) or minor_of(kv) != want:
        errs.append("kubernetesVersion: Invalid value: \"%s\": this stand-in kubeadm %s deploys only v%d.%d.x control planes"
                    % (kv, kube_version, want[0], want[1]))
    cpe = cc.get("controlPlaneEndpoint")
    if not cpe:
        errs.append("controlPlaneEndpoint: Required value: an HA cluster needs a stable controlPlaneEndpoint")
    else:
        try:
            split_host_port(cpe)
        except StandinError as e:
            errs.append("controlPlaneEndpoint: Invalid value: %s" % e)
    ext, local = dig(cc, "etcd", "external"), dig(cc, "etcd", "local")
    if ext and local:
        errs.append("etcd: Invalid value: \"\": either local or external etcd can be used, not both")
    if not ext:
        errs.append("etcd.external: Required value: the stand-in only supports external etcd")
    else:
        eps = ext.get("endpoints") or []
        if not eps:
            errs.append("etcd.external.endpoints: Required value: not specified")
        for f in ("caFile", "certFile", "keyFile"):
            p = ext.get(f)
            if p and not os.path.isabs(p):
                errs.append("etcd.external.%s: Invalid value: \"%s\": path is not absolute" % (f, p))
        if bool(ext.get("certFile")) != bool(ext.get("keyFile")):
            errs.append("etcd.external.certFile/keyFile: Invalid value: both or neither must be set")
        if ext.get("certFile") and not ext.get("caFile"):
            errs.append("etcd.external.caFile: Required value: caFile is required when certFile is set")
        if ext.get("certFile"):
            for e in eps:
                if not str(e).startswith("https://"):
                    errs.append("etcd.external.endpoints: Invalid value: \"%s\": URL scheme must be https when certificates are used" % e)
    enum = field_spec()["enums"]["EncryptionAlgorithmType"]["values"]
    if cc.get("encryptionAlgorithm") and cc["encryptionAlgorithm"] not in enum:
        errs.append("encryptionAlgorithm: Unsupported value: \"%s\": supported values: %s" % (cc["encryptionAlgorithm"], ", ".join(enum)))
    try:
        first_service_ip(dig(cc, "networking", "serviceSubnet", default="10.96.0.0/12"))
    except ValueError as e:
        errs.append("networking.serviceSubnet: Invalid value: %s" % e)
    return errs


def validation_errors_tokens(tokens):
    errs = []
    for i, t in enumerate(tokens or []):
        if t.get("token") and not TOKEN_RE.match(t["token"]):
            errs.append("bootstrapTokens[%d].token: Invalid value: the bootstrap token is invalid" % i)
        if t.get("ttl") and t.get("expires"):
            errs.append("bootstrapTokens[%d]: Invalid value: ttl and expires are mutually exclusive" % i)
    return errs


def validation_errors_join(jc):
    errs = []
    disc = jc.get("discovery") or {}
    bt, fd = disc.get("bootstrapToken"), disc.get("file")
    if bt and fd:
        errs.append("discovery: Invalid value: bootstrapToken and file cannot both be set")
    if fd:
        errs.append("discovery.file: Invalid value: the stand-in supports only bootstrap token discovery")
    if not bt and not fd:
        errs.append("discovery: Invalid value: bootstrapToken or file must be set")
    if bt:
        if not TOKEN_RE.match(bt.get("token") or ""):
            errs.append("discovery.bootstrapToken.token: Invalid value: the bootstrap token is invalid")
        if not bt.get("apiServerEndpoint"):
            errs.append("discovery.bootstrapToken.apiServerEndpoint: Required value: apiServerEndpoint is required for token discovery")
        if not bt.get("caCertHashes") and not bt.get("unsafeSkipCAVerification"):
            errs.append('discovery.bootstrapToken.caCertHashes: Invalid value: "": using token-based discovery without caCertHashes can be '
                        "unsafe. Set unsafeSkipCAVerification as true in your kubeadm config file or pass "
                        "--discovery-token-unsafe-skip-ca-verification flag to continue")
        for h in bt.get("caCertHashes") or []:
            if not re.match(r"^sha256:[0-9a-f]{64}$", h):
                errs.append("discovery.bootstrapToken.caCertHashes: Invalid value: \"%s\": want sha256:<64 hex>" % h)
    adv = dig(jc, "controlPlane", "localAPIEndpoint", "advertiseAddress")
    if adv and not is_ip(adv):
        errs.append("controlPlane.localAPIEndpoint.advertiseAddress: Invalid value: \"%s\": must be a valid IP address" % adv)
    return errs


def raise_validation(errs):
    if errs:
        raise StandinError("validation failed: [%s]" % ", ".join(errs))


# ---------------------------------------------------------------- openssl

def run(cmd, input=None, timeout=30, env=None):
    try:
        p = subprocess.run(cmd, input=input, capture_output=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise StandinError("%s timed out after %ss" % (cmd[0], timeout))
    return p.returncode, p.stdout, p.stderr


def openssl(*args, input=None):
    rc, out, err = run(["openssl", *args], input=input)
    if rc != 0:
        raise StandinError("openssl %s failed: %s" % (args[0], err.decode(errors="replace").strip()))
    return out


def cert_sans(cert_file):
    """(set of DNS names, set of IPs) from the certificate's subjectAltName."""
    out = openssl("x509", "-in", cert_file, "-noout", "-ext", "subjectAltName").decode()
    dns, ips = set(), set()
    for item in re.split(r",\s*|\n\s*", out):
        item = item.strip()
        if item.startswith("DNS:"):
            dns.add(item[4:].lower())
        elif item.startswith("IP Address:"):
            ips.add(str(ipaddress.ip_address(item[len("IP Address:"):])))
    return dns, ips


def cert_subject(cert_file, req=False):
    """(CN, [O...]) of a certificate or CSR."""
    out = openssl("req" if req else "x509", "-in", cert_file, "-noout", "-subject", "-nameopt", "RFC2253").decode().strip()
    rdns = out.split("=", 1)[1] if out.startswith("subject=") else out
    cn, orgs = None, []
    for part in re.split(r"(?<!\\),", rdns):
        k, _, v = part.partition("=")
        if k == "CN":
            cn = v
        elif k == "O":
            orgs.append(v)
    return cn, orgs


def verify_chain(ca_file, cert_file):
    """None if cert_file chains to ca_file (intermediates in cert_file allowed), else the reason."""
    rc, out, err = run(["openssl", "verify", "-CAfile", ca_file, "-untrusted", cert_file, cert_file])
    if rc == 0:
        return None
    text = (out + err).decode(errors="replace")
    m = re.search(r"error \d+ at \d+ depth lookup: (.*)", text)
    return "x509: " + (m.group(1) if m else text.strip().splitlines()[-1]) + " (openssl verify)"


def host_covered(name, dns, ips):
    """Go's VerifyHostname: IPs must be IP SANs; names match DNS SANs (one-label wildcard)."""
    if is_ip(name):
        return str(ipaddress.ip_address(name)) in ips
    name = name.lower()
    if name in dns:
        return True
    return any(d.startswith("*.") and name.split(".", 1)[-1] == d[2:] and "." in name for d in dns)


def spki_hash_pem(cert_pem):
    """kubeadm's discovery hash: sha256 over the DER SubjectPublicKeyInfo."""
    pub = openssl("x509", "-noout", "-pubkey", input=cert_pem)
    der = openssl("pkey", "-pubin", "-outform", "DER", input=pub)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def gen_key(path, algorithm="RSA-2048"):
    if algorithm.startswith("ECDSA"):
        curve = "prime256v1" if algorithm == "ECDSA-P256" else "secp384r1"
        pem = openssl("ecparam", "-name", curve, "-genkey", "-noout")
    else:
        pem = openssl("genrsa", "-traditional", algorithm.split("-")[1])
    write_file(path, pem, 0o600)


def sign_csr(ca_crt, ca_key, csr_pem, cn=None, orgs=(), sans=(), eku="clientAuth", days=365):
    """Sign a CSR with the CA like kubeadm/kube-controller-manager would: leaf KU
    digitalSignature+keyEncipherment, the given EKU, given SANs; subject from cn/orgs
    (or from the CSR if cn is None).  Returns the PEM certificate."""
    with tempfile.TemporaryDirectory() as tmp:
        csr = os.path.join(tmp, "req.csr")
        ext = os.path.join(tmp, "ext.cnf")
        write_file(csr, csr_pem)
        lines = ["[v3]", "basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature,keyEncipherment",
                 "extendedKeyUsage=" + eku]
        if sans:
            lines.append("subjectAltName=" + ",".join(("IP:" if is_ip(s) else "DNS:") + s for s in sans))
        write_file(ext, "\n".join(lines) + "\n")
        args = ["x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key, "-days", str(days), "-sha256",
                "-set_serial", "0x" + secrets.token_hex(8), "-extfile", ext, "-extensions", "v3"]
        if cn is not None:
            args += ["-subj", make_subject(cn, orgs)]
        return openssl(*args)


def make_subject(cn, orgs=()):
    return "".join("/O=" + o for o in orgs) + "/CN=" + cn


def make_csr(key_file, cn, orgs=(), sans=()):
    extra = ["-addext", "subjectAltName=" + ",".join(("IP:" if is_ip(s) else "DNS:") + s for s in sans)] if sans else []
    return openssl("req", "-new", "-key", key_file, "-subj", make_subject(cn, orgs), *extra)


def csr_sans(csr_pem):
    """The DNS names and IP addresses a CSR asks for, as openssl prints them."""
    text = openssl("req", "-noout", "-text", input=csr_pem).decode()
    m = re.search(r"X509v3 Subject Alternative Name:\s*\n\s*(.+)", text)
    if not m:
        return []
    out = []
    for part in m.group(1).split(","):
        k, _, v = part.strip().partition(":")
        if k in ("DNS", "IP Address"):
            out.append(v.strip())
    return out


def mint_cert(ca_crt, ca_key, out_base, cn, orgs=(), sans=(), eku="clientAuth", algorithm="RSA-2048"):
    """Create <out_base>.key and <out_base>.crt signed by the CA (kubeadm's leaf profile)."""
    gen_key(out_base + ".key", algorithm)
    csr = make_csr(out_base + ".key", cn, orgs)
    write_file(out_base + ".crt", sign_csr(ca_crt, ca_key, csr, cn, orgs, sans, eku))


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


# ---------------------------------------------------------------- kubeconfig

KUBELET_CLIENT_CURRENT = "/var/lib/kubelet/pki/kubelet-client-current.pem"


def write_kubelet_client(cert_pem, key_pem):
    """The kubelet's client certificate as the kubelet keeps it: kubelet-client-<time>.pem (cert and
    key) and the kubelet-client-current.pem link that rotation moves to each new one."""
    pki = rooted("/var/lib/kubelet/pki")
    name = "kubelet-client-%s.pem" % now().strftime("%Y-%m-%d-%H-%M-%S")
    write_file(os.path.join(pki, name), cert_pem + key_pem, 0o600)
    link = rooted(KUBELET_CLIENT_CURRENT)
    if os.path.lexists(link):
        os.unlink(link)
    os.symlink(name, link)


def make_kubeconfig(cluster, server, ca_pem, user=None, cert_pem=None, key_pem=None, token=None, cert_file=None):
    """cert_file: the user's certificate and key are that file (kubelet.conf after TLS bootstrap
    and kubeadm's kubelet-finalize: the rotating kubelet-client-current.pem), not embedded."""
    b64 = lambda b: base64.b64encode(b).decode()
    cfg = {"apiVersion": "v1", "kind": "Config",
           "clusters": [{"name": cluster, "cluster": {"certificate-authority-data": b64(ca_pem), "server": server}}],
           "contexts": None, "current-context": "", "preferences": {}, "users": None}
    if user:
        if token:
            creds = {"token": token}
        elif cert_file:
            creds = {"client-certificate": cert_file, "client-key": cert_file}
        else:
            creds = {"client-certificate-data": b64(cert_pem), "client-key-data": b64(key_pem)}
        ctx = "%s@%s" % (user, cluster)
        cfg.update(contexts=[{"name": ctx, "context": {"cluster": cluster, "user": user}}],
                   **{"current-context": ctx}, users=[{"name": user, "user": creds}])
    return yaml.safe_dump(cfg, sort_keys=False)


def parse_kubeconfig(text):
    """{server, ca_pem, cert_pem, key_pem, token} of the current context (or the first cluster)."""
    cfg = yaml.safe_load(text) or {}
    clusters = {c["name"]: c["cluster"] for c in cfg.get("clusters") or []}
    users = {u["name"]: u.get("user") or {} for u in cfg.get("users") or []}
    ctxs = {c["name"]: c["context"] for c in cfg.get("contexts") or []}
    ctx = ctxs.get(cfg.get("current-context") or "", {})
    cluster = clusters.get(ctx.get("cluster")) or (next(iter(clusters.values())) if clusters else None)
    if not cluster:
        raise StandinError("kubeconfig has no cluster")
    user = users.get(ctx.get("user"), {})

    def creds(data_key, file_key):
        if user.get(data_key):
            return base64.b64decode(user[data_key])
        if user.get(file_key):
            return read_bytes(rooted(user[file_key]))
        return None
    ca = cluster.get("certificate-authority-data")
    return {"server": cluster.get("server"), "ca_pem": base64.b64decode(ca) if ca else None,
            "cert_pem": creds("client-certificate-data", "client-certificate"),
            "key_pem": creds("client-key-data", "client-key"), "token": user.get("token")}


# ---------------------------------------------------------------- HTTPS client

class ApiError(StandinError):
    def __init__(self, status, message, reason="", server_message="", details=None):
        super().__init__(message)
        self.status = status
        self.reason = reason  # the Status object's reason (NotFound, Invalid, Conflict, ...)
        self.server_message = server_message  # its message, as kubectl prints it
        self.details = details or {}  # its details (kind, name, causes)


class ApiClient:
    """Minimal Kubernetes-style HTTPS client.  ca_pem None = no server verification
    (only used for the first, insecure cluster-info fetch of token discovery)."""

    def __init__(self, server, ca_pem=None, cert_pem=None, key_pem=None, token=None, timeout=10):
        m = re.match(r"^https://(.+?)/*$", server or "")
        if not m:
            raise StandinError("invalid API server URL %r" % server)
        self.host, self.port = split_host_port(m.group(1), 443)
        self.token, self.timeout = token, timeout
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if ca_pem is None:
            ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        else:
            ctx.load_verify_locations(cadata=ca_pem.decode())
        if cert_pem:
            with tempfile.NamedTemporaryFile("wb") as f:  # ssl only loads key material from files
                os.fchmod(f.fileno(), 0o600)
                f.write(cert_pem + b"\n" + key_pem)
                f.flush()
                ctx.load_cert_chain(f.name)
        self.ctx = ctx

    def request(self, method, path, body=None, content_type="application/json"):
        conn = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=self.timeout)
        # client-go's default: the program's name first (the API server's default field manager).
        agent = os.path.basename(sys.argv[0] or "standin") or "standin"
        headers = {"Accept": "application/json", "User-Agent": "%s/%s (linux/amd64) kubernetes/standin" % (agent, standin_version())}
        if body is not None:
            headers["Content-Type"] = content_type
            body = json.dumps(body)
        if self.token:
            headers["Authorization"] = "Bearer " + self.token
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        except ssl.SSLCertVerificationError as e:
            raise StandinError("tls: failed to verify certificate: %s" % e.verify_message)
        except (OSError, http.client.HTTPException) as e:
            raise StandinError("%s https://%s:%d%s: %s" % (method, self.host, self.port, path, e))
        finally:
            conn.close()
        try:
            obj = json.loads(data) if data else {}
        except ValueError:
            obj = {"message": data.decode(errors="replace")}
        if resp.status >= 400:
            raise ApiError(resp.status, "%s %s: %d %s" % (method, path, resp.status, obj.get("message", "")),
                           obj.get("reason", ""), obj.get("message", ""), obj.get("details"))
        return obj


# ---------------------------------------------------------------- etcd (real, via etcdctl)

class Etcd:
    """etcd v3 access over mTLS through etcd's own JSON gateway (POST /v3/kv/...), the same RPCs
    etcdctl makes, without a process per request: like a real kube-apiserver, which keeps its etcd
    client and its credentials (read once, here into the TLS context) for its whole life."""

    def __init__(self, endpoints, cacert, cert, key):
        self.endpoints = list(endpoints)
        self.tls = ssl.create_default_context(cafile=cacert)
        self.tls.load_cert_chain(cert, key)
        self._next = 0

    def _call(self, path, body, endpoints=None, timeout=8.0):
        """The gateway's JSON answer from the first endpoint that gives one, in turn from the
        last that answered (as etcdctl's balancer moves on from a dead member). Reads are tried
        again until `timeout` (as etcd's Go client retries a read on "leader changed" or a member
        going away); a write is tried once on each endpoint."""
        eps = endpoints or self.endpoints
        deadline = time.monotonic() + timeout
        while True:
            start = self._next % len(eps)
            errors = []
            for i in range(len(eps)):
                ep = eps[(start + i) % len(eps)]
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    data = self._post(ep, path, body, left)
                except StandinError as e:
                    errors.append("%s: %s" % (ep, e))
                    continue
                if endpoints is None:
                    self._next = (start + i) % len(eps)
                return data
            if path != "/v3/kv/range" or time.monotonic() + 0.1 >= deadline:
                raise StandinError("etcd %s: %s" % (path, "; ".join(errors) or "timed out"))
            time.sleep(0.1)

    def _post(self, ep, path, body, timeout):
        u = urllib.parse.urlsplit(ep)
        conn = http.client.HTTPSConnection(u.hostname, u.port or 2379, timeout=timeout, context=self.tls)
        try:
            conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = json.loads(resp.read() or b"{}")
        except (OSError, ValueError, http.client.HTTPException) as e:
            raise StandinError(str(e))
        finally:
            conn.close()
        if resp.status != 200:
            # A gRPC status through the gateway: "etcdserver: leader changed", "no leader", ...
            raise StandinError(data.get("message") or data.get("error") or "HTTP %d" % resp.status)
        return data

    @staticmethod
    def _b64(b):
        return base64.b64encode(b if isinstance(b, bytes) else b.encode()).decode()

    @staticmethod
    def _prefix_end(prefix):
        """etcd's range end for a prefix: the prefix with its last byte incremented."""
        b = bytearray(prefix.encode())
        while b and b[-1] == 0xFF:
            b.pop()
        if b:
            b[-1] += 1
        return bytes(b) or b"\0"

    def get_prefix(self, prefix):
        """[(key, value bytes, mod_revision)] under prefix."""
        out = self._call("/v3/kv/range", {"key": self._b64(prefix), "range_end": self._b64(self._prefix_end(prefix))})
        return [(base64.b64decode(kv["key"]).decode(), base64.b64decode(kv.get("value", "")), int(kv["mod_revision"]))
                for kv in out.get("kvs") or []]

    def get(self, key):
        """(value bytes, mod_revision) or (None, None)."""
        kvs = self._call("/v3/kv/range", {"key": self._b64(key)}).get("kvs") or []
        if not kvs:
            return None, None
        return base64.b64decode(kvs[0].get("value", "")), int(kvs[0]["mod_revision"])

    def put(self, key, value):
        """Stores value (any bytes); returns the revision."""
        out = self._call("/v3/kv/put", {"key": self._b64(key), "value": self._b64(value)})
        return int(out["header"]["revision"])

    def delete(self, key):
        return int(self._call("/v3/kv/deleterange", {"key": self._b64(key)}).get("deleted", 0))

    def health(self):
        """(healthy?, per-endpoint text).  Healthy when at least one endpoint answers a
        linearizable read, i.e. the cluster has quorum (what an apiserver's etcd check asks).
        Endpoints are probed in parallel with short timeouts so /readyz answers fast."""
        def probe(ep):
            try:
                self._call("/v3/kv/range", {"key": self._b64("health")}, endpoints=[ep], timeout=2.0)
                return True, "%s is healthy" % ep
            except StandinError as e:
                return False, "%s is unhealthy: %s" % (ep, e)
        # Answer as soon as one member commits: a dead member must not slow /readyz down
        # (load balancers probe it every second or two).
        pool = concurrent.futures.ThreadPoolExecutor(len(self.endpoints))
        results = []
        for f in concurrent.futures.as_completed([pool.submit(probe, ep) for ep in self.endpoints]):
            results.append(f.result())
            if results[-1][0]:
                break
        pool.shutdown(wait=False)
        return any(ok for ok, _ in results), "\n".join(text for _, text in results)


# ---------------------------------------------------------------- API objects

def registry_key(resource, namespace, name):
    """Where the stand-in API server keeps objects in etcd (same prefixes as Kubernetes,
    but JSON instead of protobuf)."""
    if resource == "nodes":
        return "/registry/minions/%s" % name
    return "/registry/%s/%s/%s" % (resource, namespace, name)


def bootstrap_token_secret(token, ttl=None, expires=None, usages=None, groups=None, description=None):
    """A kube-system Secret of type bootstrap.kubernetes.io/token, as kubeadm creates it."""
    m = TOKEN_RE.match(token)
    if not m:
        raise StandinError("the bootstrap token \"%s\" was not of the form \"%s\"" % (token, r"\A([a-z0-9]{6})\.([a-z0-9]{16})\z"))
    tid, tsecret = m.groups()
    b = lambda s: base64.b64encode(s.encode()).decode()
    data = {"token-id": b(tid), "token-secret": b(tsecret)}
    if expires is None and ttl is None:
        ttl = "24h"
    if expires is None and parse_duration(ttl) > 0:
        expires = rfc3339(now() + dt.timedelta(seconds=parse_duration(ttl)))
    if expires:
        data["expiration"] = b(expires)
    for u in usages if usages is not None else ["signing", "authentication"]:
        data["usage-bootstrap-" + u] = b("true")
    data["auth-extra-groups"] = b(",".join(groups if groups is not None else [DEFAULT_TOKEN_GROUP]))
    if description:
        data["description"] = b(description)
    return {"apiVersion": "v1", "kind": "Secret", "type": "bootstrap.kubernetes.io/token",
            "metadata": {"name": "bootstrap-token-" + tid, "namespace": "kube-system"}, "data": data}


def decode_token_secret(obj):
    """{id, secret, expiration (datetime|None), usages, groups, description} from a Secret object."""
    data = {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}
    exp = data.get("expiration")
    return {"id": data.get("token-id"), "secret": data.get("token-secret"),
            "expiration": parse_rfc3339(exp) if exp else None,
            "usages": sorted(k[len("usage-bootstrap-"):] for k, v in data.items() if k.startswith("usage-bootstrap-") and v == "true"),
            "groups": [g for g in data.get("auth-extra-groups", "").split(",") if g],
            "description": data.get("description", "")}


def token_valid(tok, usage):
    return usage in tok["usages"] and (tok["expiration"] is None or tok["expiration"] > now())


def generate_token():
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    pick = lambda n: "".join(secrets.choice(alphabet) for _ in range(n))
    return pick(6) + "." + pick(16)


def _b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def jws_detached(token_id, token_secret, payload):
    """The detached HS256 JWS the bootstrap signer puts into cluster-info as
    jws-kubeconfig-<id> (header..signature, payload left out)."""
    header = _b64url(json.dumps({"alg": "HS256", "kid": token_id}, separators=(",", ":")).encode())
    signing_input = (header + "." + _b64url(payload.encode())).encode()
    sig = hmac.new(token_secret.encode(), signing_input, hashlib.sha256).digest()
    return header + ".." + _b64url(sig)


def jws_verify(detached, token_id, token_secret, payload):
    return hmac.compare_digest(detached, jws_detached(token_id, token_secret, payload))


def status_object(code, reason, message):
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


# ---------------------------------------------------------------- built-in object schemas

# The fields of the built-in kinds kbs applies (k8s.io/api types), for strict field validation
# (fieldValidation=Strict, kubectl's default) and the API server's validation. Types: "string",
# "int", "bool", "quantity", "intstr", "any", ("map", T), ("list", T) or a dict of fields.
_LABEL_SELECTOR = {"matchLabels": ("map", "string"),
                   "matchExpressions": ("list", {"key": "string", "operator": "string", "values": ("list", "string")})}
_OBJECT_META = {"name": "string", "generateName": "string", "namespace": "string", "uid": "string",
                "resourceVersion": "string", "generation": "int", "creationTimestamp": "string",
                "deletionTimestamp": "string", "deletionGracePeriodSeconds": "int", "labels": ("map", "string"),
                "annotations": ("map", "string"), "ownerReferences": ("list", "any"), "finalizers": ("list", "string"),
                "managedFields": ("list", "any"), "selfLink": "string"}
_NP_PEER = {"podSelector": _LABEL_SELECTOR, "namespaceSelector": _LABEL_SELECTOR,
            "ipBlock": {"cidr": "string", "except": ("list", "string")}}
_NP_PORT = {"protocol": "string", "port": "intstr", "endPort": "int"}
_RESOURCES = ("map", "quantity")
SCHEMAS = {
    ("v1", "Namespace"): {"spec": {"finalizers": ("list", "string")},
                          "status": {"phase": "string", "conditions": ("list", "any")}},
    ("v1", "ResourceQuota"): {"spec": {"hard": _RESOURCES, "scopes": ("list", "string"),
                                       "scopeSelector": {"matchExpressions": ("list", {
                                           "scopeName": "string", "operator": "string", "values": ("list", "string")})}},
                              "status": {"hard": _RESOURCES, "used": _RESOURCES}},
    ("v1", "LimitRange"): {"spec": {"limits": ("list", {
        "type": "string", "max": _RESOURCES, "min": _RESOURCES, "default": _RESOURCES,
        "defaultRequest": _RESOURCES, "maxLimitRequestRatio": _RESOURCES})}},
    ("networking.k8s.io/v1", "NetworkPolicy"): {"spec": {
        "podSelector": _LABEL_SELECTOR, "policyTypes": ("list", "string"),
        "ingress": ("list", {"from": ("list", _NP_PEER), "ports": ("list", _NP_PORT)}),
        "egress": ("list", {"to": ("list", _NP_PEER), "ports": ("list", _NP_PORT)})}},
}
# resource.Quantity's regular expression, with the suffixes it accepts.
QUANTITY_RE = re.compile(r"^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+|Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?$")
_SUFFIX = {"": 1, "n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
           "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}


def quantity_value(q):
    """A resource.Quantity as a float (only for comparisons), or None if it is not one."""
    s = str(q)
    if isinstance(q, bool) or not QUANTITY_RE.match(s):
        return None
    m = re.match(r"^([+-]?[0-9.]+)([eE][+-]?[0-9]+)?([a-zA-Z]*)$", s)
    return float(m.group(1) + (m.group(2) or "")) * _SUFFIX[m.group(3)]


def _walk(value, typ, path, unknown, invalid):
    if value is None:
        return
    if typ == "any":
        return
    if isinstance(typ, tuple):
        kind, inner = typ
        if kind == "map":
            if not isinstance(value, dict):
                return invalid.append("%s: Invalid value: must be an object" % path)
            for k, v in value.items():
                _walk(v, inner, "%s[%s]" % (path, k), unknown, invalid)
        else:
            if not isinstance(value, list):
                return invalid.append("%s: Invalid value: must be a list" % path)
            for i, v in enumerate(value):
                _walk(v, inner, "%s[%d]" % (path, i), unknown, invalid)
        return
    if isinstance(typ, dict):
        if not isinstance(value, dict):
            return invalid.append("%s: Invalid value: must be an object" % path)
        for k, v in value.items():
            if k not in typ:
                unknown.append("%s.%s" % (path, k) if path else k)
            else:
                _walk(v, typ[k], "%s.%s" % (path, k) if path else k, unknown, invalid)
        return
    ok = {"string": lambda v: isinstance(v, str), "bool": lambda v: isinstance(v, bool),
          "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
          "intstr": lambda v: isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool)),
          "quantity": lambda v: quantity_value(v) is not None}[typ](value)
    if not ok:
        if typ == "quantity":
            invalid.append("%s: Invalid value: %s: quantities must match the regular expression "
                           "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'" % (path, json.dumps(value)))
        else:
            invalid.append("%s: Invalid value: %s: must be of type %s" % (path, json.dumps(value), typ))


def _selector_errors(sel, path):
    errs = []
    for i, e in enumerate((sel or {}).get("matchExpressions") or []):
        op, p = e.get("operator"), "%s.matchExpressions[%d]" % (path, i)
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            errs.append('%s.operator: Invalid value: "%s": not a valid selector operator' % (p, op))
        elif op in ("In", "NotIn") and not e.get("values"):
            errs.append("%s.values: Required value: must be specified when `operator` is 'In' or 'NotIn'" % p)
    return errs


def _semantic_errors(kind, obj):
    """The checks of pkg/apis/core/validation and networking/validation kbs's objects can hit."""
    spec, errs = obj.get("spec") or {}, []
    if kind == "Namespace":
        name = obj["metadata"]["name"]
        if not re.match(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", name) or len(name) > 63:
            errs.append('metadata.name: Invalid value: "%s": a lowercase RFC 1123 label must consist of lower case '
                        "alphanumeric characters or '-', and must start and end with an alphanumeric character" % name)
    elif kind == "ResourceQuota":
        for k, v in (spec.get("hard") or {}).items():
            if quantity_value(v) is not None and quantity_value(v) < 0:
                errs.append("spec.hard[%s]: Invalid value: \"%s\": must be greater than or equal to 0" % (k, v))
    elif kind == "LimitRange":
        for i, lim in enumerate(spec.get("limits") or []):
            p, t = "spec.limits[%d]" % i, lim.get("type")
            if t not in ("Container", "Pod", "PersistentVolumeClaim"):
                errs.append('%s.type: Unsupported value: "%s": supported values: "Container", "PersistentVolumeClaim", "Pod"'
                            % (p, t or ""))
            if t == "Pod" and (lim.get("default") or lim.get("defaultRequest")):
                errs.append("%s.default: Forbidden: may not be specified when `type` is 'Pod'" % p)
            for res, req in (lim.get("defaultRequest") or {}).items():
                lim_v = (lim.get("default") or {}).get(res)
                if lim_v is not None and quantity_value(req) is not None and quantity_value(lim_v) is not None \
                        and quantity_value(req) > quantity_value(lim_v):
                    errs.append('%s.defaultRequest[%s]: Invalid value: "%s": must be less than or equal to %s default limit'
                                % (p, res, req, res))
    elif kind == "NetworkPolicy":
        errs += _selector_errors(spec.get("podSelector"), "spec.podSelector")
        types = spec.get("policyTypes") or []
        for i, t in enumerate(types):
            if t not in ("Ingress", "Egress"):
                errs.append('spec.policyTypes[%d]: Unsupported value: "%s": supported values: "Egress", "Ingress"' % (i, t))
        if len(types) > 2:
            errs.append("spec.policyTypes: Invalid value: %s: may not specify more than two policyTypes" % json.dumps(types))
        for direction, peers in (("ingress", "from"), ("egress", "to")):
            for i, rule in enumerate(spec.get(direction) or []):
                p = "spec.%s[%d]" % (direction, i)
                for j, port in enumerate(rule.get("ports") or []):
                    pp = "%s.ports[%d]" % (p, j)
                    if port.get("protocol", "TCP") not in ("TCP", "UDP", "SCTP"):
                        errs.append('%s.protocol: Unsupported value: "%s": supported values: "SCTP", "TCP", "UDP"'
                                    % (pp, port.get("protocol")))
                    n = port.get("port")
                    if isinstance(n, int) and not 1 <= n <= 65535:
                        errs.append("%s.port: Invalid value: %d: must be between 1 and 65535, inclusive" % (pp, n))
                for j, peer in enumerate(rule.get(peers) or []):
                    pp = "%s.%s[%d]" % (p, peers, j)
                    if not any(peer.get(k) is not None for k in ("podSelector", "namespaceSelector", "ipBlock")):
                        errs.append("%s: Required value: must specify a peer" % pp)
                    if peer.get("ipBlock") is not None and not peer["ipBlock"].get("cidr"):
                        errs.append("%s.ipBlock.cidr: Required value" % pp)
                    for sel in ("podSelector", "namespaceSelector"):
                        errs += _selector_errors(peer.get(sel), "%s.%s" % (pp, sel))
    return errs


def validate_builtin(obj):
    """(status, message) of the API server's answer when obj (of a kind in SCHEMAS) is invalid:
    400 for unknown fields (strict decoding), 422 for invalid values; None when it is valid."""
    api, kind = obj.get("apiVersion"), obj.get("kind")
    schema = dict(SCHEMAS[(api, kind)], apiVersion="string", kind="string", metadata=_OBJECT_META)
    unknown, invalid = [], []
    _walk(obj, schema, "", unknown, invalid)
    if unknown:
        return 400, '%s in version "%s" cannot be handled as a %s: strict decoding error: %s' % (
            kind, api.rsplit("/", 1)[-1], kind, ", ".join('unknown field "%s"' % u for u in unknown))
    invalid += _semantic_errors(kind, obj)
    if invalid:
        name = (obj.get("metadata") or {}).get("name", "")
        return 422, '%s "%s" is invalid: [%s]' % (kind, name, ", ".join(invalid))
    return None


# ---------------------------------------------------------------- custom resources (CRDs)

# API groups the stand-in serves as built in (generic storage, discovery from the objects stored);
# any other group is served only through an established CustomResourceDefinition.
BUILTIN_GROUPS = {
    "", "apps", "batch", "autoscaling", "policy", "extensions", "rbac.authorization.k8s.io",
    "networking.k8s.io", "storage.k8s.io", "apiextensions.k8s.io", "admissionregistration.k8s.io",
    "certificates.k8s.io", "coordination.k8s.io", "discovery.k8s.io", "events.k8s.io",
    "scheduling.k8s.io", "node.k8s.io", "flowcontrol.apiserver.k8s.io", "apiregistration.k8s.io",
    "resource.k8s.io", "storagemigration.k8s.io", "internal.apiserver.k8s.io",
    "authentication.k8s.io", "authorization.k8s.io",
}
TOTAL_ANNOTATION_SIZE_LIMIT = 256 * 1024  # apimachinery's TotalAnnotationSizeLimitB
OBJECT_META_FIELDS = set(_OBJECT_META)


def annotations_error(obj):
    """metadata.annotations over 256 KiB in total (keys plus values, in bytes), worded as
    ValidateAnnotations; None when they fit."""
    ann = (obj.get("metadata") or {}).get("annotations") or {}
    total = sum(len(str(k).encode()) + len(str(v).encode()) for k, v in ann.items())
    if total > TOTAL_ANNOTATION_SIZE_LIMIT:
        return "metadata.annotations: Too long: may not be more than %d bytes" % TOTAL_ANNOTATION_SIZE_LIMIT
    return None


def qualified_kind(kind, api_version):
    """`Gateway.gateway.networking.k8s.io`, or just `ConfigMap` for the core group (the
    qualified kind of an `is invalid` message)."""
    group = api_version.rsplit("/", 1)[0] if "/" in (api_version or "") else ""
    return kind + ("." + group if group else "")


def _json_type(v):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


def _go_quote(v):
    """A value as Go's %v / %q prints it in a field error."""
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    return json.dumps(v, sort_keys=True)


def validate_custom(schema, obj, unknown=None):
    """Errors of a custom resource `obj` against a CRD version's openAPIV3Schema, the structural
    subset the stand-in knows (type with format int32/int64, properties, required, items, enum,
    minimum, maximum, minLength, maxLength, pattern, minItems, maxItems, minProperties,
    maxProperties, nullable, x-kubernetes-preserve-unknown-fields, x-kubernetes-int-or-string,
    additionalProperties), worded as
    apiextensions-apiserver reports them (`spec.listeners[0].port: Invalid value: 0: ...`).
    Fields the schema does not know (where unknown fields are not preserved) are appended to
    `unknown` as paths (strict decoding, kubectl's default) when a list is given, else reported as
    `unknown field "PATH"` errors. metadata is ObjectMeta: its field names are checked, not its
    schema. CEL rules (x-kubernetes-validations) are not evaluated. Schema `default:`s are not
    applied."""
    errs = []
    own_unknown = unknown is None
    unknown = [] if own_unknown else unknown

    def walk(s, v, path):
        if not isinstance(s, dict):
            return
        t = s.get("type")
        jt = _json_type(v)
        if v is None:  # only where nullable: prune_nulls drops the others first
            return
        if s.get("x-kubernetes-int-or-string") and jt in ("integer", "string"):
            pass
        elif t and not (jt == t or (t == "number" and jt == "integer")):
            errs.append('%s: Invalid value: "%s": %s in body must be of type %s: "%s"' % (path, jt, path, t, jt))
            return
        if "enum" in s and v not in s["enum"]:
            errs.append("%s: Unsupported value: %s: supported values: %s"
                        % (path, _go_quote(v), ", ".join(_go_quote(e) for e in s["enum"])))
        if jt in ("integer", "number"):
            if t == "integer" and s.get("format") == "int32" and not -2**31 <= v < 2**31:
                errs.append("%s: Invalid value: %s: %s in body must be of type int32: %s" % (path, v, path, _go_quote(v)))
            if "minimum" in s and (v <= s["minimum"] if s.get("exclusiveMinimum") else v < s["minimum"]):
                errs.append("%s: Invalid value: %s: %s in body should be greater than %s%s"
                            % (path, v, path, "" if s.get("exclusiveMinimum") else "or equal to ", s["minimum"]))
            if "maximum" in s and (v >= s["maximum"] if s.get("exclusiveMaximum") else v > s["maximum"]):
                errs.append("%s: Invalid value: %s: %s in body should be less than %s%s"
                            % (path, v, path, "" if s.get("exclusiveMaximum") else "or equal to ", s["maximum"]))
        elif jt == "string":
            n = len(v)  # characters (Go's utf8.RuneCountInString)
            if "minLength" in s and n < s["minLength"]:
                errs.append('%s: Invalid value: %s: %s in body should be at least %d chars long'
                            % (path, _go_quote(v), path, s["minLength"]))
            if "maxLength" in s and n > s["maxLength"]:
                errs.append("%s: Too long: may not be more than %d bytes" % (path, s["maxLength"]))
            if "pattern" in s and not re.search(s["pattern"], v):
                errs.append("%s: Invalid value: %s: %s in body should match '%s'" % (path, _go_quote(v), path, s["pattern"]))
        elif jt == "array":
            if "minItems" in s and len(v) < s["minItems"]:
                errs.append("%s: Invalid value: %d: %s in body should have at least %d items" % (path, len(v), path, s["minItems"]))
            if "maxItems" in s and len(v) > s["maxItems"]:
                errs.append("%s: Too many: %d: must have at most %d items" % (path, len(v), s["maxItems"]))
            for i, item in enumerate(v):
                walk(s.get("items"), item, "%s[%d]" % (path, i))
        elif jt == "object":
            if "minProperties" in s and len(v) < s["minProperties"]:
                errs.append("%s: Invalid value: %d: %s in body should have at least %d properties" % (path, len(v), path, s["minProperties"]))
            if "maxProperties" in s and len(v) > s["maxProperties"]:
                errs.append("%s: Too many: %d: must have at most %d items" % (path, len(v), s["maxProperties"]))
            props = s.get("properties") or {}
            for r in s.get("required") or []:
                if v.get(r, None) is None and not (props.get(r) or {}).get("nullable"):
                    errs.append("%s: Required value" % (path + "." + r if path else r))
            addl = s.get("additionalProperties")
            for k, sub in v.items():
                p = path + "." + k if path else k
                if path == "" and k in ("apiVersion", "kind"):
                    continue
                if path == "" and k == "metadata":
                    if isinstance(sub, dict):
                        unknown.extend("metadata." + f for f in sub if f not in OBJECT_META_FIELDS)
                    continue
                if k in props:
                    walk(props[k], sub, p)
                elif isinstance(addl, dict):
                    walk(addl, sub, p)
                elif addl is True or s.get("x-kubernetes-preserve-unknown-fields"):
                    continue
                else:
                    unknown.append(p)

    walk(schema or {}, obj, "")
    if own_unknown:
        errs = ['unknown field "%s"' % u for u in unknown] + errs
    return errs


def prune_nulls(schema, obj):
    """obj without the nulls of fields that are not nullable: apiextensions drops them before
    defaulting and validation, so a null required field is a missing one."""
    def walk(s, v):
        s = s if isinstance(s, dict) else {}
        if isinstance(v, dict):
            props, addl = s.get("properties") or {}, s.get("additionalProperties")
            out = {}
            for k, sub in v.items():
                ks = props.get(k) if k in props else (addl if isinstance(addl, dict) else {})
                if sub is None and not ks.get("nullable"):
                    continue
                out[k] = walk(ks, sub)
            return out
        if isinstance(v, list):
            return [walk(s.get("items"), i) for i in v]
        return v
    return walk(schema or {}, obj)


def crd_version(crd, version):
    """The CRD's entry for `version` (a dict) or None."""
    for v in dig(crd, "spec", "versions", default=None) or []:
        if v.get("name") == version:
            return v
    return None


def crd_errors(crd):
    """What the API server refuses in a CustomResourceDefinition (the parts kbs can get wrong):
    the name, the names, versions with a schema and exactly one storage version."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    name = (crd.get("metadata") or {}).get("name", "")
    errs = []
    want = "%s.%s" % (names.get("plural", ""), spec.get("group", ""))
    if name != want:
        errs.append('metadata.name: Invalid value: "%s": must be spec.names.plural+"."+spec.group' % name)
    if not spec.get("group"):
        errs.append("spec.group: Required value")
    for f in ("plural", "kind"):
        if not names.get(f):
            errs.append("spec.names.%s: Required value" % f)
    if spec.get("scope") not in ("Cluster", "Namespaced"):
        errs.append('spec.scope: Unsupported value: %s: supported values: "Cluster", "Namespaced"' % _go_quote(spec.get("scope", "")))
    versions = spec.get("versions") or []
    if not versions:
        errs.append("spec.versions: Invalid value: null: must have exactly one version marked as storage version")
    for i, v in enumerate(versions):
        if not dig(v, "schema", "openAPIV3Schema", default=None):
            errs.append("spec.versions[%d].schema.openAPIV3Schema: Required value: schemas are required" % i)
    storage = [v for v in versions if v.get("storage")]
    if versions and len(storage) != 1:
        errs.append("spec.versions: Invalid value: %s: must have exactly one version marked as storage version"
                    % json.dumps(versions, separators=(",", ":"))[:200])
    return errs


def crd_status(crd, old_status=None):
    """The status the API server (and its naming/establishing controllers) gives an accepted CRD."""
    spec = crd.get("spec") or {}
    stored = list((old_status or {}).get("storedVersions") or [])
    for v in spec.get("versions") or []:
        if v.get("storage") and v.get("name") not in stored:
            stored.append(v["name"])
    t = rfc3339(now())
    return {"acceptedNames": dict(spec.get("names") or {}),
            "conditions": [{"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
                            "message": "no conflicts found", "lastTransitionTime": t},
                           {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                            "message": "the initial names have been accepted", "lastTransitionTime": t}],
            "storedVersions": stored}


def crd_established(crd):
    return any(cnd.get("type") == "Established" and cnd.get("status") == "True"
               for cnd in dig(crd, "status", "conditions", default=None) or [])


# ---------------------------------------------------------------- server-side apply's field sets

SERVER_SET_META = ("name", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp",
                   "managedFields", "selfLink", "deletionTimestamp")


def field_paths(obj):
    """The leaf paths (tuples of keys) an object sets: maps are walked, anything else (scalars,
    lists: atomic here) is a leaf. apiVersion, kind and the metadata the server owns are left out,
    as in managedFields."""
    out = set()

    def walk(v, path):
        if isinstance(v, dict) and v:
            for k, sub in v.items():
                walk(sub, path + (k,))
        else:
            out.add(path)

    for k, v in obj.items():
        if k in ("apiVersion", "kind", "status"):
            continue
        if k == "metadata":
            for mk, mv in (v or {}).items():
                if mk not in SERVER_SET_META:
                    walk(mv, ("metadata", mk))
            continue
        walk(v, (k,))
    return out


def fields_v1(paths):
    """A set of leaf paths as managedFields' FieldsV1 ({"f:spec": {"f:x": {}}})."""
    root = {}
    for p in sorted(paths):
        node = root
        for k in p:
            node = node.setdefault("f:" + k, {})
    return root


def paths_of_fields_v1(f, prefix=()):
    out = set()
    for k, v in (f or {}).items():
        if not k.startswith("f:"):
            continue
        p = prefix + (k[2:],)
        if v:
            out |= paths_of_fields_v1(v, p)
        else:
            out.add(p)
    return out


def get_path(obj, path):
    for k in path:
        if not isinstance(obj, dict) or k not in obj:
            return _MISSING
        obj = obj[k]
    return obj


def remove_path(obj, path):
    """Removes the leaf at path and the maps it leaves empty."""
    parents = []
    node = obj
    for k in path[:-1]:
        if not isinstance(node, dict) or k not in node:
            return
        parents.append((node, k))
        node = node[k]
    if isinstance(node, dict):
        node.pop(path[-1], None)
    for parent, k in reversed(parents):
        if parent[k] == {}:
            del parent[k]
        else:
            break


_MISSING = object()


def deep_merge(live, applied):
    """Server-side apply's merge, simplified: maps merge key by key, lists and scalars replace."""
    if not isinstance(live, dict) or not isinstance(applied, dict):
        return json.loads(json.dumps(applied))
    out = dict(live)
    for k, v in applied.items():
        out[k] = deep_merge(live.get(k), v)
    return out


class ApplyConflict(Exception):
    def __init__(self, conflicts):
        super().__init__(conflicts)
        self.conflicts = conflicts  # [(managedFields entry with its "paths", path)]


def _managers(live):
    """[{manager, operation, apiVersion, time, paths}] from live metadata.managedFields."""
    out = []
    for e in (live or {}).get("metadata", {}).get("managedFields") or []:
        out.append(dict(e, paths=paths_of_fields_v1(e.get("fieldsV1"))))
    return out


def _entries(managers):
    return [{k: v for k, v in dict(m, fieldsV1=fields_v1(m["paths"])).items() if k != "paths"}
            for m in managers if m["paths"]]


def _touch(managers, manager, operation, api_version, paths):
    for m in managers:
        if m.get("manager") == manager and m.get("operation") == operation:
            m.update(paths=set(paths), apiVersion=api_version, time=rfc3339(now()))
            return
    managers.append({"manager": manager, "operation": operation, "apiVersion": api_version,
                     "time": rfc3339(now()), "fieldsType": "FieldsV1", "paths": set(paths)})


def server_side_apply(live, applied, manager, force):
    """The object after `manager` applies `applied` to `live` (None: created): the applied
    configuration merged in, the fields this manager applied before and no longer applies removed
    (unless another manager owns them too), managedFields updated. Raises ApplyConflict when a
    field another manager owns would get another value and force is off."""
    api_version = applied.get("apiVersion", "")
    new_paths = field_paths(applied)
    managers = _managers(live)
    mine = next((m for m in managers if m.get("manager") == manager and m.get("operation") == "Apply"), None)
    prev = mine["paths"] if mine else set()
    conflicts = []
    for m in managers:
        if m is mine:
            continue
        for p in sorted(m["paths"] & new_paths):
            if live is not None and get_path(live, p) != get_path(applied, p):
                conflicts.append((m, p))
    if conflicts and not force:
        raise ApplyConflict(conflicts)
    for m, p in conflicts:
        m["paths"].discard(p)
    result = deep_merge(live or {}, applied)
    others = set().union(*[m["paths"] for m in managers if m is not mine]) if managers else set()
    for p in prev - new_paths:
        if p not in others:
            remove_path(result, p)
    _touch(managers, manager, "Apply", api_version, new_paths)
    result.setdefault("metadata", {})["managedFields"] = _entries(managers)
    return result


def record_update(old, new, manager):
    """managedFields of `new` after an Update by `manager` (PUT, POST, merge patch): the fields it
    set or changed become its own (and no longer anyone else's); removed fields are nobody's."""
    managers = _managers(old)
    new_paths = field_paths(new)
    changed = {p for p in new_paths if old is None or get_path(old, p) != get_path(new, p)}
    for m in managers:
        m["paths"] = {p for p in m["paths"] - changed if p in new_paths}
    mine = next((m for m in managers if m.get("manager") == manager and m.get("operation") == "Update"), None)
    if changed or mine:
        _touch(managers, manager, "Update", new.get("apiVersion", ""), (mine["paths"] if mine else set()) | changed)
    entries = _entries(managers)
    meta = new.setdefault("metadata", {})
    if entries:
        meta["managedFields"] = entries
    else:
        meta.pop("managedFields", None)
    return new
