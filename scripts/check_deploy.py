#!/usr/bin/env python3
"""Static checks of the deployment kit (no Docker or Kubernetes here):
every YAML file parses, the ConfigMap's myriad.toml passes `myriad config check`,
the Grafana dashboard is valid JSON, and every myriad_* metric the dashboard and
the alert rules use is one the server defines (src/metrics.rs)."""
import glob, json, re, subprocess, sys, tempfile, pathlib

import yaml

root = pathlib.Path(__file__).resolve().parent.parent
myriad = sys.argv[1] if len(sys.argv) > 1 else str(root / "target/debug/myriad")
failures = []

for path in sorted(glob.glob(str(root / "deploy/**/*.y*ml"), recursive=True)):
    try:
        list(yaml.safe_load_all(open(path)))
    except yaml.YAMLError as e:
        failures.append(f"{path}: {e}")

cm = yaml.safe_load(open(root / "deploy/k8s/configmap.yaml"))
with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
    f.write(cm["data"]["myriad.toml"])
r = subprocess.run([myriad, "config", "check", f.name], capture_output=True, text=True)
if r.returncode != 0:
    failures.append(f"configmap myriad.toml: {r.stdout}{r.stderr}")

dashboard = json.load(open(root / "deploy/grafana/myriad.json"))
used = set()
for panel in dashboard["panels"]:
    for t in panel["targets"]:
        used |= set(re.findall(r"myriad_[a-z_]+", t["expr"]))
rules = (root / "deploy/prometheus/rules.yml").read_text()
used |= set(re.findall(r"myriad_[a-z_]+", rules))
defined = set(re.findall(r'"(myriad_[a-z_]+)"', (root / "src/metrics.rs").read_text()))
for name in sorted(used):
    base = re.sub(r"_(bucket|sum|count)$", "", name)
    if name not in defined and base not in defined and not name.startswith("myriad:"):
        failures.append(f"metric {name} is used by the dashboard or rules but not defined")

if failures:
    print("\n".join(failures))
    sys.exit(1)
print(f"deploy kit ok: {len(used)} metrics used, all defined")
