#!/usr/bin/env bash
# Checks pivot's monitoring against the real pivotd:
#
#   1. starts pivotd (the embedded default on a free loopback port, simulated switch running at
#      time_scale 0), places a demo call so the histograms have samples, scrapes /metrics and
#      lints the scrape with `promtool check metrics`;
#   2. extracts every PromQL expression from the Grafana dashboards (grafana/dashboards/*.json:
#      panel targets, templating queries, annotations) and from the Prometheus rule file
#      deploy/helm/pivot/files/alerts.yaml (when present), substitutes the Grafana variables,
#      and has promtool parse them all (`promtool check rules`);
#   3. checks that every metric an expression names is exported by pivotd (its family has
#      HELP/TYPE in the live scrape; _bucket/_sum/_count map to their histogram) and that every
#      label it filters or groups by exists on those metrics or is a target label Prometheus adds;
#   4. checks the Helm chart's copy of the dashboard (deploy/helm/pivot/files/dashboards/) is
#      up to date, when the chart has one.
#
# Usage: scripts/check-monitoring.sh [--self-test]
#   --self-test (or CHECK_MONITORING_SELFTEST=1) also feeds the checker deliberately broken
#   dashboards, rule files and metrics and fails unless each is rejected.
# Environment:
#   PIVOTD   the pivotd binary (default ./target/debug/pivotd; build it with `make build`)
#   ALERTS   the rule file to check (default deploy/helm/pivot/files/alerts.yaml)
# Needs: promtool (Debian: apt-get install prometheus), python3; PyYAML only when a rule file
# is checked (Debian: apt-get install python3-yaml).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'check-monitoring: %s\n' "$*"; }
fail() {
  printf 'check-monitoring: FAIL: %s\n' "$*" >&2
  exit 1
}

self_test=${CHECK_MONITORING_SELFTEST:-0}
for arg in "$@"; do
  case $arg in
    --self-test) self_test=1 ;;
    -h | --help)
      sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
      exit 0
      ;;
    *) fail "unknown argument '$arg' (usage: $0 [--self-test])" ;;
  esac
done

PIVOTD=${PIVOTD:-./target/debug/pivotd}
ALERTS=${ALERTS:-deploy/helm/pivot/files/alerts.yaml}
HELM_DASHBOARDS=deploy/helm/pivot/files/dashboards

