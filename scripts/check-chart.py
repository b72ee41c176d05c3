#!/usr/bin/env python3
"""Checks the pivot Helm chart (deploy/helm/pivot) without a cluster or a helm binary.

    pip install -r scripts/requirements-deploy.txt
    python3 scripts/check-chart.py [--rules-out FILE] [--kube-version 1.30.0] [--pivotd PATH]

For the chart's defaults and each values file under deploy/helm/pivot/ci/:
  - the merged values validate against values.schema.json (jsonschema, draft-07);
  - `helm lint --strict` finds nothing (Helm's Go SDK through helm-python-sdk);
  - the chart renders (`helm template`), and every manifest validates against the Kubernetes
    OpenAPI schemas of --kube-version in strict mode (kubernetes-validate); ServiceMonitor and
    PrometheusRule, which it does not know, against scripts/schemas/*.json;
  - what the chart promises holds: termination grace = preStop + drain grace + margin, probes,
    security context, secret env, pivot.toml keys known to deploy/config.example.toml, the
    switch kind, the outbound socket listener (port, Service), the PrometheusRule equal to
    files/alerts.yaml, dashboards, autoscaler behaviour;
  - with a pivotd binary (--pivotd, or target/{debug,release}/pivotd when built), the rendered
    pivot.toml and environment start a real node: /healthz answers, the admin token from the
    Secret is accepted and a wrong one refused, the outbound socket listener (when enabled)
    greets a connection with `connect`, SIGTERM exits 0. Every address in the config is pointed
    at 127.0.0.1 first, so nothing leaves the machine.
Also: files/alerts.yaml has the expected alerts, labels, annotations and only known metrics
(`promtool check rules` on it when promtool is on PATH); README.md documents every value; and
the negative cases under scripts/testdata/ are rejected (by the schema, the templates' checks or
the manifest validators), which shows the checks can fail. `--self-test` runs only those.

Exit status 0 when everything passes, 1 with one line per failure otherwise.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

try:
    import tomllib  # Python >= 3.11
except ModuleNotFoundError:  # pragma: no cover
    import tomli as tomllib  # type: ignore[no-redef]

try:
    import helm_python as helm
    import jsonschema
    import kubernetes_validate
    import yaml
except ModuleNotFoundError as missing:
    sys.exit(
        f"check-chart: {missing}; install the checks' packages first:\n"
        "  pip install -r scripts/requirements-deploy.txt"
    )

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "deploy" / "helm" / "pivot"
SCHEMAS = ROOT / "scripts" / "schemas"
TESTDATA = ROOT / "scripts" / "testdata"
CONFIG_EXAMPLE = ROOT / "deploy" / "config.example.toml"
RELEASE = "pivot"
NAMESPACE = "voice"

EXPECTED_ALERTS = {
    # name: the `for` the alert must have (None: fires at once)
    "PivotWebhookFailureRatioHigh": "10m",
    "PivotWebhookLatencyP99High": "10m",
    "PivotCallsTakenOver": None,
    "PivotNodeSelfFenced": None,
    "PivotRedisErrors": "5m",
    "PivotSwitchDisconnected": "2m",
}
RUNBOOK = "https://github.com/pivot/pivot/blob/main/deploy/README.md#{anchor}"
# The metrics pivotd exports (DESIGN §9 and crates/pivot-engine/src/metrics.rs).
KNOWN_METRICS = {
    "pivot_webhook_request_duration_seconds": "histogram",
    "pivot_webhook_failures_total": "counter",
    "pivot_calls_active": "gauge",
    "pivot_calls_total": "counter",
    "pivot_call_setup_seconds": "histogram",
    "pivot_flow_steps_total": "counter",
    "pivot_switch_commands_total": "counter",
    "pivot_switch_connected": "gauge",
    "pivot_cluster_claims_total": "counter",
    "pivot_cluster_takeovers_total": "counter",
    "pivot_cluster_fencing_total": "counter",
    "pivot_cluster_redis_errors_total": "counter",
    "pivot_cluster_op_duration_seconds": "histogram",
    "pivot_cdr_posts_total": "counter",
    "pivot_build_info": "gauge",
    "pivot_api_requests_total": "counter",
    "pivot_engine_actor_restarts_total": "counter",
    "pivot_engine_stalled_steps_total": "counter",
    "pivot_engine_mailbox_overflows_total": "counter",
}
# Values documented in README.md as one object (Kubernetes pass-through structures).
OPAQUE_VALUES = {
    "podSecurityContext",
    "securityContext",
    "resources",
    "updateStrategy",
    "monitoring.dashboards.labels",
}
# pivot.toml tables whose keys are free-form (names chosen by the operator).
FREE_FORM_TABLES = {"tts.voices", "accounts.custom_request_headers"}


class Checker:
    def __init__(self, verbose: bool) -> None:
        self.failures: list[str] = []
        self.passed = 0
        self.verbose = verbose

    def ok(self, what: str) -> None:
        self.passed += 1
        if self.verbose:
            print(f"  ok    {what}")

    def fail(self, what: str) -> None:
        self.failures.append(what)
        print(f"  FAIL  {what}")

    def check(self, condition: bool, what: str, detail: str = "") -> bool:
        if condition:
            self.ok(what)
        else:
            self.fail(f"{what}{': ' + detail if detail else ''}")
        return condition

    def section(self, title: str) -> None:
        print(f"== {title}")


def load_yaml(path: Path) -> Any:
    with path.open() as f:
        return yaml.safe_load(f)


def rel(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def schema_errors(schema: dict, instance: Any) -> list[str]:
    validator = jsonschema.Draft7Validator(schema, format_checker=jsonschema.FormatChecker())
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    return [f"{'.'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}" for e in errors]


def leaf_keys(values: Any, prefix: str = "") -> list[str]:
    """Dotted paths of the leaves of values.yaml; empty maps, lists and OPAQUE_VALUES are leaves."""
    if isinstance(values, dict) and values and prefix not in OPAQUE_VALUES:
        keys: list[str] = []
        for key, value in values.items():
            keys += leaf_keys(value, f"{prefix}.{key}" if prefix else key)
        return keys
    return [prefix]


def all_paths(values: Any, prefix: str = "") -> set[str]:
    paths = {prefix} if prefix else set()
    if isinstance(values, dict):
        for key, value in values.items():
            paths |= all_paths(value, f"{prefix}.{key}" if prefix else key)
    return paths


# ---------------------------------------------------------------- rendering


class Case:
    def __init__(self, name: str, overrides: dict, path: Path | None) -> None:
        self.name = name
        self.overrides = overrides
        self.path = path


def render(chart: Any, overrides: dict) -> tuple[dict, list[dict]]:
    """(merged values, manifests) of one `helm template`."""
    merged = chart.merge_values(overrides)
    rendered = chart.render(values=overrides, name=RELEASE, namespace=NAMESPACE)
    docs: list[dict] = []
    for template, text in sorted(rendered.items()):
        if template.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc is None:
                continue
            if not isinstance(doc, dict):
                raise ValueError(f"{template}: a manifest is not a mapping")
            doc["__template__"] = template
            docs.append(doc)
    return merged, docs


def strip(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k != "__template__"}


def crd_schema_path(doc: dict) -> Path:
    group_version = doc.get("apiVersion", "")
    api = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", group_version)
    return SCHEMAS / f"{doc.get('kind', '').lower()}-{api}.json"


def validate_manifest(doc: dict, kube_version: str) -> list[str]:
    """Errors of one manifest: Kubernetes' schema in strict mode, or the repo's CRD schema."""
    body = strip(doc)
    try:
        kubernetes_validate.validate(body, kube_version, strict=True)
        return []
    except kubernetes_validate.ValidationError as e:
        path = ".".join(str(p) for p in e.absolute_path) or "(root)"
        return [f"{path}: {e.message}"]
    except kubernetes_validate.SchemaNotFoundError:
        schema_path = crd_schema_path(body)
        if not schema_path.exists():
            return [
                f"no schema for {body.get('apiVersion')} {body.get('kind')}: neither "
                f"kubernetes-validate {kube_version} nor {rel(schema_path)} knows it"
            ]
        return schema_errors(json.loads(schema_path.read_text()), body)


def find(docs: list[dict], kind: str, template: str | None = None) -> list[dict]:
    return [
        d
        for d in docs
        if d.get("kind") == kind and (template is None or d["__template__"].endswith(template))
    ]


# ---------------------------------------------------------------- config.example.toml keys


def example_keys() -> set[str]:
    """Every key of deploy/config.example.toml, commented-out ones included."""
    keys: set[str] = set()
    section = ""
    for line in CONFIG_EXAMPLE.read_text().splitlines():
        header = re.match(r"^#?\s*\[\[?([A-Za-z0-9_.]+)\]\]?\s*$", line)
        if header:
            section = header.group(1)
            keys.add(section)
            continue
        key = re.match(r"^#?([A-Za-z0-9_]+)\s*=", line)
        if key:
            keys.add(f"{section}.{key.group(1)}" if section else key.group(1))
    return keys


def toml_keys(table: dict, prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for key, value in table.items():
        path = f"{prefix}.{key}" if prefix else key
        if prefix in FREE_FORM_TABLES:
            continue
        keys.add(path)
        if isinstance(value, dict):
            keys |= toml_keys(value, path)
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for item in value:
                keys |= toml_keys(item, path)
    return keys


# ---------------------------------------------------------------- semantic checks


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def config_text(docs: list[dict]) -> str | None:
    for doc in docs:
        if doc["__template__"].endswith("config.yaml"):
            data = doc.get("data") or doc.get("stringData") or {}
            return data.get("pivot.toml")
    return None


def check_semantics(c: Checker, case: Case, values: dict, docs: list[dict], alerts: dict) -> None:
    tag = case.name
    fullname = RELEASE  # release "pivot" + chart "pivot"
    deployments = find(docs, "Deployment")
    if not c.check(len(deployments) == 1, f"{tag}: one Deployment", f"found {len(deployments)}"):
        return
    deployment = deployments[0]
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    cfg = values["config"]

    # Replicas and autoscaler.
    hpas = find(docs, "HorizontalPodAutoscaler")
    if values["autoscaling"]["enabled"]:
        c.check("replicas" not in deployment["spec"], f"{tag}: no replicas with the autoscaler")
        if c.check(len(hpas) == 1, f"{tag}: HorizontalPodAutoscaler rendered"):
            hpa = hpas[0]["spec"]
            down = hpa["behavior"]["scaleDown"]
            want = values["autoscaling"]["scaleDown"]
            c.check(
                down["stabilizationWindowSeconds"] == want["stabilizationWindowSeconds"]
                and down["policies"] == [{"type": "Pods", "value": want["pods"], "periodSeconds": want["periodSeconds"]}],
                f"{tag}: HPA scales down {want['pods']} pod per {want['periodSeconds']} s after {want['stabilizationWindowSeconds']} s",
                json.dumps(down),
            )
            c.check(
                hpa["metrics"][0]["resource"]["name"] == "cpu",
                f"{tag}: HPA targets CPU",
            )
    else:
        c.check(
            deployment["spec"].get("replicas") == values["replicaCount"],
            f"{tag}: replicas = replicaCount",
        )
        c.check(not hpas, f"{tag}: no HorizontalPodAutoscaler when disabled")

    # Termination: preStop + drain grace + margin.
    life = values["lifecycle"]
    want_grace = life["preStopSleepSeconds"] + cfg["node"]["drain_grace_s"] + life["terminationGraceMarginSeconds"]
    c.check(
        pod.get("terminationGracePeriodSeconds") == want_grace,
        f"{tag}: terminationGracePeriodSeconds = preStop + drain_grace_s + margin ({want_grace})",
        str(pod.get("terminationGracePeriodSeconds")),
    )
    pre_stop = container.get("lifecycle", {}).get("preStop", {})
    if life["preStopSleepSeconds"] > 0:
        if life["preStopSleepAction"]:
            ok = pre_stop.get("sleep", {}).get("seconds") == life["preStopSleepSeconds"]
        else:
            ok = pre_stop.get("exec", {}).get("command", [None])[0] == "/bin/sleep"
        c.check(ok, f"{tag}: preStop sleeps {life['preStopSleepSeconds']} s", json.dumps(pre_stop))

    # Probes.
    for probe, path in (("livenessProbe", "/healthz"), ("startupProbe", "/healthz"), ("readinessProbe", "/readyz")):
        got = container.get(probe, {}).get("httpGet", {})
        c.check(got.get("path") == path and got.get("port") == "http", f"{tag}: {probe} GET {path}", json.dumps(got))

    # Security.
    sc = container.get("securityContext", {})
    psc = pod.get("securityContext", {})
    seccomp = sc.get("seccompProfile", psc.get("seccompProfile", {})).get("type")
    c.check(
        sc.get("runAsNonRoot") is True
        and sc.get("runAsUser", psc.get("runAsUser")) == 10001
        and sc.get("readOnlyRootFilesystem") is True
        and sc.get("allowPrivilegeEscalation") is False
        and sc.get("capabilities", {}).get("drop") == ["ALL"]
        and seccomp == "RuntimeDefault",
        f"{tag}: container runs non-root 10001, read-only root, no privilege escalation, no capabilities, RuntimeDefault seccomp",
        json.dumps(sc),
    )
    c.check(pod.get("automountServiceAccountToken") is False, f"{tag}: service account token not mounted")
    mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
    c.check(
        {"/etc/pivot", "/tmp"} <= mounts,
        f"{tag}: /etc/pivot and /tmp are mounted (the root filesystem is read-only)",
        str(sorted(mounts)),
    )
    c.check(
        container.get("args") == ["serve", "--config", "/etc/pivot/pivot.toml"],
        f"{tag}: runs `serve --config /etc/pivot/pivot.toml`",
    )
    annotations = deployment["spec"]["template"]["metadata"].get("annotations", {})
    c.check(
        {"checksum/config", "checksum/secret"} <= set(annotations),
        f"{tag}: checksum annotations roll the pods on config changes",
    )
    if not values["affinity"] and values["podAntiAffinityPreset"] != "none":
        anti = pod.get("affinity", {}).get("podAntiAffinity", {})
        terms = anti.get("preferredDuringSchedulingIgnoredDuringExecution", [])
        terms = [t["podAffinityTerm"] for t in terms] + anti.get("requiredDuringSchedulingIgnoredDuringExecution", [])
        c.check(
            any(t.get("topologyKey") == "kubernetes.io/hostname" for t in terms),
            f"{tag}: pod anti-affinity on kubernetes.io/hostname",
        )
    for constraint in pod.get("topologySpreadConstraints", []):
        c.check("labelSelector" in constraint, f"{tag}: topology spread constraint has a labelSelector")

    # Environment.
    env = env_of(container)
    secret_name = values["existingSecret"] or fullname
    admin = env.get("PIVOT_API__ADMIN_TOKEN", {}).get("valueFrom", {}).get("secretKeyRef", {})
    c.check(admin.get("name") == secret_name, f"{tag}: admin token from Secret {secret_name}", json.dumps(admin))
    c.check(
        env.get("PIVOT_NODE__ID", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name",
        f"{tag}: node.id is the pod name",
    )
    c.check(
        env.get("PIVOT_NODE__ADVERTISE", {}).get("value") == f"http://$(POD_IP):{values['containerPort']}"
        and list(env).index("POD_IP") < list(env).index("PIVOT_NODE__ADVERTISE"),
        f"{tag}: node.advertise is http://$(POD_IP):{values['containerPort']} (POD_IP defined first)",
    )
    redis = cfg["cluster"]["backend"] == "redis"
    c.check(
        ("PIVOT_CLUSTER__REDIS_URL" in env) == redis,
        f"{tag}: Redis URL from the Secret {'with' if redis else 'only with'} the redis backend",
    )
    for i, fs in enumerate(values["freeswitch"]):
        ref = env.get(f"FREESWITCH_PASSWORD_{i}", {}).get("valueFrom", {}).get("secretKeyRef", {})
        c.check(ref.get("name") == secret_name, f"{tag}: freeswitch[{i}] password from Secret {secret_name}")
    secrets = [values["auth"]["adminToken"], values["redis"]["url"]]
    secrets += [t["token"] for t in values["auth"]["accountTokens"]]
    secrets += [fs.get("password", "") for fs in values["freeswitch"]]
    in_clear = [
        d["__template__"]
        for d in docs
        if d["kind"] in ("Deployment", "ConfigMap")
        for s in secrets
        if s and s in json.dumps(strip(d))
    ]
    c.check(not in_clear, f"{tag}: no token, password or Redis URL in the Deployment or a ConfigMap", ", ".join(in_clear))

    # Secret.
    own_secrets = [d for d in find(docs, "Secret") if d["__template__"].endswith("secret.yaml")]
    if values["existingSecret"]:
        c.check(not own_secrets, f"{tag}: no chart Secret with existingSecret")
    elif c.check(len(own_secrets) == 1, f"{tag}: chart Secret rendered"):
        data = own_secrets[0].get("data", {})
        c.check(bool(data.get("admin-token")), f"{tag}: Secret has an admin token (given or generated)")

    # pivot.toml.
    text = config_text(docs)
    if c.check(text is not None, f"{tag}: pivot.toml rendered"):
        try:
            parsed = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            c.fail(f"{tag}: pivot.toml is not TOML: {e}")
        else:
            c.ok(f"{tag}: pivot.toml parses")
            c.check(
                parsed["api"]["listen"] == f"0.0.0.0:{values['containerPort']}",
                f"{tag}: api.listen on 0.0.0.0:{values['containerPort']}",
            )
            want_kind = cfg["switch"]["kind"] or (
                "freeswitch" if values["freeswitch"] or values["outbound"]["enabled"] else "sim"
            )
            c.check(parsed["switch"]["kind"] == want_kind, f"{tag}: switch.kind = {want_kind}")
            got_outbound = parsed["switch"].get("outbound")
            if values["outbound"]["enabled"]:
                want_outbound = {**cfg["switch"]["outbound"], "listen": f"0.0.0.0:{values['outbound']['port']}"}
                c.check(
                    got_outbound == want_outbound,
                    f"{tag}: [switch.outbound] listens on 0.0.0.0:{values['outbound']['port']} with config.switch.outbound",
                    json.dumps(got_outbound),
                )
            else:
                c.check(got_outbound is None, f"{tag}: no [switch.outbound] while outbound is disabled", json.dumps(got_outbound))
            unknown = sorted(toml_keys(parsed) - example_keys())
            c.check(not unknown, f"{tag}: every pivot.toml key is in deploy/config.example.toml", ", ".join(unknown))
            storage = values["configStorage"]
            kinds = {d["kind"] for d in docs if d["__template__"].endswith("config.yaml")}
            c.check(kinds == {storage}, f"{tag}: pivot.toml stored in a {storage}", str(kinds))

    # Service.
    services = find(docs, "Service", "/service.yaml")
    if c.check(len(services) == 1, f"{tag}: one API Service"):
        ports = {p["name"]: p for p in services[0]["spec"]["ports"]}
        c.check(
            set(ports) == {"http", "metrics"} and all(p["targetPort"] == "http" for p in ports.values())
            and ports["http"]["port"] == values["service"]["port"],
            f"{tag}: Service ports http and metrics, both to the pod's http port",
        )

    # Outbound socket: container port and its own Service.
    outbound = values["outbound"]
    container_ports = {p["name"]: p for p in container.get("ports", [])}
    outbound_services = find(docs, "Service", "service-outbound.yaml")
    if outbound["enabled"]:
        c.check(
            container_ports.get("esl-outbound", {}).get("containerPort") == outbound["port"],
            f"{tag}: container port esl-outbound {outbound['port']}",
            json.dumps(container.get("ports")),
        )
        if c.check(len(outbound_services) == 1, f"{tag}: outbound Service rendered"):
            svc = outbound_services[0]
            spec = svc["spec"]
            want_svc = outbound["service"]
            ports = spec["ports"]
            c.check(
                svc["metadata"]["name"] == f"{fullname}-outbound"
                and spec["type"] == want_svc["type"]
                and len(ports) == 1
                and ports[0]["name"] == "esl-outbound"
                and ports[0]["targetPort"] == "esl-outbound"
                and ports[0]["port"] == want_svc["port"],
                f"{tag}: Service {fullname}-outbound ({want_svc['type']}) port {want_svc['port']} to the pod's esl-outbound",
                json.dumps(spec),
            )
            c.check(
                spec.get("selector") == deployment["spec"]["selector"]["matchLabels"],
                f"{tag}: outbound Service selects the pods",
            )
            if want_svc["type"] == "LoadBalancer" and want_svc["loadBalancerSourceRanges"]:
                c.check(
                    spec.get("loadBalancerSourceRanges") == want_svc["loadBalancerSourceRanges"],
                    f"{tag}: outbound Service restricted to loadBalancerSourceRanges",
                )
            c.check(
                spec.get("externalTrafficPolicy") == (None if want_svc["type"] == "ClusterIP" else want_svc["externalTrafficPolicy"]),
                f"{tag}: outbound Service externalTrafficPolicy only for NodePort/LoadBalancer",
                str(spec.get("externalTrafficPolicy")),
            )
    else:
        c.check(
            "esl-outbound" not in container_ports and not outbound_services,
            f"{tag}: no outbound port or Service while outbound is disabled",
        )

    # PodDisruptionBudget.
    pdbs = find(docs, "PodDisruptionBudget")
    c.check(bool(pdbs) == values["podDisruptionBudget"]["enabled"], f"{tag}: PodDisruptionBudget iff enabled")

    # Monitoring.
    mon = values["monitoring"]
    sms = find(docs, "ServiceMonitor")
    if c.check(bool(sms) == mon["serviceMonitor"]["enabled"], f"{tag}: ServiceMonitor iff enabled") and sms:
        endpoints = sms[0]["spec"]["endpoints"]
        c.check(
            endpoints[0]["port"] == "metrics" and endpoints[0]["path"] == "/metrics",
            f"{tag}: ServiceMonitor scrapes /metrics on port metrics",
        )
    rules = find(docs, "PrometheusRule")
    if c.check(bool(rules) == mon["prometheusRule"]["enabled"], f"{tag}: PrometheusRule iff enabled") and rules:
        want = copy.deepcopy(alerts["groups"])
        disabled = set(mon["prometheusRule"]["disabledAlerts"])
        for group in want:
            group["rules"] = [r for r in group["rules"] if r.get("alert") not in disabled]
            for rule in group["rules"]:
                if mon["prometheusRule"]["ruleLabels"]:
                    rule["labels"] = {**mon["prometheusRule"]["ruleLabels"], **rule.get("labels", {})}
        want = [g for g in want if g["rules"]]
        c.check(
            rules[0]["spec"]["groups"] == want,
            f"{tag}: PrometheusRule holds files/alerts.yaml (with ruleLabels, less disabledAlerts)",
        )
    dashboards = [d for d in find(docs, "ConfigMap") if d["__template__"].endswith("dashboards.yaml")]
    if c.check(bool(dashboards) == mon["dashboards"]["enabled"], f"{tag}: dashboard ConfigMap iff enabled") and dashboards:
        cm = dashboards[0]
        c.check(
            all(cm["metadata"]["labels"].get(k) == v for k, v in mon["dashboards"]["labels"].items()),
            f"{tag}: dashboard ConfigMap carries {mon['dashboards']['labels']}",
        )
        files = sorted(p.name for p in (CHART / "files" / "dashboards").glob("*.json"))
        c.check(sorted(cm.get("data", {})) == files, f"{tag}: dashboard ConfigMap holds {files}")
        for name, body in cm.get("data", {}).items():
            try:
                json.loads(body)
                c.ok(f"{tag}: dashboard {name} is JSON")
            except json.JSONDecodeError as e:
                c.fail(f"{tag}: dashboard {name} is not JSON: {e}")


# ---------------------------------------------------------------- pivotd smoke run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CLOSED = "127.0.0.1:1"  # nothing listens on port 1: connections are refused at once


def loopback_redis(url: str) -> str:
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*://)(?:([^@/]*)@)?([^/]*)(.*)$", url)
    if not m:
        return url
    scheme, userinfo, _host, rest = m.groups()
    return f"{scheme}{userinfo + '@' if userinfo is not None else ''}{CLOSED}{rest}"


def kube_expand(value: str, env: dict[str, str]) -> str:
    """The kubelet's $(VAR) expansion of env values ($$ escapes a $)."""

    def repl(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", repl, value)


# Stand-ins for what an operator's existingSecret would hold; the password exercises quoting.
FAKE_PASSWORD = "smo'ke\"pa\\ss$(NOT_A_VAR)''"
FAKE_SECRET = {
    "adminToken": "smoke-admin-token",
    "redisUrl": "redis+sentinel://:smoke@127.0.0.1:1/mymaster",
    "accountTokens": '[{ token = "smoke-account-token", account_id = "0123456789abcdef0123456789abcdef" }]',
}


def smoke_env(values: dict, docs: list[dict], deployment: dict) -> tuple[dict[str, str], str]:
    """The container's environment as the kubelet would build it, and the admin token."""
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    own = {}
    for doc in find(docs, "Secret", "secret.yaml"):
        import base64

        own = {k: base64.b64decode(v).decode() for k, v in (doc.get("data") or {}).items()}
    keys = values["existingSecretKeys"]
    fake_by_key = {keys[k]: v for k, v in FAKE_SECRET.items() if keys.get(k)}
    env: dict[str, str] = {}
    for var in container.get("env", []):
        name = var["name"]
        if "value" in var:
            value = kube_expand(var["value"], env)
        else:
            source = var["valueFrom"]
            if "fieldRef" in source:
                value = {"status.podIP": "127.0.0.1", "metadata.name": "pivot-smoke-0"}[source["fieldRef"]["fieldPath"]]
            elif "secretKeyRef" in source:
                key = source["secretKeyRef"]["key"]
                value = own[key] if not values["existingSecret"] else fake_by_key.get(key, FAKE_PASSWORD)
            else:
                raise ValueError(f"env {name}: unsupported source {source}")
        if name == "PIVOT_CLUSTER__REDIS_URL":
            value = loopback_redis(value)
        if name == "PIVOT_SWITCH__FREESWITCH":
            value = re.sub(r'address = "[^"]*"', f'address = "{CLOSED}"', value)
        env[name] = value
    return env, env["PIVOT_API__ADMIN_TOKEN"]


def http_get(url: str, token: str | None = None, timeout: float = 2.0) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"X-Auth-Token": token} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def outbound_greeting(port: int) -> str:
    """What pivotd sends first on an outbound socket connection, as FreeSWITCH would open it."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=3) as conn:
            data = b""
            while not data.endswith(b"\n\n") and len(data) < 256:
                chunk = conn.recv(256)
                if not chunk:
                    break
                data += chunk
            return data.decode(errors="replace")
    except OSError as e:
        return f"<{e}>"


def smoke(c: Checker, case: Case, pivotd: Path, values: dict, docs: list[dict]) -> None:
    tag = f"{case.name}: pivotd"
    deployment = find(docs, "Deployment")[0]
    text = config_text(docs)
    if text is None:
        c.fail(f"{tag}: no pivot.toml to run")
        return
    env, token = smoke_env(values, docs, deployment)
    port = free_port()
    env["PIVOT_API__LISTEN"] = f"127.0.0.1:{port}"
    outbound_port = None
    if "[switch.outbound]" in text:
        outbound_port = free_port()
        env["PIVOT_SWITCH__OUTBOUND__LISTEN"] = f"127.0.0.1:{outbound_port}"
    env["PIVOT_LOG__FORMAT"] = "json"
    with tempfile.TemporaryDirectory(prefix="pivot-chart-") as tmp:
        config = Path(tmp) / "pivot.toml"
        recordings = Path(tmp) / "recordings"
        config.write_text(text)
        env["PIVOT_ENGINE__RECORDINGS_DIR"] = str(recordings)
        log = Path(tmp) / "pivotd.log"
        full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": tmp, **env}
        with log.open("w") as out:
            proc = subprocess.Popen(
                [str(pivotd), "serve", "--config", str(config)],
                env=full_env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 20
            healthy = False
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    healthy = http_get(base + "/healthz", timeout=1)[0] == 200
                except OSError:
                    healthy = False
                if healthy:
                    break
                time.sleep(0.2)
            if not c.check(healthy, f"{tag} starts from the rendered pivot.toml and env; /healthz 200",
                           f"exit {proc.poll()}: {log.read_text()[-1500:]}"):
                return
            ready = http_get(base + "/readyz")[0]
            c.ok(f"{tag} /readyz {ready}")
            status, metrics = http_get(base + "/metrics")
            c.check(status == 200 and "pivot_build_info" in metrics, f"{tag} /metrics serves pivot metrics")
            account = "0123456789abcdef0123456789abcdef"
            good = http_get(f"{base}/v2/accounts/{account}/callflows", token)[0]
            bad = http_get(f"{base}/v2/accounts/{account}/callflows", token + "-wrong")[0]
            # 200, or 503 while the (deliberately unreachable) Redis holds the callflows.
            c.check(good in (200, 503), f"{tag} accepts the admin token from the Secret", f"HTTP {good}")
            c.check(bad == 401, f"{tag} refuses a wrong token", f"HTTP {bad}")
            if outbound_port is not None:
                greeting = outbound_greeting(outbound_port)
                c.check(greeting == "connect\n\n",
                        f"{tag} outbound socket listener greets FreeSWITCH with `connect`", repr(greeting))
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    code = proc.wait(timeout=min(values["config"]["node"]["drain_grace_s"] + 15, 60))
                    c.check(code == 0, f"{tag} drains and exits 0 on SIGTERM", f"exit {code}: {log.read_text()[-800:]}")
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                    c.fail(f"{tag} did not exit after SIGTERM")


# ---------------------------------------------------------------- alerts


def check_alerts(c: Checker, alerts: Any) -> None:
    c.section("files/alerts.yaml")
    if not c.check(isinstance(alerts, dict) and isinstance(alerts.get("groups"), list),
                   "alerts.yaml is a Prometheus rule file (groups: [...])"):
        return
    seen: list[str] = []
    source = "\n".join(p.read_text() for p in (ROOT / "crates").rglob("*.rs")) if (ROOT / "crates").is_dir() else ""
    for group in alerts["groups"]:
        for rule in group.get("rules", []):
            name = rule.get("alert")
            if not c.check(bool(name), f"rule in group {group.get('name')} is an alert", json.dumps(rule)[:200]):
                continue
            seen.append(name)
            c.check(name in EXPECTED_ALERTS, f"{name}: an expected alert name")
            c.check(rule.get("labels", {}).get("severity") in {"critical", "warning", "info"},
                    f"{name}: severity label", str(rule.get("labels")))
            ann = rule.get("annotations", {})
            c.check(bool(ann.get("summary")) and bool(ann.get("description")), f"{name}: summary and description")
            want_url = RUNBOOK.format(anchor=name.lower())
            c.check(ann.get("runbook_url") == want_url, f"{name}: runbook_url {want_url}", str(ann.get("runbook_url")))
            if name in EXPECTED_ALERTS:
                want_for = EXPECTED_ALERTS[name]
                c.check(rule.get("for") == want_for, f"{name}: " + (f"for {want_for}" if want_for else "fires at once (no for)"), str(rule.get("for")))
            for metric in sorted(set(re.findall(r"\bpivot_[a-z0-9_]+", rule.get("expr", "")))):
                base = re.sub(r"_(bucket|count|sum)$", "", metric)
                known = metric in KNOWN_METRICS or KNOWN_METRICS.get(base) == "histogram"
                c.check(known, f"{name}: metric {metric} is exported by pivotd")
                if source:
                    c.check(f'"{base}"' in source or f'"{metric}"' in source,
                            f"{name}: metric {base} is registered in crates/")
    c.check(sorted(seen) == sorted(EXPECTED_ALERTS), "alerts are exactly " + ", ".join(EXPECTED_ALERTS),
            ", ".join(seen))


def promtool_check(c: Checker, path: Path, what: str) -> None:
    promtool = shutil.which("promtool")
    if not promtool:
        print(f"  skip  promtool check rules {what}: promtool not on PATH")
        return
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    c.check(result.returncode == 0, f"promtool check rules {what}", (result.stdout + result.stderr).strip()[-800:])


# ---------------------------------------------------------------- README


def check_readme(c: Checker, values: dict) -> None:
    c.section("README.md documents every value")
    readme = (CHART / "README.md").read_text()
    documented = set(re.findall(r"^\|\s*`([^`]+)`\s*\|", readme, flags=re.M))
    missing = [k for k in leaf_keys(values) if k not in documented]
    c.check(not missing, f"every leaf of values.yaml ({len(leaf_keys(values))}) has a row in README.md",
            "missing: " + ", ".join(missing))
    stale = sorted(documented - all_paths(values))
    c.check(not stale, "every value row of README.md exists in values.yaml", "stale: " + ", ".join(stale))


# ---------------------------------------------------------------- negative cases


def expectation(path: Path) -> tuple[str, str]:
    """`# expect-<stage>: <substring>` on a test file's first line."""
    first = path.read_text().splitlines()[0]
    m = re.match(r"^#\s*expect-(schema|render|manifest):\s*(.+)$", first)
    if not m:
        raise ValueError(f"{rel(path)}: first line must be `# expect-schema|render|manifest: <text>`")
    return m.group(1), m.group(2).strip()


