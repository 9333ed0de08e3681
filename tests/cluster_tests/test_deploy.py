"""The deployment files in cluster/deploy/ are valid for the tools that read them."""

from __future__ import annotations

import importlib.resources
import json
import re
import shlex
from pathlib import Path

import jsonschema
import pytest
import yaml

import ray.autoscaler
from ray.autoscaler._private.util import validate_config

from prunesearch.cluster.config import load_config

DEPLOY = importlib.resources.files("prunesearch.cluster") / "deploy"
REPO_IN_IMAGE = "/home/ray/prunesearch"


def _load(name: str) -> dict:
    return yaml.safe_load((DEPLOY / name).read_text())


def test_aws_launcher_yaml_is_valid_for_rays_schema():
    config = _load("aws.yaml")
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)
    validate_config(config)  # Ray's own checks beyond the schema (head type, min/max workers)

    node_types = config["available_node_types"]
    head = config["head_node_type"]
    workers = {name: spec for name, spec in node_types.items() if name != head}
    assert workers, "a worker group is needed"
    assert "evaluator" not in node_types[head]["resources"], "the head must not evaluate"
    for name, spec in workers.items():
        assert spec["resources"].get("evaluator", 0) >= 1, name
        assert spec["max_workers"] <= config["max_workers"]
        assert re.match(r"^(g\d|p\d)", spec["node_config"]["InstanceType"]), "GPU instance"
    # Token auth: every node starts with it and shares the mounted token.
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        assert any("RAY_AUTH_MODE=token" in c and "ray start" in c for c in config[key]), key
    assert any(p.endswith(".ray/auth_token") for p in config["file_mounts"])
    assert any("pip install" in c and REPO_IN_IMAGE in c for c in config["setup_commands"])
    assert REPO_IN_IMAGE in config["file_mounts"]


def test_aws_launcher_yaml_is_refused_when_broken():
    """The schema check above can fail: a string resource count is rejected."""
    config = _load("aws.yaml")
    worker = next(n for n in config["available_node_types"] if n != config["head_node_type"])
    config["available_node_types"][worker]["resources"] = {"evaluator": "one"}
    with pytest.raises(jsonschema.ValidationError):
        validate_config(config)


def _string_map(mapping: dict) -> bool:
    return all(isinstance(k, str) and isinstance(v, str) for k, v in mapping.items())


def test_kuberay_rayjob_has_what_kuberay_requires(repo_root):
    job = _load("rayjob.yaml")
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", job["metadata"]["name"])
    spec = job["spec"]

    # The entrypoint is a real prunesearch command whose config and overrides load.
    argv = shlex.split(spec["entrypoint"])
    assert argv[:4] == ["python", "-m", "prunesearch", "run"]
    config_path = Path(argv[4])
    assert config_path.is_absolute() and str(config_path).startswith(REPO_IN_IMAGE)
    local_config = repo_root / config_path.relative_to(REPO_IN_IMAGE)
    assert local_config.is_file(), local_config
    output = argv[argv.index("--output") + 1]
    assert Path(output).is_absolute(), "a job runs in a copy of the working dir"
    overrides = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
    config = load_config(local_config, overrides)
    assert config.cluster.num_gpus > 0 and config.hardware.device.startswith("cuda")
    assert config.storage and "://" in config.storage
    yaml.safe_load(spec["runtimeEnvYAML"])

    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == ray.__version__
    assert cluster["authOptions"]["mode"] == "token"
    head = cluster["headGroupSpec"]
    assert _string_map(head["rayStartParams"])  # KubeRay: map[string]string
    assert "evaluator" not in head["rayStartParams"].get("resources", "")
    head_container = head["template"]["spec"]["containers"][0]
    assert head_container["name"] and head_container["image"]
    assert {p["containerPort"] for p in head_container["ports"]} >= {6379, 8265}

    groups = cluster["workerGroupSpecs"]
    assert groups
    for group in groups:
        assert group["groupName"]
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        params = group["rayStartParams"]
        assert _string_map(params)
        # KubeRay passes it to `ray start --resources=<value>`: a quoted JSON object.
        resources = json.loads(json.loads(params["resources"]))
        assert resources["evaluator"] >= 1
        container = group["template"]["spec"]["containers"][0]
        assert container["image"] == head_container["image"]
        gpus = int(container["resources"]["limits"]["nvidia.com/gpu"])
        assert gpus >= 1 and gpus == int(params["num-gpus"])
        assert resources["evaluator"] == gpus  # one evaluator per GPU


def test_deploy_files_ship_as_package_data(repo_root):
    pyproject = (repo_root / "pyproject.toml").read_text()
    assert '"deploy/*.yaml"' in pyproject
    for name in ("aws.yaml", "rayjob.yaml"):
        assert (DEPLOY / name).is_file(), name
