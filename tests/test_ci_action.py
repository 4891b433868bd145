"""The CI gate as CI runs it: the GitHub Action's steps, run with bash as a runner runs them, and
the GitLab job of docs/ci.md, run as written.

The harness reads action.yml, gives each ``run:`` step its ``env:`` with the inputs substituted
and the variables a runner sets (``GITHUB_STEP_SUMMARY``, ``GITHUB_OUTPUT``, ...), and runs the
script with the runner's own bash command line. Two steps are not run: the ``uses:`` steps
(setup-python, upload-artifact: their ``with:`` is checked instead) and the pip install, whose
work the test virtualenv has done (its bin is first on PATH; no network here).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from runtime_models import LABELS

ACTION = ROOT / "action.yml"
EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
BIN = Path(sys.executable).parent  # the virtualenv's bin: python, pip, edgeship
EARLIER_SUMMARY = "## an earlier step's summary\n"


def load_action() -> dict:
    return yaml.safe_load(ACTION.read_text(encoding="utf-8"))


def _substitute(value: str, context: dict[str, str]) -> str:
    """``${{ inputs.x }}``-style references; anything fancier has no place in a run step's env."""

    def replace(match):
        name = match.group(1)
        if name not in context:
            raise AssertionError(f"unsupported expression in a run step's env: {match.group(0)}")
        return context[name]

    return EXPRESSION.sub(replace, str(value))


class Runner:
    """Runs the action's ``run:`` steps as a GitHub-hosted runner would, in ``workspace``."""

    def __init__(self, workspace: Path):
        self.workspace = workspace
        self.files = workspace.parent / "_runner"
        (self.files / "temp").mkdir(parents=True, exist_ok=True)
        self.step_summary = self.files / "step_summary"
        self.step_summary.write_text(EARLIER_SUMMARY, encoding="utf-8")
        self.output = self.files / "output"
        self.output.write_text("")

    def environment(self) -> dict[str, str]:
        temp = self.files / "temp"
        environ = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "RUNNER_"))}
        return {
            **environ,
            "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
            "CI": "true", "GITHUB_ACTIONS": "true", "RUNNER_OS": "Linux", "RUNNER_TEMP": str(temp),
            "GITHUB_WORKSPACE": str(self.workspace), "GITHUB_ACTION_PATH": str(ROOT),
            "GITHUB_STEP_SUMMARY": str(self.step_summary), "GITHUB_OUTPUT": str(self.output),
            "GITHUB_ENV": str(self.files / "env"), "GITHUB_PATH": str(self.files / "path"),
        }

    def run(self, given: dict[str, str]) -> dict:
        """Runs the steps with inputs ``given`` (the rest at their defaults); returns the exit code
        of the first failing run step (0 if none), the step outputs and the skipped steps."""
        action = load_action()
        inputs = {name: str(spec.get("default", "")) for name, spec in action["inputs"].items()}
        missing = [name for name, spec in action["inputs"].items() if spec.get("required") and name not in given]
        assert not missing, f"required inputs not given: {missing}"
        assert set(given) <= set(inputs), f"inputs the action does not declare: {set(given) - set(inputs)}"
        inputs.update({name: str(value) for name, value in given.items()})
        context = {f"inputs.{name}": value for name, value in inputs.items()}
        context.update({"github.action_path": str(ROOT), "github.workspace": str(self.workspace)})
        skipped, code = [], 0
        for step in action["runs"]["steps"]:
            if "uses" in step or step.get("id") == "install":
                skipped.append(step)
                continue
            code = self._run_step(step, context)
            if code:
                break  # later steps run only under `if: !cancelled()`, and those are uploads
        return {"exit_code": code, "outputs": self._outputs(), "skipped": skipped}

    def _run_step(self, step: dict, context: dict[str, str]) -> int:
        assert step["shell"] == "bash" and "${{" not in step["run"], "inputs must reach the script through env:"
        script = self.files / "temp" / f"{step['id']}.sh"
        script.write_text(step["run"], encoding="utf-8")
        environ = {**self.environment(), **{k: _substitute(v, context) for k, v in step.get("env", {}).items()}}
        # The command line GitHub's runner uses for `shell: bash`.
        done = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)], cwd=self.workspace,
                              env=environ, capture_output=True, text=True, timeout=120)
        self.log = done.stdout + done.stderr
        return done.returncode

    def _outputs(self) -> dict[str, str]:
        return dict(line.split("=", 1) for line in self.output.read_text().splitlines() if "=" in line)


