"""The workflow lint passes on the real workflows and fails when an action is referenced by a
tag or a branch again, or a checkout leaves its credentials in .git."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "lint_workflows.sh"
PINNED = re.compile(r"uses: (actions/checkout)@[0-9a-f]{40} # v[0-9.]+")


def lint(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT), str(root)], capture_output=True, text=True, check=False
    )


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / ".github", tmp_path / ".github")
    return tmp_path


def test_the_real_workflows_have_no_findings(copy: Path):
    result = lint(copy)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("ref", ["v7", "main"])
def test_an_action_referenced_by_a_tag_or_branch_fails(copy: Path, ref: str):
    ci = copy / ".github" / "workflows" / "ci.yml"
    text = ci.read_text(encoding="utf-8")
    assert PINNED.search(text), "ci.yml pins actions/checkout by SHA"
    ci.write_text(PINNED.sub(rf"uses: \1@{ref}", text, count=1), encoding="utf-8")
    result = lint(copy)
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert "unpinned-uses" in out, out
    assert "FAIL: workflow lint: zizmor (offline)" in out, out


def test_a_checkout_that_keeps_its_credentials_fails(copy: Path):
    deploy = copy / ".github" / "workflows" / "deploy.yml"
    text = deploy.read_text(encoding="utf-8")
    kept = "        with:\n          persist-credentials: false\n"
    assert kept in text
    deploy.write_text(text.replace(kept, "", 1), encoding="utf-8")
    result = lint(copy)
    out = result.stdout + result.stderr
    assert result.returncode != 0 and "artipacked" in out, out


def test_only_the_deploy_job_may_ask_for_an_oidc_token():
    import yaml

    holders = []
    for path in sorted((ROOT / ".github" / "workflows").glob("*.yml")):
        workflow = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert workflow.get("permissions") == {}, f"{path.name}: no token scope by default"
        for name, job in workflow["jobs"].items():
            if (job.get("permissions") or {}).get("id-token") == "write":
                holders.append((path.name, name))
    assert holders == [("deploy.yml", "deploy")]
