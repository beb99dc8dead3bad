"""examples/ci: the GitHub Actions workflow and the GitLab CI file, parsed, and their shell
steps run as the runners would run them (jobs in order, matrix expanded, artifacts passed on)
in a copy of the repository: lamina installed with pip from it into a fresh venv, images
built, joined, linted and pushed to a real registry on 127.0.0.1. No Docker."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.registry import DistributionRegistry
from support.tools import require

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
CI = ROOT / "examples" / "ci"
ACCEPT = "application/vnd.oci.image.index.v1+json"


def test_neither_file_installs_lamina_by_name() -> None:
    """`pip install lamina` would fetch whatever anyone registered under that name on PyPI."""
    for path in CI.iterdir():
        text = path.read_text()
        assert "pip install" in text
        assert not re.search(r"pip install\s+(-\S+\s+)*[\"']?lamina\b", text), path
        assert "docker" not in re.sub(r"(?m)#.*$", "", text).lower(), path  # no daemon, no dind


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with pip and nothing else: the CI step installs lamina into it."""
    where = tmp_path_factory.mktemp("venv") / "v"
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True, timeout=300)
    return where


def _checkout(tmp: Path) -> Path:
    """The repository as actions/checkout or a GitLab runner leaves it (sources, no build litter)."""
    repo = tmp / "repo"
    shutil.copytree(ROOT, repo, ignore=shutil.ignore_patterns(".git", ".venv", "out", "demo", "__pycache__", "*.egg-info",
                                                              "build", ".mypy_cache", ".pytest_cache"))
    return repo


