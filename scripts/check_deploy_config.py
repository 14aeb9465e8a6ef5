#!/usr/bin/env python3
"""Checks that the three descriptions of the functions agree, so they never drift apart:

- the workspace members under functions/ (one crate, one binary, one Lambda function),
- the local router in Cargo.toml ([workspace.metadata.lambda.watch.router]),
- template.yaml (the SAM functions, their HttpApi routes, schedule and custom resource),

that every function has its Errors and Throttles alarms, that the dashboard and the alarms
name only metrics of the service's namespace that the code emits (shared/src/metrics.rs),
and that the functions' reserved concurrency fits the database connection budget: for every
ConnectionBudget the template allows, the sum over functions of reserved concurrency times
connections per instance (Metadata DatabaseConnections) is at most that budget, and every
function that connects has its share.

    python scripts/check_deploy_config.py [ROOT]

Prints every mismatch and exits 1, or prints a one-line summary and exits 0.
"""

from __future__ import annotations

import json
import re
import sys
import tomllib
from pathlib import Path

import yaml

SAM_FUNCTION = "AWS::Serverless::Function"
HTTP_API = "AWS::Serverless::HttpApi"
SCHEDULE_EVENTS = {"Schedule", "ScheduleV2"}
EXPECTED = {
    "Runtime": "provided.al2023",
    "Architectures": ["arm64"],
    "Handler": "bootstrap",
}


class CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short tags (!Ref, !Sub, !GetAtt, ...) as their long forms."""


def _intrinsic(loader: CfnLoader, suffix: str, node: yaml.Node) -> dict:
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix in ("Ref", "Condition"):
        return {suffix: value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


CfnLoader.add_multi_constructor("!", _intrinsic)


def load_template(path: Path) -> dict:
    with path.open(encoding="utf-8") as f:
        return yaml.load(f, Loader=CfnLoader)  # noqa: S506 (a SafeLoader subclass)


def function_crates(root: Path) -> dict[str, Path]:
    """Package name -> directory, for every workspace member under functions/."""
    manifest = tomllib.loads((root / "Cargo.toml").read_text(encoding="utf-8"))
    crates: dict[str, Path] = {}
    for pattern in manifest.get("workspace", {}).get("members", []):
        if not pattern.startswith("functions"):
            continue
        for directory in sorted(root.glob(pattern)):
            cargo = directory / "Cargo.toml"
            if cargo.is_file():
                package = tomllib.loads(cargo.read_text(encoding="utf-8"))["package"]
                crates[package["name"]] = directory
    return crates


def router_routes(root: Path) -> set[tuple[str, str, str]]:
    """(METHOD, path, function) from the local router; a bare function name means any method."""
    manifest = tomllib.loads((root / "Cargo.toml").read_text(encoding="utf-8"))
    router = (
        manifest.get("workspace", {})
        .get("metadata", {})
        .get("lambda", {})
        .get("watch", {})
        .get("router", {})
    )
    routes = set()
    for path, target in router.items():
        if isinstance(target, str):
            routes.add(("ANY", path, target))
            continue
        for entry in target:
            routes.add((entry.get("method", "ANY").upper(), path, entry["function"]))
    return routes


def check(root: Path) -> tuple[list[str], dict[str, int]]:
    """Every mismatch between the crates, the router and the template, as readable lines."""
    problems: list[str] = []
    crates = function_crates(root)
    router = router_routes(root)
    template = load_template(root / "template.yaml")
    resources: dict = template.get("Resources", {})
    globals_ = template.get("Globals", {}).get("Function", {})

    apis = [k for k, v in resources.items() if v.get("Type") == HTTP_API]
    if len(apis) != 1:
        problems.append(f"template.yaml: expected one {HTTP_API}, found {len(apis)}")

    binaries: dict[str, str] = {}  # binary -> logical id
    template_routes: set[tuple[str, str, str]] = set()
    triggered: set[str] = set()
    for logical_id, resource in resources.items():
        if resource.get("Type") != SAM_FUNCTION:
            continue
        where = f"template.yaml {logical_id}"
        metadata = resource.get("Metadata", {})
        props = resource.get("Properties", {})
        binary = metadata.get("BuildProperties", {}).get("Binary")
        if metadata.get("BuildMethod") != "rust-cargolambda" or not binary:
            problems.append(f"{where}: needs Metadata BuildMethod rust-cargolambda and BuildProperties Binary")
            continue
        if binary in binaries:
            problems.append(f"{where}: builds {binary}, as {binaries[binary]} already does")
        binaries[binary] = logical_id
        if props.get("CodeUri") != ".":
            problems.append(f"{where}: CodeUri must be the workspace root '.'")
        for key, expected in EXPECTED.items():
            value = props.get(key, globals_.get(key))
            if value != expected:
                problems.append(f"{where}: {key} is {value!r}, expected {expected!r}")
        name = props.get("FunctionName")
        if name != {"Fn::Sub": f"${{AWS::StackName}}-{binary}"}:
            problems.append(f"{where}: FunctionName must be !Sub ${{AWS::StackName}}-{binary}")
        for event in (props.get("Events") or {}).values():
            kind = event.get("Type")
            event_props = event.get("Properties", {})
            if kind == "HttpApi":
                if event_props.get("ApiId") != {"Ref": apis[0] if apis else None}:
                    problems.append(f"{where}: its HttpApi event must use ApiId !Ref {apis[0] if apis else '?'}")
                template_routes.add(
                    (str(event_props.get("Method", "ANY")).upper(), event_props.get("Path"), binary)
                )
                triggered.add(binary)
            elif kind in SCHEDULE_EVENTS:
                triggered.add(binary)
        if not _has_log_group(resources, logical_id, binary):
            problems.append(f"{where}: no AWS::Logs::LogGroup with RetentionInDays for it")
        if not _role_may_log(resources, binary):
            problems.append(f"{where}: FunctionRole may not write to /aws/lambda/${{AWS::StackName}}-{binary}")

    for resource in resources.values():
        token = resource.get("Properties", {}).get("ServiceToken")
        if isinstance(token, dict) and "Fn::GetAtt" in token:
            for binary, logical_id in binaries.items():
                if token["Fn::GetAtt"][0] == logical_id:
                    triggered.add(binary)

    for name in sorted(set(crates) - set(binaries)):
        problems.append(f"functions/{crates[name].name} ({name}) has no function in template.yaml")
    for name in sorted(set(binaries) - set(crates)):
        problems.append(f"template.yaml {binaries[name]} builds {name}, which is no crate under functions/")
    for name in sorted({f for _, _, f in router} - set(crates)):
        problems.append(f"Cargo.toml router names {name}, which is no crate under functions/")
    for method, path, name in sorted(router - template_routes):
        problems.append(f"route {method} {path} -> {name} is in the Cargo.toml router but not in template.yaml")
    for method, path, name in sorted(template_routes - router):
        problems.append(f"route {method} {path} -> {name} is in template.yaml but not in the Cargo.toml router")
    for name in sorted(set(binaries) - triggered):
        problems.append(
            f"template.yaml {binaries[name]} has no route, schedule or custom resource: nothing invokes it"
        )
    problems += check_connection_budget(template)
    problems += check_alarms(resources, binaries)
    problems += check_metric_names(root, resources)
    return problems, {"functions": len(binaries), "routes": len(template_routes)}


def check_connection_budget(template: dict) -> list[str]:
    """Every budget the template allows is enough for every function's reserved instances."""
    problems: list[str] = []
    budgets = template.get("Parameters", {}).get("ConnectionBudget", {}).get("AllowedValues")
    table = template.get("Mappings", {}).get("ReservedConcurrency", {})
    if not budgets:
        return ["template.yaml: no ConnectionBudget parameter with AllowedValues"]
    functions = {
        k: v for k, v in template.get("Resources", {}).items() if v.get("Type") == SAM_FUNCTION
    }
    used = {str(b): 0 for b in budgets}
    for logical_id, resource in functions.items():
        where = f"template.yaml {logical_id}"
        connections = resource.get("Metadata", {}).get("DatabaseConnections")
        if not isinstance(connections, int) or connections < 0:
            problems.append(f"{where}: Metadata DatabaseConnections must say how many connections one instance holds")
            continue
        reserved = resource.get("Properties", {}).get("ReservedConcurrentExecutions")
        if connections == 0:
            continue
        key = logical_id.removesuffix("Function")
        expected = {"Fn::FindInMap": ["ReservedConcurrency", {"Ref": "ConnectionBudget"}, key]}
        if reserved != expected:
            problems.append(
                f"{where}: holds database connections, so its ReservedConcurrentExecutions must be "
                f"!FindInMap [ReservedConcurrency, !Ref ConnectionBudget, {key}]"
            )
            continue
        for budget in used:
            instances = table.get(budget, {}).get(key)
            if not isinstance(instances, int) or instances < 1:
                problems.append(f"template.yaml Mappings ReservedConcurrency {budget}: no {key} (at least 1)")
                continue
            used[budget] += instances * connections
    for budget, total in used.items():
        if total > int(budget):
            problems.append(
                f"template.yaml: ConnectionBudget {budget} is exceeded: the reserved instances hold "
                f"up to {total} connections"
            )
    return problems


