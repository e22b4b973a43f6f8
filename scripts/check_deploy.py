#!/usr/bin/env python3
"""Static checks of the deployment kit (no Docker or Kubernetes here):
every YAML file parses, the ConfigMap's myriad.toml passes `myriad config check`,
the Grafana dashboard is valid JSON, every myriad_* metric the dashboard and
the alert rules use is one the server defines (src/metrics.rs), and the
Kubernetes manifests validate against the API schemas and the Pod Security
Standards "restricted" level. The Helm chart (deploy/helm/myriad) is linted and
rendered with its defaults and with every option on (`helm` from $HELM, which
scripts/test.sh installs), and what it renders passes the same checks."""
import glob, json, os, re, subprocess, sys, tempfile, pathlib

import yaml

root = pathlib.Path(__file__).resolve().parent.parent
myriad = sys.argv[1] if len(sys.argv) > 1 else str(root / "target/debug/myriad")
failures = []

for path in sorted(glob.glob(str(root / "deploy/**/*.y*ml"), recursive=True)):
    if "/templates/" in path:
        continue  # Helm templates are YAML only once rendered (below)
    try:
        list(yaml.safe_load_all(open(path)))
    except yaml.YAMLError as e:
        failures.append(f"{path}: {e}")

def config_check(where, cm):
    """The ConfigMap's myriad.toml must pass `myriad config check`."""
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(cm["data"]["myriad.toml"])
    r = subprocess.run([myriad, "config", "check", f.name], capture_output=True, text=True)
    os.unlink(f.name)
    if r.returncode != 0:
        failures.append(f"{where} myriad.toml: {r.stdout}{r.stderr}")

config_check("configmap", yaml.safe_load(open(root / "deploy/k8s/configmap.yaml")))

dashboard = json.load(open(root / "deploy/grafana/myriad.json"))
used = set()
variables = {v["name"] for v in dashboard.get("templating", {}).get("list", [])}
if not {"datasource", "instance"} <= variables:
    failures.append("dashboard: needs the datasource and instance variables")
for panel in dashboard["panels"]:
    if panel.get("datasource", {}).get("uid") != "${datasource}":
        failures.append(f"dashboard panel {panel['title']!r}: data source must be ${{datasource}}, not a fixed uid")
    for t in panel["targets"]:
        used |= set(re.findall(r"myriad_[a-z_]+", t["expr"]))
        if not t.get("legendFormat"):
            failures.append(f"dashboard panel {panel['title']!r}: query {t['refId']} has no legend")
        if "myriad_" in t["expr"] and "$instance" not in t["expr"]:
            failures.append(f"dashboard panel {panel['title']!r}: query {t['refId']} ignores $instance")
rules = (root / "deploy/prometheus/rules.yml").read_text()
used |= set(re.findall(r"myriad_[a-z_]+", rules))
defined = set(re.findall(r'"(myriad_[a-z_]+)"', (root / "src/metrics.rs").read_text()))
for name in sorted(used):
    base = re.sub(r"_(bucket|sum|count)$", "", name)
    if name not in defined and base not in defined and not name.startswith("myriad:"):
        failures.append(f"metric {name} is used by the dashboard or rules but not defined")

# Kubernetes: every manifest against the API schemas (kubernetes-validate,
# installed by scripts/test.sh), the kustomizations' files exist, and the
# workloads meet the Pod Security Standards "restricted" level.
k8s = root / "deploy/k8s"
objects = []
for path in sorted(k8s.rglob("*.yaml")):
    for doc in yaml.safe_load_all(open(path)):
        if not doc:
            continue
        kind = doc.get("kind")
        if kind in ("Kustomization", "Component"):
            for ref in doc.get("resources", []) + doc.get("components", []):
                if not (path.parent / ref).exists():
                    failures.append(f"{path}: lists {ref}, which does not exist")
            continue
        objects.append((path, doc))
if "servicemonitor.yaml" in (k8s / "kustomization.yaml").read_text():
    failures.append("the base kustomization must not need the Prometheus Operator's CRDs")
try:
    import kubernetes_validate
except ImportError:
    kubernetes_validate = None
    failures.append("kubernetes-validate is not installed (scripts/test.sh installs it)")
def validate(where, doc):
    """One object against the Kubernetes 1.30 API schemas."""
    if kubernetes_validate is None or doc["apiVersion"].startswith("monitoring.coreos.com"):
        return
    try:
        kubernetes_validate.validate(doc, "1.30.0", strict=True)
    except kubernetes_validate.ValidationError as e:
        failures.append(f"{where}: {doc['kind']}: {e.message} at {list(e.path)}")
    except Exception as e:  # the validator's other errors name the schema
        failures.append(f"{where}: {doc['kind']}: {e}")

SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range",
                "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range",
                "net.ipv4.ip_unprivileged_port_start"}

def restricted(where, doc):
    """A workload meets the Pod Security Standards "restricted" level."""
    if doc["kind"] not in ("Deployment", "StatefulSet"):
        return
    pod = doc["spec"]["template"]["spec"]
    psc = pod.get("securityContext", {})
    name = f"{where}: {doc['kind']} {doc['metadata']['name']}"
    if psc.get("runAsNonRoot") is not True:
        failures.append(f"{name}: restricted needs runAsNonRoot")
    if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        failures.append(f"{name}: restricted needs seccompProfile RuntimeDefault")
    for sc in psc.get("sysctls", []):
        if sc["name"] not in SAFE_SYSCTLS:
            failures.append(f"{name}: sysctl {sc['name']} is not on Kubernetes' safe list")
    for c in pod["containers"]:
        csc = c.get("securityContext", {})
        if csc.get("allowPrivilegeEscalation") is not False:
            failures.append(f"{name}/{c['name']}: restricted needs allowPrivilegeEscalation: false")
        if "ALL" not in csc.get("capabilities", {}).get("drop", []):
            failures.append(f"{name}/{c['name']}: restricted drops ALL capabilities")
        if csc.get("readOnlyRootFilesystem") is not True:
            failures.append(f"{name}/{c['name']}: the root file system should be read-only")

for path, doc in objects:
    validate(path, doc)
    restricted(path.name, doc)
# The tuned-sysctls component appends to the base's sysctls list.
base = next(d for p, d in objects if d["kind"] == "Deployment" and d["metadata"]["name"] == "myriad")
if not isinstance(base["spec"]["template"]["spec"]["securityContext"].get("sysctls"), list):
    failures.append("deployment.yaml: components/tuned-sysctls appends to securityContext.sysctls, which must exist")

# The Helm chart: lint, then render with the defaults and with every option
# on; each rendering must validate, stay "restricted" and carry a myriad.toml
# that `config check` accepts. Turning tunedSysctls on must add the two
# accept-queue sysctls (and is then, by design, not "restricted").
chart = root / "deploy/helm/myriad"
helm = os.environ.get("HELM", "helm")
rendered = 0

def render(where, *args):
    r = subprocess.run([helm, "template", "myriad", str(chart), *args], capture_output=True, text=True)
    if r.returncode != 0:
        failures.append(f"helm template {where}: {r.stderr}")
        return []
    return [d for d in yaml.safe_load_all(r.stdout) if d]

try:
    lint = subprocess.run([helm, "lint", "--strict", str(chart)], capture_output=True, text=True)
except FileNotFoundError:
    lint = None
    failures.append(f"helm not found at {helm!r} (scripts/test.sh installs it and sets $HELM)")
if lint is not None:
    if lint.returncode != 0:
        failures.append(f"helm lint: {lint.stdout}{lint.stderr}")
    for where, args in [("defaults", []),
                        ("all options", ["-f", str(chart / "ci/all-options-values.yaml")])]:
        docs = render(where, *args)
        kinds = sorted(d["kind"] for d in docs)
        for doc in docs:
            validate(f"helm ({where})", doc)
            restricted(f"helm ({where})", doc)
            if doc["kind"] == "ConfigMap":
                config_check(f"helm ({where}) ConfigMap", doc)
        rendered += len(docs)
        expected = {"defaults": ["ConfigMap", "Deployment", "PodDisruptionBudget", "Service"],
                    "all options": ["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "Ingress",
                                    "PodDisruptionBudget", "Secret", "Service", "ServiceMonitor"]}[where]
        if kinds != expected:
            failures.append(f"helm ({where}) rendered {kinds}, expected {expected}")
    tuned = render("tuned sysctls", "--set", "tunedSysctls.enabled=true")
    for doc in tuned:
        validate("helm (tuned sysctls)", doc)
        if doc["kind"] == "Deployment":
            names = {sc["name"] for sc in doc["spec"]["template"]["spec"]["securityContext"]["sysctls"]}
            if not {"net.core.somaxconn", "net.ipv4.tcp_max_syn_backlog"} <= names:
                failures.append(f"helm (tuned sysctls): sysctls are {sorted(names)}")

if failures:
    print("\n".join(failures))
    sys.exit(1)
print(f"deploy kit ok: {len(used)} metrics used, all defined; {len(objects)} Kubernetes objects valid; "
      f"helm chart: {rendered} rendered objects valid")