@pytest.fixture()
def runner(tmp_path) -> Runner:
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    return Runner(workspace)


def junit_cases(path: Path) -> dict[str, ET.Element]:
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites" and [child.tag for child in root] == ["testsuite"]
    return {case.get("name"): case for case in root.iter("testcase")}


def test_action_steps_and_their_inputs():
    action = load_action()
    assert action["runs"]["using"] == "composite"
    steps = action["runs"]["steps"]
    setup, install, validate, junit, report = steps
    assert setup["uses"] == "actions/setup-python@v5"
    assert setup["with"] == {"python-version": "${{ inputs.python-version }}"}
    # The runtime install from the action's own checkout: no extras, so no TensorFlow.
    assert install["env"] == {"EDGESHIP_SOURCE": "${{ github.action_path }}"}
    assert 'pip install --disable-pip-version-check "$EDGESHIP_SOURCE"' in install["run"]
    assert validate["id"] == "validate" and "edgeship validate" in validate["run"]
    for upload in (junit, report):
        assert upload["uses"] == "actions/upload-artifact@v4"
        assert upload["if"].startswith("${{ !cancelled() &&")  # also after a failed gate
    assert junit["with"]["path"] == "${{ inputs.junit }}"
    assert report["with"] == {"name": "${{ inputs.artifact-name }}-report",
                              "path": "${{ inputs.report || format('{0}/report.html', inputs.run) }}",
                              "if-no-files-found": "ignore"}
    mirrored = {"model", "baseline", "run", "data", "max-drop", "min-agreement", "max-class-drop", "junit", "summary",
                "python-version", "report"}
    assert mirrored <= set(action["inputs"]) and action["inputs"]["model"]["required"]
    used = " ".join(json.dumps(step) for step in steps)
    assert all(f"inputs.{name}" in used for name in action["inputs"]), "an input no step reads"
    assert action["outputs"]["passed"]["value"] == "${{ steps.validate.outputs.passed }}"


def test_a_passing_gate_writes_junit_and_appends_the_job_summary(runtime_setup, runner):
    models, _, run_dir = runtime_setup
    result = runner.run({"model": models["uint8"], "run": run_dir, "max-drop": "1", "min-agreement": "0.9",
                         "max-class-drop": "10", "junit": "reports/gate.xml", "summary": "gate.md"})
    assert result["exit_code"] == 0, runner.log
    assert result["outputs"] == {"exit-code": "0", "passed": "true"}
    cases = junit_cases(runner.workspace / "reports" / "gate.xml")
    assert list(cases) == ["accuracy drop", "top-1 agreement"] + [f"recall drop: {label}" for label in LABELS]
    assert not any(case.find("failure") is not None for case in cases.values())
    summary = runner.step_summary.read_text(encoding="utf-8")
    assert summary.startswith(EARLIER_SUMMARY)  # appended, not overwritten
    assert summary[len(EARLIER_SUMMARY):].startswith("### ✅ edgeship gate passed: colour_uint8.tflite vs "
                                                     "model_float32.tflite")
    assert (runner.workspace / "gate.md").read_text(encoding="utf-8") in summary
    uploads = [step for step in result["skipped"] if step.get("uses", "").startswith("actions/upload-artifact")]
    assert [u["with"]["name"] for u in uploads] == ["${{ inputs.artifact-name }}-junit",
                                                     "${{ inputs.artifact-name }}-report"]


def test_a_failing_gate_fails_the_step_with_exit_3(runtime_setup, runner):
    models, data, _ = runtime_setup
    result = runner.run({"model": models["wrong"], "data": data, "baseline": models["float"],
                         "max-class-drop": "10", "step-summary": "false"})
    assert result["exit_code"] == 3, runner.log
    assert result["outputs"] == {"exit-code": "3", "passed": "false"}
    cases = junit_cases(runner.workspace / "edgeship-gate.xml")  # the input's default
    failures = {name: case.find("failure") for name, case in cases.items()}
    assert all(failure is not None for failure in failures.values())
    message = failures["accuracy drop"].get("message")
    assert message.startswith("accuracy dropped 100.00 pp (100.00 % -> 0.00 %), more than the allowed 1 pp")
    assert "95 % CI of the drop [" in message and "McNemar exact p = 0.000488" in message
    assert "class 'red': recall dropped 100.00 pp" in failures["recall drop: red"].get("message")
    assert runner.step_summary.read_text(encoding="utf-8") == EARLIER_SUMMARY  # step-summary: "false"