# The metrics the code emits: `pub const NAME: Metric = sum("Name", ...)` or `dist("Name", ...)`.
RUST_METRIC = re.compile(r'pub const \w+: Metric = (?:sum|dist)\(\s*"(\w+)"')
# The service's namespace as the template names it (the parameter).
NAMESPACE = "${MetricsNamespace}"


def emitted_metrics(root: Path) -> set[str]:
    """The metric names shared/src/metrics.rs defines."""
    source = (root / "shared" / "src" / "metrics.rs").read_text(encoding="utf-8")
    return set(RUST_METRIC.findall(source))


def check_alarms(resources: dict, binaries: dict[str, str]) -> list[str]:
    """Every function has an Errors and a Throttles alarm on its own FunctionName."""
    problems = []
    alarmed: set[tuple[str, str]] = set()
    for resource in resources.values():
        if resource.get("Type") != "AWS::CloudWatch::Alarm":
            continue
        props = resource.get("Properties", {})
        if props.get("Namespace") != "AWS/Lambda":
            continue
        for dim in props.get("Dimensions", []):
            if dim.get("Name") == "FunctionName" and isinstance(dim.get("Value"), dict):
                alarmed.add((dim["Value"].get("Ref"), props.get("MetricName")))
    for binary, logical_id in sorted(binaries.items()):
        for metric in ("Errors", "Throttles"):
            if (logical_id, metric) not in alarmed:
                problems.append(
                    f"template.yaml {logical_id} ({binary}) has no {metric} alarm "
                    f"(AWS::CloudWatch::Alarm on AWS/Lambda {metric}, FunctionName !Ref {logical_id})"
                )
    return problems


def _sub_text(value) -> str:
    """The text of a !Sub (either form), else ""."""
    if isinstance(value, dict) and "Fn::Sub" in value:
        sub = value["Fn::Sub"]
        return sub[0] if isinstance(sub, list) else str(sub)
    return value if isinstance(value, str) else ""