class Runner:
    """Runs shell steps the way a CI runner does: bash -eo pipefail, in the checkout."""

    def __init__(self, repo: Path, venv: Path, env: dict[str, str]) -> None:
        self.repo = repo
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "LAMINA_", "SOURCE_DATE"))}
        self.env.update(env)
        self.env["PATH"] = f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}"
        self.env["VIRTUAL_ENV"] = str(venv)
        self.installed: set[str] = set()
        self.log: list[str] = []

    def run(self, script: str, env: dict[str, str]) -> str:
        if "pip install" in script:  # one environment plays every job: install once
            key = script.strip()
            if key in self.installed:
                return ""
            self.installed.add(key)
        res = subprocess.run(["bash", "-eo", "pipefail", "-c", script], cwd=self.repo, env={**self.env, **env},
                             capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
        assert res.returncode == 0, f"step failed:\n{script}\n{res.stdout}\n{res.stderr}"
        self.log.append(res.stdout)
        return res.stdout


# ---- GitHub Actions


def _expand(text: str, context: dict[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        expression = match[1].strip()
        assert expression in context, f"the test does not know ${{{{ {expression} }}}}"
        return context[expression]

    return re.sub(r"\$\{\{(.*?)\}\}", value, text)


def _strings(mapping: dict[str, Any] | None, context: dict[str, str]) -> dict[str, str]:
    return {k: _expand(str(v), context) for k, v in (mapping or {}).items()}


def test_github_actions_workflow(tmp_path: Path, venv: Path, registry: DistributionRegistry) -> None:
    require("go")
    workflow = yaml.safe_load((CI / "github-actions.yml").read_text())
    assert set(workflow[True]) == {"push", "pull_request"}  # YAML reads the key `on` as True
    repo = _checkout(tmp_path)
    artifacts = tmp_path / "artifacts"
    github = {"github.repository_owner": "example", "github.actor": "ci", "github.sha": "0123abc",
              "secrets.GITHUB_TOKEN": "unused-by-a-registry-without-auth", "github.event_name": "push"}
    runner = Runner(repo, venv, {})
    top_env = _strings(workflow["env"], github)
    top_env["IMAGE"] = f"{registry.host}/example/hello"  # the test registry stands in for ghcr.io
    order = ["build", "publish"]
    assert list(workflow["jobs"]) == order and workflow["jobs"]["publish"]["needs"] == "build"
    for name in order:
        job = workflow["jobs"][name]
        matrix = job.get("strategy", {}).get("matrix", {})
        for values in ([{"matrix.arch": a} for a in matrix["arch"]] if matrix else [{}]):
            context = {**github, **values}
            for step in job["steps"]:
                env = {**top_env, **_strings(job.get("env"), context), **_strings(step.get("env"), context)}
                if "if" in step:
                    assert step["if"] == "github.event_name == 'push'"  # the one condition the test evaluates
                uses = step.get("uses", "")
                if uses.startswith("actions/upload-artifact@"):
                    with_ = _strings(step["with"], context)
                    target = artifacts / with_["name"]
                    target.mkdir(parents=True)
                    shutil.copy(repo / with_["path"], target)
                elif uses.startswith("actions/download-artifact@"):
                    with_ = _strings(step["with"], context)
                    assert with_["pattern"] == "hello-*" and with_["merge-multiple"] == "True"
                    (repo / with_["path"]).mkdir(exist_ok=True)
                    for found in sorted(artifacts.glob(with_["pattern"])):
                        for file in found.iterdir():
                            shutil.copy(file, repo / with_["path"])
                elif uses:
                    assert uses.split("@")[0] in {"actions/checkout", "actions/setup-python", "actions/setup-go"}
                else:
                    runner.run(_expand(step["run"], context), env)
    _check_pushed(registry, "example/hello", "0123abc", repo / "out" / "hello.json", runner.log[-1])


def _check_pushed(registry: DistributionRegistry, name: str, tag: str, metadata: Path, printed: str) -> None:
    digest = json.loads(metadata.read_text())["digest"]
    assert printed.strip().splitlines()[-1] == f"{registry.host}/{name}@{digest}"
    conn = http.client.HTTPConnection(registry.host, timeout=30)
    conn.request("HEAD", f"/v2/{name}/manifests/{tag}", headers={"Accept": ACCEPT})
    response = conn.getresponse()
    assert response.status == 200 and response.getheader("Docker-Content-Digest") == digest
    conn.close()
    platforms = [p["platform"] for p in json.loads(metadata.read_text())["platforms"]]
    assert platforms == ["linux/amd64", "linux/arm64"]


# ---- GitLab CI


def test_gitlab_ci_file(tmp_path: Path, venv: Path, registry: DistributionRegistry) -> None:
    require("go")
    pipeline = yaml.safe_load((CI / "gitlab-ci.yml").read_text())
    repo = _checkout(tmp_path)
    predefined = {"CI_REGISTRY": registry.host, "CI_REGISTRY_IMAGE": f"{registry.host}/group/project",
                  "CI_REGISTRY_USER": "gitlab-ci-token", "CI_REGISTRY_PASSWORD": "unused", "CI_COMMIT_SHORT_SHA": "0123abc",
                  "CI_COMMIT_BRANCH": "main", "CI_DEFAULT_BRANCH": "main"}
    runner = Runner(repo, venv, predefined)
    jobs = {k: v for k, v in pipeline.items() if isinstance(v, dict) and "stage" in v}
    for stage in pipeline["stages"]:
        for name, job in jobs.items():
            if job["stage"] != stage:
                continue
            if "extends" in job:
                job = {**pipeline[job["extends"]], **job}
            if "rules" in job:
                assert job["rules"] == [{"if": "$CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH"}]  # true here
            matrix = job.get("parallel", {}).get("matrix", [{}])
            for values in ([{"ARCH": a} for a in matrix[0]["ARCH"]] if matrix[0] else [{}]):
                variables = {**pipeline["variables"], **values}
                variables.update({k: re.sub(r"\$(\w+)", lambda m: predefined[m[1]], str(v))
                                  for k, v in job.get("variables", {}).items()})
                for line in job.get("before_script", []):
                    runner.run(line, variables)
                runner.run("\n".join(job["script"]), variables)  # one shell per job, as the runner does
    _check_pushed(registry, "group/project/hello", "0123abc", repo / "out" / "hello.json", runner.log[-1])