# ------------------------------------------------------------------------------ prerequisites
if ! command -v promtool >/dev/null 2>&1; then
  fail "promtool not found on PATH. Install it with 'apt-get install prometheus' (Debian/Ubuntu; \
provides /usr/bin/promtool), or take promtool from a prometheus-*.linux-amd64.tar.gz release at \
https://github.com/prometheus/prometheus/releases and put it on PATH."
fi
command -v python3 >/dev/null 2>&1 || fail "python3 not found (apt-get install python3)"
[[ -x $PIVOTD ]] || fail "pivotd not found at $PIVOTD: build it with 'make build' (cargo build -p pivotd) or set PIVOTD"
shopt -s nullglob
dashboards=(grafana/dashboards/*.json)
shopt -u nullglob
((${#dashboards[@]})) || fail "no dashboards found in grafana/dashboards/"
rules=()
if [[ -f $ALERTS ]]; then
  rules+=("$ALERTS")
  python3 -c 'import yaml' 2>/dev/null ||
    fail "checking $ALERTS needs PyYAML: apt-get install python3-yaml (or pip install -r scripts/requirements-deploy.txt)"
else
  say "no rule file at $ALERTS: checking the dashboards only"
fi
say "$(promtool --version 2>&1 | head -n1)"

work=$(mktemp -d)
pivotd_pid=
cleanup() {
  if [[ -n $pivotd_pid ]] && kill -0 "$pivotd_pid" 2>/dev/null; then
    kill "$pivotd_pid" 2>/dev/null || true
    wait "$pivotd_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------------------------ the checker
# Parses dashboards and rule files, runs promtool on every expression, and checks metric and
# label names against the scrape. stdlib only, except PyYAML for rule files.
cat >"$work/check.py" <<'PY'
import json
import os
import re
import subprocess
import sys
import tempfile

PROMTOOL = os.environ.get("PROMTOOL", "promtool")

# Values the Grafana built-in variables take for parsing purposes.
BUILTIN_VARS = {
    "__rate_interval": "1m", "__interval": "1m", "__interval_ms": "60000",
    "__range": "1h", "__range_s": "3600", "__range_ms": "3600000",
    "__from": "0", "__to": "0", "__auto": "1m", "__org": "1", "__user": "x",
    "__dashboard": "x", "__name": "x", "__rate_interval_ms": "60000",
}
# Labels Prometheus or the Kubernetes service discovery attach to every scraped series.
TARGET_LABELS = {"job", "instance", "namespace", "pod", "service", "container", "endpoint",
                 "node", "__name__"}
# Series Prometheus itself writes for every target or alert.
SYNTHETIC_METRICS = {"up", "scrape_duration_seconds", "scrape_samples_scraped",
                     "scrape_samples_post_metric_relabeling", "scrape_series_added",
                     "ALERTS", "ALERTS_FOR_STATE"}
AGGREGATIONS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count",
                "count_values", "bottomk", "topk", "quantile", "limitk", "limit_ratio"}
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"}
LABEL_MAKERS = {"label_replace", "label_join", "count_values"}

VAR_RE = re.compile(r"\$\{(\w+)(?:[:.][^}]*)?\}|\[\[(\w+)(?::[^\]]*)?\]\]|\$(\w+)")
TOKEN_RE = re.compile(r"""
    (?P<ws>\s+) | (?P<comment>\#[^\n]*)
  | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<num>0[xX][0-9a-fA-F]+|(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?(?:(?:ms|[smhdwy])(?:\d+(?:ms|[smhdwy]))*)?)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<op>=~|!~|!=|==|<=|>=|[-+*/%^<>=(){}\[\],@:])