def negative_cases(c: Checker, chart: Any, schema: dict, kube_version: str) -> None:
    c.section("negative cases (scripts/testdata/): each must be rejected")
    files = sorted(TESTDATA.glob("*.yaml"))
    c.check(len(files) >= 5, f"at least 5 negative cases ({len(files)})")
    for path in files:
        stage, needle = expectation(path)
        name = rel(path)
        if stage == "manifest":
            docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
            errors = [e for d in docs for e in validate_manifest({**d, "__template__": name}, kube_version)]
            c.check(any(needle in e for e in errors), f"{name}: manifest validation rejects it ({needle})",
                    "; ".join(errors) or "accepted")
            continue
        overrides = load_yaml(path) or {}
        errors = schema_errors(schema, chart.merge_values(overrides))
        if stage == "schema":
            c.check(any(needle in e for e in errors), f"{name}: values.schema.json rejects it ({needle})",
                    "; ".join(errors) or "accepted")
        else:
            c.check(not errors, f"{name}: passes the schema (the templates must catch it)", "; ".join(errors))
        try:
            chart.render(values=overrides, name=RELEASE, namespace=NAMESPACE)
            c.fail(f"{name}: helm template accepted it")
        except helm.HelmError as e:
            message = str(e)
            want = needle if stage == "render" else ""
            c.check(want in message, f"{name}: helm template refuses it" + (f" ({needle})" if want else ""),
                    message[:300])