def named_metrics(text: str) -> set[str]:
    """Metric names of the service's namespace in dashboard JSON or alarm expressions: metric
    arrays ["${MetricsNamespace}", "Name", ...], SEARCH('{${MetricsNamespace},...}
    MetricName="Name"') and SELECT F(Name) FROM SCHEMA("${MetricsNamespace}", ...)."""
    ns = re.escape(NAMESPACE)
    found = set(re.findall(r'\[\s*"' + ns + r'"\s*,\s*"(\w+)"', text))
    found |= set(re.findall(r"\{" + ns + r"[^}]*\}[^']*?MetricName=\\?\"(\w+)", text))
    found |= set(re.findall(r"SELECT\s+\w+\((\w+)\)\s+FROM\s+SCHEMA\(\"" + ns, text))
    return found


def dashboard_metrics(resources: dict) -> tuple[set[str], list[str]]:
    """The service's metric names every dashboard shows, and problems reading them."""
    names: set[str] = set()
    problems = []
    for logical_id, resource in resources.items():
        if resource.get("Type") != "AWS::CloudWatch::Dashboard":
            continue
        body = _sub_text(resource.get("Properties", {}).get("DashboardBody"))
        try:
            # Every ${...} substitution stands in a JSON string; the body must be JSON.
            json.loads(re.sub(r"\$\{[^}]+\}", "x", body))
        except ValueError as err:
            problems.append(f"template.yaml {logical_id}: DashboardBody is not JSON once substituted: {err}")
        names |= named_metrics(body)
    return names, problems


def check_metric_names(root: Path, resources: dict) -> list[str]:
    """The dashboard and the alarms name only metrics the code emits."""
    emitted = emitted_metrics(root)
    if not emitted:
        return ["shared/src/metrics.rs: no metric found (pub const NAME: Metric = sum/dist(...))"]
    shown, problems = dashboard_metrics(resources)
    if not shown:
        problems.append("template.yaml: no dashboard shows any of the service's metrics")
    for name in sorted(shown - emitted):
        problems.append(f"template.yaml dashboard shows {name}, which shared/src/metrics.rs does not emit")
    for logical_id, resource in resources.items():
        if resource.get("Type") != "AWS::CloudWatch::Alarm":
            continue
        props = resource.get("Properties", {})
        texts = [_sub_text(m.get("Expression")) for m in props.get("Metrics", [])]
        named = set().union(*(named_metrics(t) for t in texts)) if texts else set()
        if props.get("Namespace") == {"Ref": "MetricsNamespace"}:
            named.add(props.get("MetricName"))
        for name in sorted(named - emitted):
            problems.append(f"template.yaml {logical_id} alarms on {name}, which shared/src/metrics.rs does not emit")
    return problems


def _has_log_group(resources: dict, logical_id: str, binary: str) -> bool:
    accepted = {
        f"/aws/lambda/${{{logical_id}}}",
        f"/aws/lambda/${{AWS::StackName}}-{binary}",
    }
    for resource in resources.values():
        if resource.get("Type") != "AWS::Logs::LogGroup":
            continue
        props = resource.get("Properties", {})
        name = props.get("LogGroupName")
        if isinstance(name, dict) and name.get("Fn::Sub") in accepted and "RetentionInDays" in props:
            return True
    return False


def _role_may_log(resources: dict, binary: str) -> bool:
    suffix = f":log-group:/aws/lambda/${{AWS::StackName}}-{binary}:*"
    role = resources.get("FunctionRole", {}).get("Properties", {})
    for policy in role.get("Policies", []):
        for statement in policy.get("PolicyDocument", {}).get("Statement", []):
            if not isinstance(statement, dict) or "logs:PutLogEvents" not in statement.get("Action", []):
                continue
            for arn in statement.get("Resource", []):
                if isinstance(arn, dict) and str(arn.get("Fn::Sub", "")).endswith(suffix):
                    return True
    return False


def main(argv: list[str]) -> int:
    root = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parents[1]
    problems, counts = check(root)
    if problems:
        print("deploy config drift:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    print(
        f"deploy config: {counts['functions']} functions and {counts['routes']} routes agree "
        "across functions/, the Cargo.toml router and template.yaml"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
