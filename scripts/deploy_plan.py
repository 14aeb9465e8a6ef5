#!/usr/bin/env python3
"""Per-function deploys of the one SAM stack, used by .github/workflows/deploy.yml.

Each function's code lives in S3 under `<prefix>/<function>/<commit>-<sha256[:16]>.zip`, so the
stack itself records which commit every running function was built from. A deploy ships a
function only when something it is built from changed since that commit; every other function
keeps the exact S3 object the stack already points at, so its resources are unchanged and the
change set touches only what changed. Nothing runs outside CloudFormation.

    deploy_plan.py plan --base COMMIT [--all]                 -> GITHUB_OUTPUT lines
    deploy_plan.py zip BOOTSTRAP OUT.zip                      -> a byte-reproducible zip
    deploy_plan.py package --deployed deployed.json --artifacts DIR --bucket B --prefix P \
                           --out packaged.json               -> uploads, writes the template

The plan needs no AWS access: COMMIT is the commit of the last successful deploy run (empty
when there is none: everything ships). The package step, which runs with the AWS role, checks
the plan against what the stack really runs: a function the plan kept must be deployed from a
commit it has not changed since, or the deploy stops (a deploy from outside this workflow, or a
base the stack is not at) and asks for a run with `ship_all`.

deployed.json is `aws cloudformation get-template --template-stage Original --query
TemplateBody --output json` of the live stack, or `null` when there is none yet.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from check_deploy_config import CfnLoader, load_template  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# What every function is built from, besides its own crate: a change here ships them all.
SHARED_INPUTS = [
    "shared",
    "migrations",
    "Cargo.toml",
    "Cargo.lock",
    "rust-toolchain.toml",
    ".cargo",
    "requirements-dev.txt",
    ".github/workflows/deploy.yml",
]
KEY = re.compile(r"/(?P<commit>[0-9a-f]{40})-[0-9a-f]{16}\.zip$")


def functions(root: Path = ROOT) -> list[dict]:
    """[{name, logical_id}] for every SAM function of template.yaml, in template order."""
    resources = load_template(root / "template.yaml")["Resources"]
    return [
        {"name": r["Metadata"]["BuildProperties"]["Binary"], "logical_id": logical_id}
        for logical_id, r in resources.items()
        if r.get("Type") == "AWS::Serverless::Function"
    ]


def deployed_code(path: Path) -> dict[str, str]:
    """logical id -> s3:// URI of the code the live stack runs (empty without a stack)."""
    body = json.loads(path.read_text(encoding="utf-8"))
    if body is None:
        return {}
    if isinstance(body, str):
        body = yaml.load(body, Loader=CfnLoader)  # noqa: S506 (a SafeLoader subclass)
    code = {}
    for logical_id, resource in (body.get("Resources") or {}).items():
        uri = resource.get("Properties", {}).get("CodeUri")
        if isinstance(uri, dict) and "Bucket" in uri and "Key" in uri:
            uri = f"s3://{uri['Bucket']}/{uri['Key']}"
        if isinstance(uri, str) and uri.startswith("s3://"):
            code[logical_id] = uri
    return code


def git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)


def why_ship(function: dict, deployed: dict[str, str]) -> str | None:
    """The reason to ship this function now, or None when the stack already runs its code."""
    uri = deployed.get(function["logical_id"])
    if uri is None:
        return "not deployed yet"
    match = KEY.search(uri)
    if match is None:
        return "deployed code has no commit in its key (a manual deploy?)"
    return changed_since(function, match["commit"], "deployed commit")


def changed_since(function: dict, commit: str, what: str) -> str | None:
    """Why the function's inputs differ between `commit` and HEAD, or None when they do not."""
    if git("cat-file", "-e", f"{commit}^{{commit}}").returncode != 0:
        return f"{what} {commit[:12]} is not in this history"
    inputs = [f"functions/{function['name']}", *SHARED_INPUTS]
    diff = git("diff", "--quiet", commit, "HEAD", "--", *inputs)
    if diff.returncode == 1:
        return f"changed since {commit[:12]}"
    if diff.returncode != 0:
        return f"git diff failed: {diff.stderr.strip()}"
    return None


