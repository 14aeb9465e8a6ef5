"""The deploy-config check passes on the real files and fails when one side changes alone."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "check_deploy_config.py"
sys.path.insert(0, str(SCRIPT.parent))

import check_deploy_config  # noqa: E402


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """The template, the root manifest and every function manifest, in a scratch root."""
    shutil.copy(ROOT / "template.yaml", tmp_path)
    shutil.copy(ROOT / "Cargo.toml", tmp_path)
    for manifest in (ROOT / "functions").glob("*/Cargo.toml"):
        target = tmp_path / "functions" / manifest.parent.name
        target.mkdir(parents=True)
        shutil.copy(manifest, target)
    (tmp_path / "shared" / "src").mkdir(parents=True)
    shutil.copy(ROOT / "shared" / "src" / "metrics.rs", tmp_path / "shared" / "src")
    return tmp_path


def problems(root: Path) -> list[str]:
    return check_deploy_config.check(root)[0]


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} is not in {path.name}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_the_real_files_agree():
    found, counts = check_deploy_config.check(ROOT)
    assert found == []
    crates = sorted(m.parent.name for m in (ROOT / "functions").glob("*/Cargo.toml"))
    # Every crate is a function; all but the ones without a route (migrate, and the two
    # sweepers ring-timeout and deliver-events) serve one route each, but api-docs, which
    # serves three (the document, the page and its renderer), and console, which serves four
    # (the page, its two script modules and its style sheet).
    unrouted = {"migrate", "ring-timeout", "deliver-events"}
    assert "health" in crates and unrouted <= set(crates) and "api-docs" in crates
    assert "console" in crates
    routes = len(crates) - len(unrouted) + 2 + 3
    assert counts == {"functions": len(crates), "routes": routes}


def test_the_copy_agrees_before_any_change(copy: Path):
    assert problems(copy) == []


def test_a_route_removed_from_the_template_alone_fails(copy: Path):
    template = copy / "template.yaml"
    text = template.read_text(encoding="utf-8")
    # The Events block of GetRoomFunction, up to and including its Path line.
    block = re.compile(
        r"(  GetRoomFunction:\n(?:.*\n)*?)      Events:\n(?:.*\n)*?            Path: [^\n]+\n"
    )
    changed, count = block.subn(r"\1", text, count=1)
    assert count == 1
    template.write_text(changed, encoding="utf-8")
    found = problems(copy)
    assert "route GET /api/rooms/{room_name} -> get-room is in the Cargo.toml router but not in template.yaml" in found
    assert any("GetRoomFunction has no route" in p for p in found), found


def test_a_changed_template_path_alone_fails(copy: Path):
    edit(copy / "template.yaml", "Path: /api/rooms/{room_name}/end\n", "Path: /api/rooms/{room_name}/finish\n")
    found = problems(copy)
    assert "route POST /api/rooms/{room_name}/finish -> end-room is in template.yaml but not in the Cargo.toml router" in found
    assert "route POST /api/rooms/{room_name}/end -> end-room is in the Cargo.toml router but not in template.yaml" in found


def test_a_router_entry_added_alone_fails(copy: Path):
    with (copy / "Cargo.toml").open("a", encoding="utf-8") as f:
        f.write('"/api/rooms/{room_name}/kick" = [{ method = "POST", function = "kick-participant" }]\n')
    found = problems(copy)
    assert "Cargo.toml router names kick-participant, which is no crate under functions/" in found
    assert (
        "route POST /api/rooms/{room_name}/kick -> kick-participant is in the Cargo.toml router but not in template.yaml"
        in found
    )


def test_a_router_method_added_alone_fails(copy: Path):
    edit(
        copy / "Cargo.toml",
        '"/api/rooms/{room_name}" = [{ method = "GET", function = "get-room" }]',
        '"/api/rooms/{room_name}" = [{ method = "GET", function = "get-room" }, { method = "DELETE", function = "end-room" }]',
    )
    assert problems(copy) == [
        "route DELETE /api/rooms/{room_name} -> end-room is in the Cargo.toml router but not in template.yaml"
    ]


def test_a_missing_function_crate_fails(copy: Path):
    shutil.rmtree(copy / "functions" / "end-room")
    found = problems(copy)
    assert "template.yaml EndRoomFunction builds end-room, which is no crate under functions/" in found
    assert "Cargo.toml router names end-room, which is no crate under functions/" in found


def test_a_new_crate_without_a_template_function_fails(copy: Path):
    crate = copy / "functions" / "kick-participant"
    crate.mkdir()
    (crate / "Cargo.toml").write_text('[package]\nname = "kick-participant"\n', encoding="utf-8")
    assert problems(copy) == ["functions/kick-participant (kick-participant) has no function in template.yaml"]


def test_a_function_that_is_not_built_for_arm64_fails(copy: Path):
    edit(
        copy / "template.yaml",
        "        Binary: health\n    Properties:\n",
        "        Binary: health\n    Properties:\n      Architectures: [x86_64]\n",
    )
    assert problems(copy) == ["template.yaml HealthFunction: Architectures is ['x86_64'], expected ['arm64']"]


def test_the_command_exits_non_zero_and_names_the_drift(copy: Path):
    shutil.rmtree(copy / "functions" / "health")
    run = subprocess.run(
        [sys.executable, str(SCRIPT), str(copy)], capture_output=True, text=True, check=False
    )
    assert run.returncode == 1
    assert "HealthFunction builds health, which is no crate under functions/" in run.stderr
    ok = subprocess.run([sys.executable, str(SCRIPT), str(ROOT)], capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr


def test_every_connection_budget_holds_its_reserved_instances():
    template = check_deploy_config.load_template(ROOT / "template.yaml")
    assert check_deploy_config.check_connection_budget(template) == []
    budgets = template["Parameters"]["ConnectionBudget"]["AllowedValues"]
    assert budgets == sorted(budgets, key=int) and len(budgets) >= 3


def test_a_budget_exceeded_by_reserved_concurrency_fails(copy: Path):
    # Two more join-room instances than the smallest budget has room for.
    template = copy / "template.yaml"
    text = template.read_text(encoding="utf-8")
    first = text.index('    "40":')
    at = text.index("      JoinRoom: ", first)
    end = text.index("\n", at)
    instances = int(text[at:end].split(":")[1])
    template.write_text(text[:at] + f"      JoinRoom: {instances + 2}" + text[end:], encoding="utf-8")
    assert any("ConnectionBudget 40 is exceeded" in p for p in problems(copy))


def test_a_function_that_connects_without_reserved_concurrency_fails(copy: Path):
    edit(
        copy / "template.yaml",
        "      ReservedConcurrentExecutions: !FindInMap [ReservedConcurrency, !Ref ConnectionBudget, UserCalls]\n",
        "",
    )
    assert any("UserCallsFunction: holds database connections" in p for p in problems(copy))


def test_a_function_that_does_not_say_its_connections_fails(copy: Path):
    edit(copy / "template.yaml", "      DatabaseConnections: 0\n", "")
    assert any("ApiDocsFunction: Metadata DatabaseConnections" in p for p in problems(copy))



def test_every_function_has_errors_and_throttles_alarms_and_the_dashboard_shows_emitted_metrics():
    template = check_deploy_config.load_template(ROOT / "template.yaml")
    shown, problems = check_deploy_config.dashboard_metrics(template["Resources"])
    assert problems == []
    emitted = check_deploy_config.emitted_metrics(ROOT)
    # Every metric the code emits is on the dashboard, and nothing else of its namespace.
    assert shown == emitted and len(emitted) >= 16


def test_a_function_without_its_errors_alarm_fails(copy: Path):
    template = copy / "template.yaml"
    edit(template, "          Value: !Ref HealthFunction\n      Statistic: Sum\n", "          Value: !Ref GetRoomFunction\n      Statistic: Sum\n")
    found = problems(copy)
    assert any("HealthFunction (health) has no Errors alarm" in p for p in found), found


def test_a_new_function_without_alarms_fails(copy: Path):
    """A function added to the template (and its crate) but no alarm: the check names both."""
    template = copy / "template.yaml"
    text = template.read_text(encoding="utf-8")
    start = text.index("  HealthFunction:\n")
    end = text.index("  HealthLogGroup:\n")
    block = text[start:end]
    new = (
        block.replace("HealthFunction", "PingFunction")
        .replace("Binary: health", "Binary: ping")
        .replace("-health", "-ping")
        .replace("Path: /health", "Path: /ping")
        .replace("ConnectionBudget, Health]", "ConnectionBudget, Health]")
    )
    template.write_text(text.replace(block, block + new, 1), encoding="utf-8")
    found = problems(copy)
    assert any("PingFunction (ping) has no Errors alarm" in p for p in found), found
    assert any("PingFunction (ping) has no Throttles alarm" in p for p in found), found


def test_a_dashboard_metric_the_code_does_not_emit_fails(copy: Path):
    edit(copy / "template.yaml", 'MetricName=\\"DeliveryLag\\"', 'MetricName=\\"DeliveryDelay\\"')
    found = problems(copy)
    assert any("dashboard shows DeliveryDelay" in p for p in found), found


def test_a_metric_renamed_in_the_code_alone_fails(copy: Path):
    edit(copy / "shared" / "src" / "metrics.rs", 'sum("CallsStarted"', 'sum("CallsAnswered"')
    found = problems(copy)
    assert any("dashboard shows CallsStarted" in p for p in found), found


def test_an_alarm_on_a_metric_the_code_does_not_emit_fails(copy: Path):
    edit(copy / "template.yaml", "SELECT SUM(DbUnavailable)", "SELECT SUM(DbRefusals)")
    found = problems(copy)
    assert any("DbUnavailableAlarm alarms on DbRefusals" in p for p in found), found
