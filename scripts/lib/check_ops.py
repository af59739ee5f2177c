#!/usr/bin/env python3
"""Checks of the ops configuration for scripts/check-ops (docs/ops.md, "Checks").

  check_ops.py dashboards DIR --rules-out FILE   Grafana dashboards: structure, queries, labels;
                                                 writes every query as a recording rule to FILE
                                                 for `promtool check rules` to parse.
  check_ops.py metrics                           every metric that dashboards and alerts use is in
                                                 the catalogue (docs/metrics.md)
  check_ops.py compose [--schema FILE]           docker-compose.yml: references between services,
                                                 files, volumes, Prometheus targets and Grafana
                                                 mounts; with --schema, also the Compose
                                                 Specification's JSON schema

`metrics` and `compose` need PyYAML, `--schema` also jsonschema (scripts/check-ops installs
pinned versions into target/ops-cache). Exit status 1 and one line per problem on failure.
"""

import argparse
import glob
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DASHBOARDS = os.path.join(ROOT, "config", "grafana", "dashboards")
ALERTS = os.path.join(ROOT, "config", "prometheus", "alerts.yml")
PROMETHEUS = os.path.join(ROOT, "config", "prometheus", "prometheus.yml")
CATALOGUE = os.path.join(ROOT, "docs", "metrics.md")
COMPOSE = os.path.join(ROOT, "docker-compose.yml")
DATASOURCE_UID = "prometheus"

problems = []


def problem(where, what):
    problems.append(f"{os.path.relpath(where, ROOT) if os.path.isabs(where) else where}: {what}")


def finish(ok_message):
    if problems:
        for p in problems:
            print(f"  FAILED: {p}", file=sys.stderr)
        sys.exit(1)
    print(f"  SUCCESS: {ok_message}")


# ── PromQL, just enough to name the metrics a query reads ────────────────────────────────────

KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
            "offset", "bool", "inf", "nan", "atan2", "start", "end"}