def test_inputs_stay_values_in_the_shell(runtime_setup, runner):
    _, _, run_dir = runtime_setup
    model = runner.run({"model": 'x.tflite"; touch pwned; echo "', "run": run_dir})
    assert model["exit_code"] == 1 and "Model file not found" in runner.log, runner.log
    assert model["outputs"] == {"exit-code": "1", "passed": "false"}  # errors pass through too
    number = runner.run({"model": "x.tflite", "run": run_dir, "max-drop": "$(touch pwned)"})
    assert number["exit_code"] == 2 and "--max-drop" in runner.log, runner.log  # a usage error, as typed
    assert not list(runner.workspace.glob("pwned*"))
    option = runner.run({"model": "--help", "run": run_dir})  # a file named like an option stays a path
    assert option["exit_code"] == 1 and "Model file not found: --help" in runner.log, runner.log


def _gitlab_job() -> dict:
    text = (ROOT / "docs" / "ci.md").read_text(encoding="utf-8")
    for block in re.findall(r"^```yaml\n(.*?)^```", text, re.S | re.M):
        document = yaml.safe_load(block)
        if isinstance(document, dict) and "validate" in document and "artifacts" in document["validate"]:
            return document["validate"]
    raise AssertionError("docs/ci.md has no GitLab `validate` job")


def test_documented_gitlab_job_runs_as_written(runtime_setup, tmp_path):
    models, _, run_dir = runtime_setup
    job = _gitlab_job()
    assert job["artifacts"]["when"] == "always"
    junit = job["artifacts"]["reports"]["junit"]
    commands = [line for line in job["script"] if line.startswith("edgeship ")]
    assert commands and all(f"--junit {junit}" in line for line in commands)
    # The job's files, in the layout the snippet names: a run and its int8 export.
    shutil.copytree(run_dir, tmp_path / "runs" / "flowers")
    shutil.copy(models["uint8"], tmp_path / "runs" / "flowers" / "export" / "model_int8.tflite")
    environ = {k: v for k, v in os.environ.items() if k != "GITHUB_STEP_SUMMARY"}
    for line in commands:
        done = subprocess.run(["bash", "-c", line], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                              env={**environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"})
        assert done.returncode == 0, (line, done.stdout + done.stderr)
    cases = junit_cases(tmp_path / junit)
    assert "accuracy drop" in cases and f"recall drop: {LABELS[0]}" in cases
    for path in job["artifacts"]["paths"]:
        assert (tmp_path / path).read_text(encoding="utf-8").startswith("### ✅ edgeship gate passed")


def test_documented_action_usage_names_only_declared_inputs():
    text = (ROOT / "docs" / "ci.md").read_text(encoding="utf-8")
    usages = [yaml.safe_load(block) for block in re.findall(r"^```yaml\n(.*?)^```", text, re.S | re.M)
              if "uses: OWNER/edgeship@" in block]
    assert usages, "docs/ci.md shows no use of the action"
    inputs = load_action()["inputs"]
    for [step] in usages:
        assert set(step["with"]) <= set(inputs) and "model" in step["with"]
        assert all(isinstance(value, str) for value in step["with"].values())  # YAML numbers would be floats


def test_run_refuses_reports_without_a_gate(tmp_path):
    done = subprocess.run([str(BIN / "edgeship"), "run", str(tmp_path), "--junit", "gate.xml"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "--max-drop" in done.stderr and "Traceback" not in done.stderr


def test_step_summary_needs_the_runner_variable(runtime_setup, tmp_path):
    models, data, _ = runtime_setup
    command = [str(BIN / "edgeship"), "validate", str(models["uint8"]), str(data), "--baseline", str(models["float"])]
    environ = {k: v for k, v in os.environ.items() if k != "GITHUB_STEP_SUMMARY"}
    done = subprocess.run(command, cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert list(tmp_path.iterdir()) == []  # no variable: nothing written anywhere here
    summary = tmp_path / "summary.md"
    done = subprocess.run(command, cwd=tmp_path, env={**environ, "GITHUB_STEP_SUMMARY": str(summary)},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "edgeship gate passed" in summary.read_text(encoding="utf-8")