""", re.X)


class Scrape:
    def __init__(self, path):
        self.types = {}   # family -> type
        self.labels = {}  # family -> label names seen on its samples
        self.helps = set()
        sample_re = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(\{(.*)\})?\s")
        label_re = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="(?:[^"\\]|\\.)*"')
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.startswith("# TYPE "):
                    _, _, name, kind = line.split(None, 3)
                    self.types[name] = kind.strip()
                elif line.startswith("# HELP "):
                    self.helps.add(line.split(None, 3)[2])
                elif line.strip() and not line.startswith("#"):
                    m = sample_re.match(line)
                    if not m:
                        continue
                    fam = self.family_of(m.group(1)) or m.group(1)
                    names = set(label_re.findall(m.group(3) or ""))
                    self.labels.setdefault(fam, set()).update(names)

    def family_of(self, name):
        """The exported family a series name belongs to, or None."""
        if name in self.types:
            return name
        for suffix, kinds in (("_bucket", {"histogram"}), ("_sum", {"histogram", "summary"}),
                              ("_count", {"histogram", "summary"})):
            if name.endswith(suffix):
                base = name[: -len(suffix)]
                if self.types.get(base) in kinds:
                    return base
        return None


def tokens(expr):
    pos, out = 0, []
    while pos < len(expr):
        m = TOKEN_RE.match(expr, pos)
        if not m:
            raise ValueError(f"cannot tokenize at {expr[pos:pos + 20]!r}")
        pos = m.end()
        kind = m.lastgroup
        if kind not in ("ws", "comment"):
            out.append((kind, m.group()))
    return out


def analyse(expr):
    """Metric selectors (name, matcher labels), grouping labels and labels the expression
    creates itself (label_replace & co), from a PromQL expression promtool has accepted."""
    toks = tokens(expr)
    selectors, grouping, created = [], set(), set()
    stack = []  # kinds of the open parentheses: "call:<fn>", "group", "paren"
    i = 0
    while i < len(toks):
        kind, text = toks[i]
        nxt = toks[i + 1] if i + 1 < len(toks) else (None, None)
        if kind == "op" and text == "[":
            depth = 1
            while depth and i + 1 < len(toks):
                i += 1
                if toks[i][1] == "[":
                    depth += 1
                elif toks[i][1] == "]":
                    depth -= 1
        elif kind == "op" and text == "{":
            selectors.append(matchers(toks, i, None))
            while toks[i][1] != "}":
                i += 1
        elif kind == "op" and text == "(":
            stack.append("paren")
        elif kind == "op" and text == ")":
            if stack:
                stack.pop()
        elif kind == "str":
            if stack and stack[-1] in {f"call:{f}" for f in LABEL_MAKERS}:
                created.add(text[1:-1])
        elif kind == "ident":
            low = text.lower()
            if low in GROUPING:
                if nxt[1] == "(":
                    i += 2
                    while toks[i][1] != ")":
                        if toks[i][0] == "ident":
                            grouping.add(toks[i][1])
                        i += 1
            elif nxt[1] == "(":
                stack.append(f"call:{text}")
                i += 1
            elif low in AGGREGATIONS or low in KEYWORDS:
                pass
            elif nxt[1] == "{":
                selectors.append(matchers(toks, i + 1, text))
                i += 1
                while toks[i][1] != "}":
                    i += 1
            else:
                selectors.append((text, set()))
        i += 1
    return selectors, grouping, created


def matchers(toks, brace, name):
    """(metric name, label names) of the selector whose '{' is at toks[brace]."""
    labels = set()
    j = brace + 1
    while toks[j][1] != "}":
        if toks[j][0] == "ident" and j + 2 < len(toks) and toks[j + 1][0] == "op":
            label, op, value = toks[j][1], toks[j + 1][1], toks[j + 2]
            if label == "__name__" and op == "=" and value[0] == "str":
                name = value[1][1:-1]
            else:
                labels.add(label)
            j += 3
        else:
            j += 1
    return name, labels


class Checker:
    def __init__(self, scrape):
        self.scrape = scrape
        self.problems = []
        self.items = []  # (where, original, substituted)
        self.recorded = set()
        self.rule_files = []
        self.used = set()

    def problem(self, where, message):
        self.problems.append(f"{where}: {message}")

    # ---------------------------------------------------------------- dashboards
    def add_dashboard(self, path):
        with open(path, encoding="utf-8") as f:
            try:
                d = json.load(f)
            except json.JSONDecodeError as e:
                self.problem(path, f"not valid JSON: {e}")
                return
        name = os.path.basename(path)
        if not d.get("uid"):
            self.problem(name, "dashboard has no uid")
        values = dict(BUILTIN_VARS)
        variables = d.get("templating", {}).get("list", [])
        for v in variables:
            values[v["name"]] = self.var_value(v)
        for v in variables:
            if v.get("type") == "query":
                q = v.get("query")
                if isinstance(q, dict):
                    q = q.get("query", "")
                expr = self.variable_promql(q or "")
                if expr:
                    self.add_expr(f"{name} variable ${v['name']}", expr, values)
        for a in d.get("annotations", {}).get("list", []):
            if a.get("expr"):
                self.add_expr(f"{name} annotation {a.get('name')!r}", a["expr"], values)
        ids = {}
        for p in self.walk(d.get("panels", [])):
            where = f"{name} panel {p.get('id')} {p.get('title')!r}"
            if p.get("id") in ids:
                self.problem(where, f"panel id {p.get('id')} also used by {ids[p.get('id')]!r}")
            ids[p.get("id")] = p.get("title")
            if p.get("type") == "row":
                continue
            if not p.get("description"):
                self.problem(where, "panel has no description")
            self.check_datasource(where, p.get("datasource"))
            targets = p.get("targets", [])
            if not targets:
                self.problem(where, "panel has no query")
            for t in targets:
                self.check_datasource(f"{where} target {t.get('refId')}", t.get("datasource"))
                if not t.get("expr"):
                    self.problem(f"{where} target {t.get('refId')}", "target has no expr")
                    continue
                self.add_expr(f"{where} target {t.get('refId')}", t["expr"], values)

    def walk(self, panels):
        for p in panels:
            yield p
            yield from self.walk(p.get("panels", []))

    @staticmethod
    def var_value(v):
        kind = v.get("type")
        if kind == "datasource":
            return "prometheus"
        if kind in ("custom", "interval", "constant", "textbox"):
            cur = (v.get("current") or {}).get("value")
            if isinstance(cur, list):
                cur = cur[0] if cur else None
            if cur and cur != "$__all" and not str(cur).startswith("$"):
                return str(cur)
            opts = v.get("options") or []
            if opts:
                return str(opts[0].get("value"))
            return str(v.get("query", "x")).split(",")[0] or "x"
        return ".*"  # query variables stand in label matchers: any regex value

    @staticmethod
    def variable_promql(query):
        q = query.strip()
        m = re.fullmatch(r"label_values\((.*),\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)", q, re.S)
        if m:
            return m.group(1)
        if re.fullmatch(r"label_values\(\s*[A-Za-z_][A-Za-z0-9_]*\s*\)", q):
            return None
        m = re.fullmatch(r"query_result\((.*)\)", q, re.S)
        if m:
            return m.group(1)
        if re.match(r"(label_names|metrics)\(", q):
            return None
        return q or None

    def check_datasource(self, where, ds):
        if isinstance(ds, dict) and ds.get("type") == "prometheus":
            uid = str(ds.get("uid", ""))
            if not uid.startswith("$"):
                self.problem(where, f"datasource uid {uid!r} is hard-coded; use ${{datasource}}")

    def add_expr(self, where, expr, values):
        def sub(m):
            var = m.group(1) or m.group(2) or m.group(3)
            if var not in values:
                self.problem(where, f"uses undefined variable ${var} in: {expr}")
                return "x"
            return values[var]
        self.items.append((where, expr, VAR_RE.sub(sub, expr)))

    # ---------------------------------------------------------------- rule files
    def add_rules(self, path):
        import yaml  # only needed for rule files
        self.rule_files.append(path)
        with open(path, encoding="utf-8") as f:
            try:
                doc = yaml.safe_load(f)
            except yaml.YAMLError as e:
                self.problem(path, f"not valid YAML: {e}")
                return
        groups = (doc or {}).get("groups") if isinstance(doc, dict) else None
        if not isinstance(groups, list) or not groups:
            self.problem(path, "no `groups:` list (expected a plain Prometheus rule file)")
            return
        for g in groups:
            for r in g.get("rules") or []:
                if r.get("record"):
                    self.recorded.add(r["record"])
        for g in groups:
            for r in g.get("rules") or []:
                label = f"alert {r['alert']}" if r.get("alert") else f"record {r.get('record')}"
                where = f"{os.path.basename(path)} group {g.get('name')!r} {label}"
                expr = str(r.get("expr", ""))
                # Rule files are plain PromQL: no substitution, a `$` would be a mistake.
                self.items.append((where, expr, expr))

    # ---------------------------------------------------------------- checks
    def run(self):
        # 1. promtool parses every expression (recording rules in a generated rule file).
        rules = [{"record": f"check:expr_{n}", "expr": sub}
                 for n, (_, _, sub) in enumerate(self.items)]
        parsed_ok = set(range(len(self.items)))
        with tempfile.NamedTemporaryFile("w", suffix=".rules.json", delete=False) as f:
            json.dump({"groups": [{"name": "check-monitoring", "rules": rules}]}, f)
            generated = f.name
        try:
            out = subprocess.run([PROMTOOL, "check", "rules", generated],
                                 capture_output=True, text=True)
        finally:
            os.unlink(generated)
        if out.returncode != 0:
            text = out.stdout + out.stderr
            named = False
            for m in re.finditer(r'"check:expr_(\d+)": (.*)', text):
                n = int(m.group(1))
                named = True
                parsed_ok.discard(n)
                where, orig, sub = self.items[n]
                self.problem(where, f"promtool rejects the expression: {m.group(2)}\n"
                                    f"      expr: {orig}\n      as parsed: {sub}")
            if not named:
                self.problem("promtool check rules", text.strip())
                parsed_ok.clear()
        # 2. promtool on the rule files as they are.
        for path in self.rule_files:
            out = subprocess.run([PROMTOOL, "check", "rules", path],
                                 capture_output=True, text=True)
            if out.returncode != 0:
                self.problem(path, "promtool check rules failed:\n"
                             + (out.stdout + out.stderr).strip())
        # 3. metric and label names against the scrape.
        for n in sorted(parsed_ok):
            self.check_names(*self.items[n])
        return not self.problems

    def check_names(self, where, orig, sub):
        try:
            selectors, grouping, created = analyse(sub)
        except (ValueError, IndexError) as e:
            self.problem(where, f"cannot read metric names from {orig!r}: {e}")
            return
        known_labels = set(TARGET_LABELS) | created
        missing = False
        for name, labels in selectors:
            if name is None:
                continue
            fam = self.scrape.family_of(name)
            if name in SYNTHETIC_METRICS or name in self.recorded:
                known_labels |= labels
                continue
            if fam is None:
                self.problem(where, f"metric {name} is not in pivotd's /metrics "
                                    f"(no HELP/TYPE for its family)\n      expr: {orig}")
                missing = True
                continue
            self.used.add(fam)
            if fam == name and self.scrape.types[fam] in ("histogram", "summary"):
                self.problem(where, f"{name} is a {self.scrape.types[fam]}: select "
                                    f"{name}_bucket, _sum or _count\n      expr: {orig}")
                continue
            if fam not in self.scrape.helps:
                self.problem(where, f"metric family {fam} has no HELP in the scrape")
            have = self.scrape.labels.get(fam, set()) | TARGET_LABELS
            if name.endswith("_bucket"):
                have = have | {"le"}
            else:
                have = have - {"le"}
            for label in sorted(labels - have):
                self.problem(where, f"label {label!r} does not exist on {name} "
                                    f"(it has: {', '.join(sorted(have - TARGET_LABELS)) or 'none'})"
                                    f"\n      expr: {orig}")
            known_labels |= have
        if missing:
            return  # its labels are unknown: the missing metric is the problem to report
        for label in sorted(grouping - known_labels):
            self.problem(where, f"groups by label {label!r}, which none of its metrics has"
                                f"\n      expr: {orig}")


def check(scrape_path, dashboards, rule_files, quiet=False):
    c = Checker(Scrape(scrape_path))
    for path in dashboards:
        c.add_dashboard(path)
    for path in rule_files:
        c.add_rules(path)
    ok = c.run()
    if not quiet:
        for p in c.problems:
            print(f"  ✗ {p}")
        srcs = ", ".join(dashboards + rule_files)
        print(f"  {len(c.items)} expressions from {srcs}: "
              + ("all parse, every metric and label exists" if ok
                 else f"{len(c.problems)} problem(s)"))
        unused = sorted(f for f in c.scrape.types if f not in c.used)
        if unused:
            print(f"  exported but not on any dashboard or rule: {', '.join(unused)}")
    return c


def selftest(scrape_path):
    """Each fixture must be rejected with the expected message; the good one accepted."""
    tmp = tempfile.mkdtemp()
    sel = 'instance=~"$instance"'

    def dashboard(expr, ds="${datasource}", variables=True):
        d = {"uid": "selftest", "panels": [{
            "id": 1, "type": "timeseries", "title": "t", "description": "d",
            "datasource": {"type": "prometheus", "uid": ds},
            "targets": [{"refId": "A", "expr": expr,
                         "datasource": {"type": "prometheus", "uid": ds}}]}],
            "templating": {"list": [
                {"name": "datasource", "type": "datasource", "query": "prometheus"},
                {"name": "instance", "type": "query",
                 "query": "label_values(pivot_build_info, instance)"}] if variables else []}}
        path = os.path.join(tmp, f"d{len(os.listdir(tmp))}.json")
        with open(path, "w") as f:
            json.dump(d, f)
        return path

    def rules(expr):
        path = os.path.join(tmp, f"r{len(os.listdir(tmp))}.yaml")
        with open(path, "w") as f:
            f.write("groups:\n- name: selftest\n  rules:\n  - alert: SelfTest\n"
                    f"    expr: {json.dumps(expr)}\n    for: 5m\n")
        return path

    good = (f"histogram_quantile(0.99, sum by (le, outcome) (rate("
            f"pivot_webhook_request_duration_seconds_bucket{{{sel}}}[$__rate_interval])))")
    cases = [
        ("a valid dashboard", [dashboard(good)], [], None),
        ("a syntax error", [dashboard(f"sum(rate(pivot_calls_total{{{sel}}}[$__rate_interval])")],
         [], "promtool rejects the expression"),
        ("an unknown metric", [dashboard(f"sum(rate(pivot_no_such_metric_total{{{sel}}}[5m]))")],
         [], "metric pivot_no_such_metric_total is not in pivotd's /metrics"),
        ("a label the metric lacks", [dashboard('sum(rate(pivot_calls_total{outcome="x"}[5m]))')],
         [], "label 'outcome' does not exist on pivot_calls_total"),
        ("grouping by a missing label", [dashboard("sum by (cause) (rate(pivot_calls_total[5m]))")],
         [], "groups by label 'cause'"),
        ("an undefined variable", [dashboard("sum(pivot_calls_active{job=~\"$nope\"})")],
         [], "undefined variable $nope"),
        ("a bare histogram name", [dashboard("rate(pivot_call_setup_seconds[5m])")],
         [], "is a histogram"),
        ("a hard-coded datasource", [dashboard("sum(pivot_calls_active)", ds="abc123")],
         [], "is hard-coded"),
    ]
    try:
        import yaml  # noqa: F401
        cases += [
            ("a valid rule file", [], [rules("sum(rate(pivot_calls_total[5m])) > 1")], None),
            ("a rule file with a syntax error", [], [rules("sum(rate(pivot_calls_total[5m]) > 1")],
             "promtool"),
            ("a rule with an unknown metric", [], [rules("pivot_no_such_gauge > 1")],
             "metric pivot_no_such_gauge is not in"),
        ]
    except ImportError:
        print("  (PyYAML missing: rule-file cases skipped)")
    failed = 0
    for what, ds, rs, expect in cases:
        c = check(scrape_path, ds, rs, quiet=True)
        text = "\n".join(c.problems)
        if expect is None:
            ok = not c.problems
        else:
            ok = bool(c.problems) and expect in text
        verdict = ("accepted" if not c.problems else "rejected")
        print(f"  {'✓' if ok else '✗'} {what}: {verdict}"
              + (f" ({c.problems[0].splitlines()[0][:110]})" if c.problems and ok else ""))
        if not ok:
            failed += 1
            print(f"      expected {'acceptance' if expect is None else repr(expect)}, got:\n"
                  + ("\n".join("      " + p for p in c.problems) or "      no problems"))
    return failed == 0


def main():
    args = sys.argv[1:]
    if args[0] == "selftest":
        sys.exit(0 if selftest(args[1]) else 1)
    scrape, rest = args[1], args[2:]
    split = rest.index("--rules")
    c = check(scrape, rest[:split], rest[split + 1:])
    sys.exit(0 if not c.problems else 1)


main()
PY

# ------------------------------------------------------------------------------ live pivotd
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
api=http://127.0.0.1:$port
say "starting $PIVOTD (embedded default, simulated switch at time_scale 0) on $api"
# The embedded default (not `serve`) because it carries the demo callflow on 3004, whose pivot
# app pivotd serves itself, so one call exercises the webhook, call and switch metrics.
(
  while IFS= read -r var; do unset "$var"; done < <(compgen -e | grep '^PIVOT_' || true)
  export PIVOT_API__LISTEN=127.0.0.1:$port PIVOT_SWITCH__SIM__TIME_SCALE=0 \
    PIVOT_NODE__ID=check-monitoring PIVOT_LOG__FORMAT=json PIVOT_ENGINE__ARBITERS=1
  exec "$PIVOTD"
) >"$work/pivotd.log" 2>&1 &
pivotd_pid=$!

fetch() { python3 -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' "$1"; }
for _ in $(seq 1 100); do
  kill -0 "$pivotd_pid" 2>/dev/null || {
    tail -n 20 "$work/pivotd.log" >&2
    fail "pivotd exited at startup (log above)"
  }
  fetch "$api/readyz" >/dev/null 2>&1 && break
  sleep 0.2
done
fetch "$api/readyz" >/dev/null 2>&1 || {
  tail -n 20 "$work/pivotd.log" >&2
  fail "pivotd not ready on $api/readyz after 20 s (log above)"
}

say "placing a demo call (3004, pressing 2) so the histograms have samples"
if ! "$PIVOTD" call 3004 --digits 2 --api "$api" --timeout 60 >"$work/call.log" 2>&1; then
  cat "$work/call.log" >&2
  tail -n 20 "$work/pivotd.log" >&2
  fail "the demo call failed (transcript and log above)"
fi

fetch "$api/metrics" >"$work/metrics.prom" || fail "cannot scrape $api/metrics"
kill "$pivotd_pid" 2>/dev/null || true
wait "$pivotd_pid" 2>/dev/null || true
pivotd_pid=
families=$(grep -c '^# TYPE ' "$work/metrics.prom" || true)
say "scraped $(wc -l <"$work/metrics.prom") lines, $families metric families; pivotd stopped"

# ------------------------------------------------------------------------------ checks
status=0
say "promtool check metrics (lint of the live scrape)"
if lint=$(promtool check metrics <"$work/metrics.prom" 2>&1); then
  say "  scrape lint: clean"
else
  printf '%s\n' "$lint" | sed 's/^/  ✗ /'
  say "  scrape lint: FAILED (pivotd's /metrics output, above)"
  status=1
fi

say "PromQL of ${dashboards[*]}${rules:+ and ${rules[*]}}: parse (promtool) and names (live scrape)"
PROMTOOL=$(command -v promtool) python3 "$work/check.py" check "$work/metrics.prom" \
  "${dashboards[@]}" --rules "${rules[@]}" || status=1

if [[ -d $HELM_DASHBOARDS ]]; then
  for d in "${dashboards[@]}"; do
    copy=$HELM_DASHBOARDS/$(basename "$d")
    if [[ ! -f $copy ]]; then
      say "  ✗ $copy missing: the chart does not ship $d (run 'make dashboards')"
      status=1
    elif ! cmp -s "$d" "$copy"; then
      say "  ✗ $copy differs from $d: refresh the chart's copy with 'make dashboards-sync'"
      status=1
    else
      say "  chart copy $copy is up to date"
    fi
  done
fi

if [[ $self_test == 1 ]]; then
  say "self-test: broken inputs must be rejected"
  PROMTOOL=$(command -v promtool) python3 "$work/check.py" selftest "$work/metrics.prom" || status=1
  printf '# HELP bad_thing A counter without _total.\n# TYPE bad_thing counter\nbad_thing 1\n' >"$work/bad.prom"
  if promtool check metrics <"$work/bad.prom" >/dev/null 2>&1; then
    say "  ✗ promtool check metrics accepted a counter without _total"
    status=1
  else
    say "  ✓ a scrape with a counter not ending in _total: rejected by promtool check metrics"
  fi
fi

if ((status)); then
  fail "monitoring check failed (see ✗ above)"
fi
say "OK"