def metric_names(expr):
    """The metric names an expression selects (functions, keywords and label names left out)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    e = re.sub(r"\{[^}]*\}", " ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    names = set()
    for m in re.finditer(r"(?<![\w.$])([a-zA-Z_:][a-zA-Z0-9_:]*)", e):
        name = m.group(1)
        rest = e[m.end():].lstrip()
        if rest.startswith("(") or name.lower() in KEYWORDS:
            continue
        names.add(name)
    # A selector written only as {__name__="…"} is not used here; the braces were dropped above.
    return names


def windows(expr):
    return re.findall(r"\[([^\]]*)\]", re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr))


# ── Dashboards ──────────────────────────────────────────────────────────────────────────────

def walk_panels(panels):
    for p in panels:
        yield p
        yield from walk_panels(p.get("panels") or [])


def datasource_uid(ds):
    return ds.get("uid") if isinstance(ds, dict) else ds


def check_dashboards(directory, rules_out):
    files = sorted(glob.glob(os.path.join(directory, "*.json")))
    if not files:
        problem(directory, "no dashboards")
    uids, titles, rules = {}, {}, []
    for path in files:
        try:
            with open(path, encoding="utf-8") as f:
                board = json.load(f)
        except (OSError, ValueError) as error:
            problem(path, f"not JSON: {error}")
            continue
        if not isinstance(board, dict):
            problem(path, "not a dashboard object")
            continue
        uid, title = board.get("uid"), board.get("title")
        if not isinstance(uid, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", uid):
            problem(path, f"uid {uid!r}: 1-40 letters, digits, - or _")
        elif uid in uids:
            problem(path, f"uid {uid} is also {uids[uid]}'s")
        uids[uid] = os.path.basename(path)
        if not isinstance(title, str) or not title.strip():
            problem(path, "no title")
        elif title in titles:
            problem(path, f"title {title!r} is also {titles[title]}'s")
        titles[title] = os.path.basename(path)
        if not isinstance(board.get("schemaVersion"), int):
            problem(path, "no integer schemaVersion")
        if not isinstance(board.get("time"), dict) or not {"from", "to"} <= set(board["time"]):
            problem(path, "no time range (time.from, time.to)")
        if not board.get("refresh"):
            problem(path, "no refresh interval")
        if board.get("id") not in (None,):
            problem(path, "id must be null (Grafana assigns it; uid identifies the dashboard)")
        panels = board.get("panels")
        if not isinstance(panels, list) or not panels:
            problem(path, "no panels")
            continue
        ids, boxes = set(), []
        for panel in walk_panels(panels):
            where = f"{os.path.basename(path)}: panel {panel.get('id')} {panel.get('title')!r}"
            if panel.get("id") in ids or not isinstance(panel.get("id"), int):
                problem(path, f"{where}: missing or repeated panel id")
            ids.add(panel.get("id"))
            if not panel.get("title"):
                problem(path, f"{where}: no title")
            grid = panel.get("gridPos") or {}
            if not all(isinstance(grid.get(k), int) for k in ("h", "w", "x", "y")):
                problem(path, f"{where}: gridPos needs integer h, w, x, y")
            else:
                if grid["x"] < 0 or grid["w"] < 1 or grid["x"] + grid["w"] > 24:
                    problem(path, f"{where}: gridPos is outside the 24 columns")
                for other, box in boxes:
                    if (grid["x"] < box["x"] + box["w"] and box["x"] < grid["x"] + grid["w"]
                            and grid["y"] < box["y"] + box["h"] and box["y"] < grid["y"] + grid["h"]):
                        problem(path, f"{where}: overlaps panel {other}")
                boxes.append((panel.get("id"), grid))
            if panel.get("type") == "row":
                if panel.get("targets"):
                    problem(path, f"{where}: a row has no queries")
                continue
            if datasource_uid(panel.get("datasource")) != DATASOURCE_UID:
                problem(path, f"{where}: datasource must be the uid {DATASOURCE_UID!r}")
            targets = panel.get("targets")
            if not isinstance(targets, list) or not targets:
                problem(path, f"{where}: no targets")
                continue
            refs = set()
            for target in targets:
                expr = target.get("expr")
                ref = target.get("refId")
                if not isinstance(expr, str) or not expr.strip():
                    problem(path, f"{where}: target {ref} has no expr")
                    continue
                if ref in refs or not ref:
                    problem(path, f"{where}: missing or repeated refId {ref!r}")
                refs.add(ref)
                if "datasource" in target and datasource_uid(target["datasource"]) != DATASOURCE_UID:
                    problem(path, f"{where}: target {ref}: datasource must be the uid {DATASOURCE_UID!r}")
                text = expr + " " + str(target.get("legendFormat", ""))
                if re.search(r"tenant", text, re.IGNORECASE):
                    problem(path, f"{where}: target {ref} mentions a tenant (no tenant labels: docs/metrics.md)")
                # Graphs over time rate over Grafana's $__rate_interval; single values may use
                # the dashboard's range or a fixed window they name in their title.
                if panel.get("type") in ("timeseries", "heatmap"):
                    for window in windows(expr):
                        if window != "$__rate_interval":
                            problem(path, f"{where}: target {ref} uses [{window}], not [$__rate_interval]")
                promql = (expr.replace("$__rate_interval", "1m").replace("$__range", "1h")
                          .replace("$__interval", "1m"))
                if "$" in promql:
                    problem(path, f"{where}: target {ref} uses a variable no dashboard defines")
                name = re.sub(r"\W", "_", f"{uid}_panel_{panel.get('id')}_{ref}")
                rules.append({"record": f"dashboard:{name}", "expr": promql})
    with open(rules_out, "w", encoding="utf-8") as f:
        # JSON is YAML: no PyYAML needed to write it.
        json.dump({"groups": [{"name": "dashboard-queries", "rules": rules}]}, f, indent=1)
    finish(f"{len(files)} dashboards, {len(rules)} queries")


# ── Metric names against the catalogue ──────────────────────────────────────────────────────

def catalogue():
    """Metric names in docs/metrics.md's table, and which of them are histograms."""
    names, histograms = set(), set()
    with open(CATALOGUE, encoding="utf-8") as f:
        for line in f:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) < 2 or not line.lstrip().startswith("|"):
                continue
            found = {re.sub(r"\{.*\}", "", n) for n in re.findall(r"`([a-z_:][a-z0-9_:{}, ]*)`", cells[0])}
            names |= found
            if "histogram" in cells[1]:
                histograms |= found
    return names, histograms


