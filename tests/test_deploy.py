"""deploy/ checked by the real tools: promtool (configs, rules, rule unit
tests, dashboard queries), amtool (config and routing), docker-compose
(compose file), kubernetes-validate (manifests against the Kubernetes
schemas), hadolint (Dockerfile); and the health probe the containers run,
against a live sidecar. A missing tool fails with how to install it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from latentwatch.export.metrics import Metrics
from latentwatch.sidecar.server import SidecarThread

from .conftest import make_config

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
RULES = DEPLOY / "prometheus" / "rules" / "latentwatch.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "latentwatch.json"
INSTALL = {
    "promtool": "apt-get install prometheus",
    "amtool": "apt-get install prometheus-alertmanager",
    "docker-compose": "apt-get install --no-install-recommends docker-compose",
    "kubernetes-validate": "pip install -e '.[dev]'",
    "hadolint": "pip install -e '.[dev]'",
}
K8S_VERSIONS = ("1.29.0", "1.37.0")  # oldest and newest Kubernetes the manifests are checked against


def run(tool: str, *args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run a deploy tool (from PATH, or this venv's bin for the PyPI ones); fail if it is not installed."""
    path = shutil.which(tool) or shutil.which(tool, path=str(Path(sys.executable).parent))
    if path is None:
        pytest.fail(f"{tool} is not installed; .ci/run installs it ({INSTALL[tool]})")
    return subprocess.run([path, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=120)


def ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, f"{proc.args}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


# -- Prometheus ------------------------------------------------------------------------------------------------


def test_promtool_checks_config_and_rules():
    out = ok(run("promtool", "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")))
    assert "1 rule files found" in out
    out = ok(run("promtool", "check", "rules", str(RULES)))
    assert "SUCCESS" in out


def test_promtool_rule_unit_tests_pass():
    ok(run("promtool", "test", "rules", str(DEPLOY / "prometheus" / "tests" / "latentwatch_test.yml")))


def test_rule_unit_tests_catch_a_broken_rule(tmp_path):
    """The unit tests are not vacuous: loosen one threshold and they fail."""
    shutil.copytree(DEPLOY / "prometheus", tmp_path / "prometheus")
    rules = tmp_path / "prometheus" / "rules" / "latentwatch.yml"
    text = rules.read_text()
    broken = text.replace(
        "instance:latentwatch_chunk_drop_ratio:rate5m > 0.01", "instance:latentwatch_chunk_drop_ratio:rate5m > 0.1"
    )
    assert broken != text
    rules.write_text(broken)
    proc = run("promtool", "test", "rules", str(tmp_path / "prometheus" / "tests" / "latentwatch_test.yml"))
    assert proc.returncode != 0 and "LatentwatchChunksDropped" in proc.stdout + proc.stderr


def _exported_names() -> set[str]:
    """Every sample name the sidecar's registry can export (labelled children need not exist yet)."""
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""], "info": ["_info"]}
    return {m.name + s for m in Metrics().registry.collect() for s in suffixes[m.type]}


def _latentwatch_names(expr: str) -> set[str]:
    """Raw metric names in a PromQL expression (not recording-rule names, which hold colons)."""
    return set(re.findall(r"(?<![\w:])latentwatch_\w+(?![\w:])", expr))


def _rule_groups() -> list[dict]:
    return yaml.safe_load(RULES.read_text())["groups"]


def test_rules_use_the_sidecars_metric_names():
    exported = _exported_names()
    rules = [r for g in _rule_groups() for r in g["rules"]]
    used = set().union(*(_latentwatch_names(r["expr"]) for r in rules))
    assert used and used <= exported, f"not exported by the sidecar: {sorted(used - exported)}"
    alerts = {r["alert"] for r in rules if "alert" in r}
    assert {
        "LatentwatchHarmfulCompliance",
        "LatentwatchFlagRateAboveBaseline",
        "LatentwatchChunksDropped",
        "LatentwatchSAEReconstructionDrift",
        "LatentwatchSidecarDown",
    } <= alerts


# -- Grafana -------------------------------------------------------------------------------------------------