# ---------------------------------------------------------------- main


def find_pivotd(arg: str | None) -> Path | None:
    if arg == "none":
        return None
    if arg:
        return Path(arg)
    for candidate in (ROOT / "target" / "debug" / "pivotd", ROOT / "target" / "release" / "pivotd"):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kube-version", default="1.30.0", help="Kubernetes version to validate against (default 1.30.0)")
    parser.add_argument("--rules-out", type=Path, help="write the rendered PrometheusRule's groups here as a plain rule file")
    parser.add_argument("--pivotd", help="pivotd binary for the smoke runs (default: target/{debug,release}/pivotd if built; 'none' skips)")
    parser.add_argument("--self-test", action="store_true", help="only check that the broken inputs of scripts/testdata/ are rejected")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every passing check")
    args = parser.parse_args()

    helm.disable_logging()
    c = Checker(args.verbose)
    schema = json.loads((CHART / "values.schema.json").read_text())
    chart = helm.Chart.load(str(CHART))
    try:
        c.section("values.schema.json")
        jsonschema.Draft7Validator.check_schema(schema)
        c.ok("values.schema.json is a valid draft-07 schema")
        c.check(schema.get("$schema", "").startswith("http://json-schema.org/draft-07/"), "values.schema.json declares draft-07")
        for crd in sorted(SCHEMAS.glob("*.json")):
            jsonschema.Draft7Validator.check_schema(json.loads(crd.read_text()))
            c.ok(f"{rel(crd)} is a valid draft-07 schema")

        negative_cases(c, chart, schema, args.kube_version)
        if args.self_test:
            return report(c)

        defaults = load_yaml(CHART / "values.yaml")
        errors = schema_errors(schema, defaults)
        c.check(not errors, "values.yaml validates against values.schema.json", "; ".join(errors))

        alerts = load_yaml(CHART / "files" / "alerts.yaml")
        check_alerts(c, alerts)
        promtool_check(c, CHART / "files" / "alerts.yaml", "files/alerts.yaml")
        check_readme(c, defaults)

        cases = [Case("defaults", {}, None)]
        for path in sorted((CHART / "ci").glob("*.yaml")):
            cases.append(Case(rel(path), load_yaml(path) or {}, path))
        required_ci = {"default-values.yaml", "monitoring-values.yaml", "outbound-values.yaml", "sentinel-values.yaml", "single-node-values.yaml"}
        present = {p.name for p in (CHART / "ci").glob("*.yaml")}
        c.check(required_ci <= present, "ci/ has " + ", ".join(sorted(required_ci)), "missing " + ", ".join(sorted(required_ci - present)))

        pivotd = find_pivotd(args.pivotd)
        rules_written = False
        for case in cases:
            c.section(f"{case.name}")
            merged = chart.merge_values(case.overrides)
            errors = schema_errors(schema, merged)
            c.check(not errors, f"{case.name}: values validate against values.schema.json", "; ".join(errors))
            lint = helm.lint(str(CHART), case.overrides, strict=True, kube_version="v" + args.kube_version.lstrip("v"))
            problems = [f"{m['path']}: {m['error'].strip()}" for m in lint["messages"] if m["severity"] >= 2] + lint["errors"]
            c.check(not problems, f"{case.name}: helm lint --strict", "; ".join(problems))
            try:
                values, docs = render(chart, case.overrides)
            except (helm.HelmError, ValueError, yaml.YAMLError) as e:
                c.fail(f"{case.name}: helm template: {e}")
                continue
            c.ok(f"{case.name}: helm template ({len(docs)} manifests)")
            for doc in docs:
                where = f"{case.name}: {doc['__template__']} {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
                errors = validate_manifest(doc, args.kube_version)
                c.check(not errors, f"{where} validates (Kubernetes {args.kube_version}, strict)", "; ".join(errors))
            check_semantics(c, case, values, docs, alerts)
            if case.name == "defaults":
                changed = chart.merge_values({"config": {"cluster": {"lease_ms": 4321}}})
                _, changed_docs = render(chart, {"config": {"cluster": {"lease_ms": 4321}}})
                before = find(docs, "Deployment")[0]["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
                after = find(changed_docs, "Deployment")[0]["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
                c.check(before != after and changed["config"]["cluster"]["lease_ms"] == 4321,
                        "a config change changes checksum/config (pods roll)")
            for rule in find(docs, "PrometheusRule"):
                if args.rules_out and not rules_written:
                    args.rules_out.parent.mkdir(parents=True, exist_ok=True)
                    args.rules_out.write_text(
                        "# Rendered from the pivot chart's PrometheusRule by scripts/check-chart.py\n"
                        + yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False, width=1000, allow_unicode=True)
                    )
                    rules_written = True
                    c.ok(f"rendered rules written to {args.rules_out}")
                    promtool_check(c, args.rules_out, f"{args.rules_out} (rendered)")
            if pivotd:
                smoke(c, case, pivotd, values, docs)
        if args.rules_out and not rules_written:
            c.fail(f"--rules-out {args.rules_out}: no case rendered a PrometheusRule")
        if not pivotd:
            print("  skip  pivotd smoke runs: no pivotd binary (build it or pass --pivotd PATH)")
    finally:
        chart.close()
    return report(c)


def report(c: Checker) -> int:
    if c.failures:
        print(f"\ncheck-chart: {len(c.failures)} failed, {c.passed} passed", file=sys.stderr)
        for failure in c.failures:
            print(f"  - {failure}", file=sys.stderr)
        return 1
    print(f"\ncheck-chart: {c.passed} passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
