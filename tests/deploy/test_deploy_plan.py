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


def test_without_a_stack_every_function_ships(tmp_path: Path):
    (tmp_path / "deployed.json").write_text("null", encoding="utf-8")
    plan = outputs(run("plan", "--deployed", str(tmp_path / "deployed.json")))
    assert plan["any"] == "true"
    assert sorted(f["name"] for f in plan["functions"]) == CRATES
    assert {"name": "health", "logical_id": "HealthFunction"} in plan["functions"]


def test_a_stack_at_head_ships_nothing(tmp_path: Path):
    plan = outputs(run("plan", "--deployed", str(deployed_stack(tmp_path, {}, HEAD))))
    assert plan == {"functions": [], "any": "false"}


def test_only_functions_without_a_known_commit_ship(tmp_path: Path):
    deployed = deployed_stack(tmp_path, {"health": UNKNOWN, "migrate": ""}, HEAD)
    result = run("plan", "--deployed", str(deployed))
    plan = outputs(result)
    assert [f["name"] for f in plan["functions"]] == ["migrate", "health"]
    assert "health: deployed commit 0123456789ab is not in this history" in result.stderr
    assert "migrate: deployed code has no commit in its key" in result.stderr


def test_all_ships_everything_even_at_head(tmp_path: Path):
    plan = outputs(run("plan", "--deployed", str(deployed_stack(tmp_path, {}, HEAD)), "--all"))
    assert sorted(f["name"] for f in plan["functions"]) == CRATES


def test_a_yaml_stack_template_is_read_too(tmp_path: Path):
    body = (
        "Resources:\n  HealthFunction:\n    Type: AWS::Serverless::Function\n"
        f"    Properties:\n      CodeUri: s3://artifacts/call/health/{HEAD}-0123456789abcdef.zip\n"
        "      Role: !GetAtt FunctionRole.Arn\n"
    )
    (tmp_path / "deployed.json").write_text(json.dumps(body), encoding="utf-8")
    plan = outputs(run("plan", "--deployed", str(tmp_path / "deployed.json")))
    assert "health" not in [f["name"] for f in plan["functions"]]
    assert sorted(f["name"] for f in plan["functions"]) == [c for c in CRATES if c != "health"]


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
    deployed = deployed_stack(tmp_path, {}, UNKNOWN)
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
        f"s3://artifacts/call/join-room/{UNKNOWN}-0123456789abcdef.zip"
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