def used_metrics():
    import yaml

    used = {}
    for path in sorted(glob.glob(os.path.join(DASHBOARDS, "*.json"))):
        with open(path, encoding="utf-8") as f:
            board = json.load(f)
        for panel in walk_panels(board.get("panels", [])):
            for target in panel.get("targets") or []:
                for name in metric_names(target.get("expr", "")):
                    used.setdefault(name, set()).add(os.path.basename(path))
    with open(ALERTS, encoding="utf-8") as f:
        rules = yaml.safe_load(f)
    for group in rules["groups"]:
        for rule in group["rules"]:
            for name in metric_names(rule["expr"]):
                used.setdefault(name, set()).add("alerts.yml")
    return used


def check_metrics(list_them):
    names, histograms = catalogue()
    # `up` is Prometheus's own, per scrape target.
    known = names | {"up"}
    used = used_metrics()
    for name, where in sorted(used.items()):
        base = re.sub(r"_(bucket|count|sum)$", "", name)
        if name in known or (base != name and base in histograms):
            continue
        problem(CATALOGUE, f"{name} (used in {', '.join(sorted(where))}) is not in the catalogue")
    if list_them:
        for name in sorted(used):
            print(f"    {name}")
    finish(f"{len(used)} metric names used by dashboards and alerts, all in docs/metrics.md")


# ── docker-compose.yml ──────────────────────────────────────────────────────────────────────

def read_env_file(path):
    env = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                key, value = line.split("=", 1)
                env[key.strip()] = value.strip()
    return env


def interpolate(value, env):
    """Compose's ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error} and ${VAR?error}."""
    def one(m):
        name, op, arg = m.group(1), m.group(2) or "", m.group(3) or ""
        have = name in env and (env[name] != "" or ":" not in op)
        if op.endswith("?"):
            return env[name] if have else f"<unset {name}>"
        if op.endswith("-"):
            return env[name] if have else arg
        return env.get(name, "")
    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:?[-?])?([^}]*)\}", one, value) if isinstance(value, str) else value


