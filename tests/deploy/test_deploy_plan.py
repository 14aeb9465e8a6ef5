"""Per-function deploys: what ships, what keeps its deployed code, and reproducible zips."""

import hashlib
import json
import os
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "deploy_plan.py"
HEAD = subprocess.run(
    ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
).stdout.strip()
UNKNOWN = "0123456789abcdef0123456789abcdef01234567"
# Every crate under functions/ is a function of the stack.
CRATES = sorted(m.parent.name for m in (ROOT / "functions").glob("*/Cargo.toml"))


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, check=False, env=env
    )


def outputs(result: subprocess.CompletedProcess) -> dict:
    assert result.returncode == 0, result.stderr
    lines = dict(line.split("=", 1) for line in result.stdout.splitlines())
    return {"functions": json.loads(lines["functions"]), "any": lines["any"]}


def deployed_stack(tmp_path: Path, commit_for: dict[str, str], default: str) -> Path:
    """A live stack's Original template whose functions run the given commits' code."""
    sys.path.insert(0, str(SCRIPT.parent))
    import deploy_plan

    resources = {}
    for f in deploy_plan.functions():
        commit = commit_for.get(f["name"], default)
        key = f"call/{f['name']}/{commit}-0123456789abcdef.zip" if commit else f"{f['name']}.zip"
        resources[f["logical_id"]] = {
            "Type": "AWS::Serverless::Function",
            "Properties": {"CodeUri": f"s3://artifacts/{key}"},
        }
    path = tmp_path / "deployed.json"
    path.write_text(json.dumps({"Resources": resources}), encoding="utf-8")
    return path


ROOT_COMMIT = subprocess.run(
    ["git", "rev-list", "--max-parents=0", "HEAD"], cwd=ROOT, capture_output=True, text=True,
    check=True,
).stdout.split()[-1]


def test_without_a_successful_deploy_every_function_ships():
    result = run("plan", "--base", "")
    plan = outputs(result)
    assert plan["any"] == "true"
    assert sorted(f["name"] for f in plan["functions"]) == CRATES
    assert {"name": "health", "logical_id": "HealthFunction"} in plan["functions"]
    assert "health: no successful deploy yet" in result.stderr


def test_a_base_at_head_ships_nothing():
    assert outputs(run("plan", "--base", HEAD)) == {"functions": [], "any": "false"}


def test_functions_changed_since_the_base_ship():
    result = run("plan", "--base", ROOT_COMMIT)
    assert sorted(f["name"] for f in outputs(result)["functions"]) == CRATES
    assert f"health: changed since {ROOT_COMMIT[:12]}" in result.stderr


def test_a_base_outside_this_history_ships_everything():
    result = run("plan", "--base", UNKNOWN)
    assert sorted(f["name"] for f in outputs(result)["functions"]) == CRATES
    assert "health: last deployed commit 0123456789ab is not in this history" in result.stderr


def test_all_ships_everything_even_at_head():
    plan = outputs(run("plan", "--base", HEAD, "--all"))
    assert sorted(f["name"] for f in plan["functions"]) == CRATES


def test_a_yaml_stack_template_is_read_too(tmp_path: Path):
    sys.path.insert(0, str(SCRIPT.parent))
    import deploy_plan

    body = (
        "Resources:\n  HealthFunction:\n    Type: AWS::Serverless::Function\n"
        f"    Properties:\n      CodeUri: s3://artifacts/call/health/{HEAD}-0123456789abcdef.zip\n"
        "      Role: !GetAtt FunctionRole.Arn\n"
    )
    (tmp_path / "deployed.json").write_text(json.dumps(body), encoding="utf-8")
    code = deploy_plan.deployed_code(tmp_path / "deployed.json")
    assert code == {"HealthFunction": f"s3://artifacts/call/health/{HEAD}-0123456789abcdef.zip"}