def _dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def test_dashboard_queries_parse_and_use_real_names(tmp_path):
    dash = json.loads(DASHBOARD.read_text())
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"])
    assert all(p["targets"] and p["gridPos"]["w"] > 0 for p in panels)
    titles = " ".join(p["title"].lower() for p in panels)
    for topic in ("flag", "score", "latency", "dropped", "variance unexplained"):
        assert topic in titles, f"no panel on {topic}"
    exprs = _dashboard_exprs()
    # Grafana's variables replaced by values, then every query parsed by promtool as a recording rule.
    concrete = [
        re.sub(r"\$__rate_interval", "5m", re.sub(r"\$__range", "1h", re.sub(r"\$(detector|instance)", ".*", e)))
        for e in exprs
    ]
    rules = {
        "groups": [
            {"name": "dashboard", "rules": [{"record": f"dashboard:q{i}", "expr": e} for i, e in enumerate(concrete)]}
        ]
    }
    (tmp_path / "dashboard_rules.yml").write_text(yaml.safe_dump(rules))
    out = ok(run("promtool", "check", "rules", str(tmp_path / "dashboard_rules.yml")))
    assert f"{len(exprs)} rules found" in out
    exported = _exported_names()
    used = set().union(*(_latentwatch_names(e) for e in exprs))
    assert used <= exported, f"not exported by the sidecar: {sorted(used - exported)}"
    recorded = {r["record"] for g in _rule_groups() for r in g["rules"] if "record" in r}
    referenced = set().union(*(re.findall(r"\b\w+:latentwatch_\w+:\w+", e) for e in exprs))
    assert referenced and referenced <= recorded, f"recording rules not defined: {sorted(referenced - recorded)}"


def test_grafana_provisioning_points_at_the_dashboards():
    datasource = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards" / "latentwatch.yml").read_text())
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{provider['providers'][0]['options']['path']}:ro" in mounts


# -- Alertmanager ----------------------------------------------------------------------------------------------


def test_amtool_checks_config_and_routes():
    config = str(DEPLOY / "alertmanager" / "alertmanager.yml")
    ok(run("amtool", "check-config", config))

    def receiver(*labels: str) -> str:
        return ok(run("amtool", "config", "routes", "test", f"--config.file={config}", *labels)).strip()

    assert receiver("alertname=LatentwatchHarmfulCompliance", "severity=page") == "latentwatch-oncall"
    assert receiver("alertname=LatentwatchSidecarDown", "severity=critical") == "latentwatch-oncall"
    assert receiver("alertname=LatentwatchChunksDropped", "severity=warning") == "latentwatch-team"


# Who each severity must reach: pages and critical alerts the on-call receiver, warnings the team.
RECEIVER_FOR_SEVERITY = {"page": "latentwatch-oncall", "critical": "latentwatch-oncall", "warning": "latentwatch-team"}


def test_every_alert_rule_routes_to_the_receiver_of_its_severity():
    """Each shipped alert, with its own labels, goes through Alertmanager's routing tree (amtool)
    to the receiver its severity calls for; a severity without a receiver fails."""
    config = str(DEPLOY / "alertmanager" / "alertmanager.yml")
    alerts = [r for g in _rule_groups() for r in g["rules"] if "alert" in r]
    assert alerts
    for rule in alerts:
        severity = rule["labels"]["severity"]
        assert severity in RECEIVER_FOR_SEVERITY, f"{rule['alert']}: no receiver is meant for severity {severity!r}"
        labels = [f"alertname={rule['alert']}"] + [f"{k}={v}" for k, v in rule["labels"].items()]
        got = ok(run("amtool", "config", "routes", "test", f"--config.file={config}", *labels)).strip()
        assert got == RECEIVER_FOR_SEVERITY[severity], (rule["alert"], got)


# -- Compose ---------------------------------------------------------------------------------------------------


def _compose_config(path: Path) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, "GRAFANA_ADMIN_PASSWORD": "checked-by-tests"}
    return run("docker-compose", "-f", str(path), "config", env=env, cwd=path.parent)


def test_compose_file_validates_and_wires_the_socket():
    cfg = yaml.safe_load(ok(_compose_config(DEPLOY / "compose.yaml")))
    services = cfg["services"]
    assert {"vllm", "sidecar", "redis", "prometheus", "alertmanager", "grafana", "alert-consumer"} <= set(services)
    listen = services["sidecar"]["environment"]["LATENTWATCH_LISTEN"]
    assert services["vllm"]["environment"]["LATENTWATCH_VLLM_SIDECAR"] == listen
    socket_dir = str(Path(listen.removeprefix("unix://")).parent)
    for name in ("sidecar", "vllm"):
        assert f"latentwatch-socket:{socket_dir}:rw" in services[name]["volumes"], name
    assert services["sidecar"]["healthcheck"]["test"][-2:] == ["-m", "latentwatch.sidecar.health"]
    assert services["vllm"]["depends_on"]["sidecar"]["condition"] == "service_healthy"
    assert services["alert-consumer"]["healthcheck"]["test"] == ["NONE"]  # same image, no sidecar inside
    for name in ("vllm", "sidecar"):
        assert services[name]["build"]["target"] == name
    published = [p for s in services.values() for p in s.get("ports", [])]
    assert published and all(p.startswith("127.0.0.1:") for p in published), published
    vllm_cmd = services["vllm"]["command"]
    assert (
        vllm_cmd[vllm_cmd.index("--worker-extension-cls") + 1]
        == "latentwatch.integrations.vllm.worker.LatentwatchWorkerExtension"
    )