def plan(args: argparse.Namespace) -> int:
    base = args.base.strip()
    ship = []
    for function in functions():
        if args.all:
            reason = "every function asked for"
        elif not base:
            reason = "no successful deploy yet"
        else:
            reason = changed_since(function, base, "last deployed commit")
        print(f"{function['name']}: {reason or 'unchanged, keeps its deployed code'}", file=sys.stderr)
        if reason:
            ship.append(function)
    print(f"functions={json.dumps(ship)}")
    print(f"any={'true' if ship else 'false'}")
    return 0


def deterministic_zip(bootstrap: Path, out: Path) -> None:
    """One executable entry with a fixed timestamp: the same binary always zips to the same bytes."""
    info = zipfile.ZipInfo("bootstrap", date_time=(1980, 1, 1, 0, 0, 0))
    info.create_system = 3  # unix, so the mode below is honoured
    info.external_attr = (0o100755 & 0xFFFF) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr(info, bootstrap.read_bytes(), compresslevel=9)


def package(args: argparse.Namespace) -> int:
    head = git("rev-parse", "HEAD").stdout.strip()
    deployed = deployed_code(Path(args.deployed))
    template = load_template(ROOT / "template.yaml")
    resources = template["Resources"]
    built = {f["name"]: Path(args.artifacts) / f"{f['name']}.zip" for f in functions()}
    # Every function the plan kept must run current code before anything is uploaded.
    for function in functions():
        name, logical_id = function["name"], function["logical_id"]
        if built[name].is_file():
            continue
        if logical_id not in deployed:
            print(f"{name}: neither built in this run nor deployed; run with ship_all", file=sys.stderr)
            return 1
        if (stale := why_ship(function, deployed)) is not None:
            # The plan's base was not what the stack runs: deploying would keep old code.
            print(f"{name}: not built in this run, but the stack's code is out of date "
                  f"({stale}); run with ship_all", file=sys.stderr)
            return 1
    for function in functions():
        name, logical_id = function["name"], function["logical_id"]
        artifact = built[name]
        if artifact.is_file():
            digest = hashlib.sha256(artifact.read_bytes()).hexdigest()[:16]
            key = f"{args.prefix}/{name}/{head}-{digest}.zip"
            uri = f"s3://{args.bucket}/{key}"
            upload = subprocess.run(
                ["aws", "s3", "cp", "--only-show-errors", str(artifact), uri], check=False
            )
            if upload.returncode != 0:
                print(f"uploading {artifact} to {uri} failed", file=sys.stderr)
                return 1
            print(f"{name}: ships {uri}", file=sys.stderr)
        else:
            uri = deployed[logical_id]
            print(f"{name}: keeps {uri}", file=sys.stderr)
        resources[logical_id]["Properties"]["CodeUri"] = uri
    Path(args.out).write_text(json.dumps(template, indent=1) + "\n", encoding="utf-8")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("plan", help="which functions to build and ship")
    p.add_argument("--base", required=True, help="commit of the last successful deploy ('' for none)")
    p.add_argument("--all", action="store_true", help="ship every function")
    z = commands.add_parser("zip", help="a reproducible zip of one bootstrap binary")
    z.add_argument("bootstrap")
    z.add_argument("out")
    k = commands.add_parser("package", help="upload the new zips and write the template to deploy")
    k.add_argument("--deployed", required=True)
    k.add_argument("--artifacts", required=True)
    k.add_argument("--bucket", required=True)
    k.add_argument("--prefix", required=True)
    k.add_argument("--out", required=True)
    args = parser.parse_args()
    if args.command == "plan":
        return plan(args)
    if args.command == "zip":
        deterministic_zip(Path(args.bootstrap), Path(args.out))
        return 0
    return package(args)


if __name__ == "__main__":
    sys.exit(main())