def test_zips_are_reproducible_and_executable(tmp_path: Path):
    binary = tmp_path / "bootstrap"
    binary.write_bytes(b"\x7fELF not really")
    first, second = tmp_path / "a.zip", tmp_path / "b.zip"
    assert run("zip", str(binary), str(first)).returncode == 0
    os.utime(binary, (0, 0))
    assert run("zip", str(binary), str(second)).returncode == 0
    assert hashlib.sha256(first.read_bytes()).digest() == hashlib.sha256(second.read_bytes()).digest()
    with zipfile.ZipFile(first) as archive:
        (info,) = archive.infolist()
        assert info.filename == "bootstrap"
        assert stat.S_IMODE(info.external_attr >> 16) == 0o755
        assert archive.read("bootstrap") == binary.read_bytes()


@pytest.fixture
def fake_aws(tmp_path: Path) -> tuple[dict, Path]:
    """An `aws` on PATH that records its arguments instead of uploading."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "aws-calls"
    aws = bin_dir / "aws"
    aws.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n', encoding="utf-8")
    aws.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")
    return env, calls


def test_package_ships_built_functions_and_keeps_the_rest(tmp_path: Path, fake_aws):
    env, calls = fake_aws
    deployed = deployed_stack(tmp_path, {"health": UNKNOWN}, HEAD)
    artifacts = tmp_path / "dist"
    artifacts.mkdir()
    (artifacts / "health.zip").write_bytes(b"zip bytes")
    out = tmp_path / "packaged.json"
    result = run(
        "package", "--deployed", str(deployed), "--artifacts", str(artifacts),
        "--bucket", "artifacts", "--prefix", "call", "--out", str(out), env=env,
    )
    assert result.returncode == 0, result.stderr
    resources = json.loads(out.read_text(encoding="utf-8"))["Resources"]
    digest = hashlib.sha256(b"zip bytes").hexdigest()[:16]
    shipped = f"s3://artifacts/call/health/{HEAD}-{digest}.zip"
    assert resources["HealthFunction"]["Properties"]["CodeUri"] == shipped
    assert resources["JoinRoomFunction"]["Properties"]["CodeUri"] == (
        f"s3://artifacts/call/join-room/{HEAD}-0123456789abcdef.zip"
    )
    # The rest of the template is the real one, intrinsics in their long form.
    assert resources["HealthFunction"]["Properties"]["Role"] == {"Fn::GetAtt": ["FunctionRole", "Arn"]}
    assert calls.read_text(encoding="utf-8").split() == [
        "s3", "cp", "--only-show-errors", str(artifacts / "health.zip"), shipped,
    ]


def test_package_refuses_a_function_neither_built_nor_deployed(tmp_path: Path, fake_aws):
    env, _ = fake_aws
    (tmp_path / "deployed.json").write_text("null", encoding="utf-8")
    (tmp_path / "dist").mkdir()
    result = run(
        "package", "--deployed", str(tmp_path / "deployed.json"), "--artifacts", str(tmp_path / "dist"),
        "--bucket", "artifacts", "--prefix", "call", "--out", str(tmp_path / "packaged.json"), env=env,
    )
    assert result.returncode == 1
    assert "neither built in this run nor deployed" in result.stderr


@pytest.mark.parametrize("deployed_from", [UNKNOWN, "manual"])
def test_package_refuses_to_keep_code_the_plan_did_not_build_when_the_stack_is_behind(
    tmp_path: Path, fake_aws, deployed_from: str
):
    """The plan trusted its base, but the stack runs join-room from another commit (or from a
    key without one): keeping that code would deploy HEAD's template over old code."""
    env, calls = fake_aws
    deployed = deployed_stack(
        tmp_path, {"join-room": "" if deployed_from == "manual" else UNKNOWN}, HEAD
    )
    (tmp_path / "dist").mkdir()
    (tmp_path / "dist" / "health.zip").write_bytes(b"zip bytes")
    result = run(
        "package", "--deployed", str(deployed), "--artifacts", str(tmp_path / "dist"),
        "--bucket", "artifacts", "--prefix", "call", "--out", str(tmp_path / "packaged.json"),
        env=env,
    )
    assert result.returncode == 1
    assert "join-room: not built in this run, but the stack's code is out of date" in result.stderr
    assert "run with ship_all" in result.stderr
    assert not (tmp_path / "packaged.json").exists()
    assert not calls.exists(), "nothing is uploaded when the deploy cannot go ahead"