def test_compose_validation_rejects_a_broken_file(tmp_path):
    text = (DEPLOY / "compose.yaml").read_text().replace("    restart: unless-stopped", "    restrat: always", 1)
    (tmp_path / "compose.yaml").write_text(text)
    proc = _compose_config(tmp_path / "compose.yaml")
    assert proc.returncode != 0 and "restrat" in proc.stderr


# -- Kubernetes ------------------------------------------------------------------------------------------------


def _manifests() -> list[Path]:
    return sorted((DEPLOY / "k8s").glob("*.yaml"))


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_kubernetes_manifests_match_the_schemas(version):
    out = ok(run("kubernetes-validate", "--strict", "-k", version, *map(str, _manifests())))
    assert out.count("passed") == sum(len([d for d in yaml.safe_load_all(p.read_text()) if d]) for p in _manifests())


def test_kubernetes_validation_rejects_a_broken_manifest(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        (DEPLOY / "k8s" / "vllm-latentwatch.yaml").read_text().replace("periodSeconds: 20", "periodSecond: 20")
    )
    proc = run("kubernetes-validate", "--strict", "-k", K8S_VERSIONS[-1], str(bad))
    assert proc.returncode != 0 and "periodSecond" in proc.stdout + proc.stderr


def test_sidecar_pod_shares_the_socket_probes_health_and_is_scraped():
    docs = list(yaml.safe_load_all((DEPLOY / "k8s" / "vllm-latentwatch.yaml").read_text()))
    config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    pod = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]
    containers = {c["name"]: c for c in pod["spec"]["containers"]}
    vllm, sidecar = containers["vllm"], containers["latentwatch-sidecar"]
    env = {e["name"]: e["value"] for e in vllm["env"]}
    assert env["LATENTWATCH_VLLM_SIDECAR"] == config["LATENTWATCH_LISTEN"]
    socket_dir = str(Path(config["LATENTWATCH_LISTEN"].removeprefix("unix://")).parent)
    for c in (vllm, sidecar):
        assert {"name": "latentwatch-socket", "mountPath": socket_dir} in c["volumeMounts"], c["name"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert sidecar[probe]["exec"]["command"] == ["python", "-m", "latentwatch.sidecar.health"], probe
    assert {"cpu", "memory"} <= set(sidecar["resources"]["requests"])
    annotations = pod["metadata"]["annotations"]
    metrics_port = next(p["containerPort"] for p in sidecar["ports"] if p["name"] == "metrics")
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == metrics_port == int(config["LATENTWATCH_METRICS_PORT"])


# -- Dockerfile and the health probe --------------------------------------------------------------------------


def test_dockerfile_lints_and_has_both_targets():
    ok(run("hadolint", str(DEPLOY / "Dockerfile")))
    stages = re.findall(r"^FROM \S+ AS (\w+)", (DEPLOY / "Dockerfile").read_text(), flags=re.M)
    assert {"sidecar", "vllm"} <= set(stages)


def test_health_probe_reports_a_live_sidecar_and_a_missing_one(tmp_path):
    address = f"unix://{tmp_path}/sidecar.sock"
    probe = [sys.executable, "-m", "latentwatch.sidecar.health"]
    env = {"LATENTWATCH_LISTEN": address, "PATH": "/usr/bin:/bin"}  # the probe reads the address like the sidecar
    sc = SidecarThread(make_config(tmp_path, listen=address))
    try:
        up = subprocess.run(probe, capture_output=True, text=True, env=env, timeout=30)
    finally:
        sc.stop()
    assert up.returncode == 0 and "SERVING" in up.stdout, up.stdout + up.stderr
    down = subprocess.run(probe, capture_output=True, text=True, env=env, timeout=30)
    assert down.returncode == 1 and "UNREACHABLE" in down.stdout, down.stdout + down.stderr