def check_compose(schema_path):
    import yaml

    with open(COMPOSE, encoding="utf-8") as f:
        compose = yaml.safe_load(f)
    if schema_path:
        import jsonschema

        with open(schema_path, encoding="utf-8") as f:
            schema = json.load(f)
        validator = jsonschema.Draft7Validator(schema)
        for error in sorted(validator.iter_errors(compose), key=lambda e: list(e.absolute_path)):
            path = "/".join(str(p) for p in error.absolute_path) or "(top level)"
            problem(COMPOSE, f"{path}: {error.message}")

    services = compose.get("services") or {}
    volumes = set((compose.get("volumes") or {}).keys())
    variants = {"default": {}, "demo (config/compose/demo.env)":
                read_env_file(os.path.join(ROOT, "config", "compose", "demo.env"))}
    for name, service in services.items():
        profiles = service.get("profiles") or []
        depends = service.get("depends_on") or []
        for dep in (depends if isinstance(depends, list) else depends.keys()):
            if dep not in services:
                problem(COMPOSE, f"{name} depends on {dep}, which is no service")
            elif not profiles and services[dep].get("profiles"):
                problem(COMPOSE, f"{name} runs without a profile but depends on {dep}, which needs one")
        build = service.get("build")
        context = build if isinstance(build, str) else (build or {}).get("context")
        if context and not os.path.isfile(os.path.join(ROOT, context, "Dockerfile")):
            problem(COMPOSE, f"{name}: no Dockerfile in {context}")
        if not service.get("image") and not build:
            problem(COMPOSE, f"{name}: neither image nor build")
        for mount in service.get("volumes") or []:
            source = mount.split(":")[0] if isinstance(mount, str) else mount.get("source")
            if source.startswith((".", "/")):
                if not os.path.exists(os.path.join(ROOT, source)):
                    problem(COMPOSE, f"{name}: bind mount {source} does not exist")
            elif source not in volumes:
                problem(COMPOSE, f"{name}: volume {source} is not declared under volumes")
        env_files = service.get("env_file") or []
        for entry in [env_files] if isinstance(env_files, str) else env_files:
            raw = entry if isinstance(entry, str) else entry.get("path")
            for variant, env in variants.items():
                path = interpolate(raw, env)
                if not os.path.isfile(os.path.join(ROOT, path)):
                    problem(COMPOSE, f"{name}: env_file {path} ({variant}) does not exist")
        environment = service.get("environment") or {}
        if isinstance(environment, dict):
            for key, value in environment.items():
                if re.search(r"tenant", f"{key}", re.IGNORECASE):
                    problem(COMPOSE, f"{name}: {key}: no per-tenant settings here")
                for variant, env in variants.items():
                    if variant.startswith("demo") and "<unset" in str(interpolate(value, env)):
                        problem(COMPOSE, f"{name}: {key} needs a variable config/compose/demo.env does not set")
        if not service.get("healthcheck"):
            problem(COMPOSE, f"{name}: no healthcheck")

    # Prometheus scrapes services that exist, on the ports they listen on.
    with open(PROMETHEUS, encoding="utf-8") as f:
        prometheus = yaml.safe_load(f)
    for job in prometheus.get("scrape_configs") or []:
        for static in job.get("static_configs") or []:
            for target in static.get("targets") or []:
                host = target.rsplit(":", 1)[0]
                if host not in services:
                    problem(PROMETHEUS, f"job {job.get('job_name')}: target {target} is no compose service")
    for name, service in services.items():
        for mount in service.get("volumes") or []:
            if isinstance(mount, str) and mount.split(":")[0].rstrip("/") == "./config/prometheus":
                if mount.split(":")[1].rstrip("/") != "/etc/prometheus":
                    problem(COMPOSE, f"{name}: config/prometheus must be mounted at /etc/prometheus")

    # Grafana: the data source URL names the prometheus service; the dashboards provider reads the
    # directory the dashboards are mounted at.
    grafana_dir = os.path.join(ROOT, "config", "grafana", "provisioning")
    with open(os.path.join(grafana_dir, "datasources", "prometheus.yml"), encoding="utf-8") as f:
        datasources = yaml.safe_load(f)["datasources"]
    if not any(d.get("uid") == DATASOURCE_UID for d in datasources):
        problem(grafana_dir, f"no data source with uid {DATASOURCE_UID}")
    for d in datasources:
        host = re.sub(r"^https?://", "", d.get("url", "")).split(":")[0].split("/")[0]
        if host not in services:
            problem(grafana_dir, f"data source {d.get('name')}: {d.get('url')} is no compose service")
    with open(os.path.join(grafana_dir, "dashboards", "switchboard.yml"), encoding="utf-8") as f:
        providers = yaml.safe_load(f)["providers"]
    mounted = {m.split(":")[1] for s in services.values() for m in s.get("volumes") or []
               if isinstance(m, str) and m.split(":")[0].rstrip("/") == "./config/grafana/dashboards"}
    for p in providers:
        if (p.get("options") or {}).get("path") not in mounted:
            problem(grafana_dir, f"dashboards provider {p.get('name')} reads {p.get('options', {}).get('path')}, "
                                 f"but config/grafana/dashboards is mounted at {sorted(mounted) or 'no path'}")

    what = "the Compose Specification schema and " if schema_path else ""
    finish(f"docker-compose.yml: {what}references ({len(services)} services)")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("dashboards")
    d.add_argument("directory")
    d.add_argument("--rules-out", required=True)
    m = sub.add_parser("metrics")
    m.add_argument("--list", action="store_true", help="print every metric name used")
    c = sub.add_parser("compose")
    c.add_argument("--schema", help="the Compose Specification's JSON schema")
    args = parser.parse_args()
    if args.command == "dashboards":
        check_dashboards(args.directory, args.rules_out)
    elif args.command == "metrics":
        check_metrics(args.list)
    else:
        check_compose(args.schema)


if __name__ == "__main__":
    main()
