"""The cluster configs (ray_job.yaml, cluster/) agree with the code, the paper preset and each other.

Nothing here starts Ray or reaches a network: the files are parsed and compared with
pyproject.toml, ``unihema.config`` and the installed Ray.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from unihema.config import PRESETS, TASKS, DataConfig, TrainConfig, add_config_arguments, load_config

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "cluster"
IMAGE_ROOT = "/home/ray/unihema"  # where cluster/Dockerfile puts the repository
TRAINER_RESOURCE, DATA_RESOURCE = "unihema_trainer", "unihema_data"
LOOPBACK_ONLY_VARS = ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "GLOO_SOCKET_IFNAME")
SECRET_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "RAY_AUTH_TOKEN")
NEEDS_PLACEMENT_FIELDS = pytest.mark.xfail(
    not (
        {"worker_resources"} <= TrainConfig.__dataclass_fields__.keys()
        and {"task_resources"} <= DataConfig.__dataclass_fields__.keys()
    ),
    reason="train.worker_resources / data.task_resources are not in unihema.config yet (issue 7)",
    strict=True,
)


def _yaml(name: str):
    return yaml.safe_load((REPO / name).read_text())


def _rayjob() -> dict:
    docs = list(yaml.safe_load_all((CLUSTER / "kuberay-rayjob.yaml").read_text()))
    return next(d for d in docs if d and d.get("kind") == "RayJob")


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _requirements() -> dict:
    from packaging.requirements import Requirement

    return {r.name: r for r in map(Requirement, _pyproject()["project"]["dependencies"])}


def _paper():
    return load_config(preset="paper")


def _start_param_resources(group: dict) -> dict:
    """Custom resources of a KubeRay group: rayStartParams.resources is a quoted JSON string."""
    raw = group["rayStartParams"].get("resources")
    if not raw:
        return {}
    return json.loads(raw.strip().strip('"').replace('\\"', '"'))


def _memory_bytes(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return int(float(quantity[:-2]) * factor)
    return int(quantity)


def _documented_commands(path: Path) -> list[list[str]]:
    """Every `python -m unihema.pretrain ...` command in a file's comments or code blocks, as argv."""
    lines = []
    for line in path.read_text().splitlines():
        stripped = line.strip()
        lines.append(stripped[1:].strip() if stripped.startswith("#") else stripped)
    joined = re.sub(r"\\\s*\n\s*", " ", "\n".join(lines))
    commands = []
    for line in joined.splitlines():
        if "python -m unihema.pretrain" in line:
            argv = shlex.split(line[line.index("python -m unihema.pretrain") :])
            commands.append(argv[3:])
    return commands


def _entrypoints(cluster_only: bool = False) -> dict[str, list[str]]:
    """Arguments after `python -m unihema.pretrain` of every entrypoint the repo ships or documents.

    ``cluster_only`` leaves out the README's local (tiny) example: the rest run the paper preset.
    """
    found = {"kuberay RayJob": shlex.split(_rayjob()["spec"]["entrypoint"])}
    assert found["kuberay RayJob"][:3] == ["python", "-m", "unihema.pretrain"], found
    found["kuberay RayJob"] = found["kuberay RayJob"][3:]
    for name in ("ray_job.yaml", "cluster/aws-launcher.yaml", "cluster/README.md"):
        for i, argv in enumerate(_documented_commands(REPO / name)):
            if not cluster_only or "--config" in argv:
                found[f"{name} #{i}"] = argv
    return found


def _parse_entrypoint(argv: list[str]):
    import argparse

    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    parser.add_argument("--no-export", action="store_true")
    args = parser.parse_args(argv)
    args.config = [
        str(REPO / c[len(IMAGE_ROOT) + 1 :]) if c.startswith(IMAGE_ROOT + "/") else str(REPO / c) for c in args.config
    ]
    return args


def _assert_cpus_bind_first(node_cpus: float, node_data_resource: float) -> None:
    """A data node runs as many Ray Data tasks as its CPUs allow: the marker resource never runs out first."""
    data = _paper().data
    per_task = _yaml("cluster/paper-cluster.yaml")["data"]["task_resources"][DATA_RESOURCE]
    assert per_task * node_cpus / data.decode_cpus <= node_data_resource, (per_task, node_cpus, node_data_resource)


def test_config_files_parse():
    """Every cluster config is valid YAML of the expected kind."""
    assert isinstance(_yaml("ray_job.yaml"), dict)
    kinds = [d["kind"] for d in yaml.safe_load_all((CLUSTER / "kuberay-rayjob.yaml").read_text()) if d]
    assert kinds == ["ServiceAccount", "RayJob"]
    assert _rayjob()["apiVersion"] == "ray.io/v1"
    assert _yaml("cluster/aws-launcher.yaml")["provider"]["type"] == "aws"
    assert _yaml("cluster/paper-cluster.yaml")["preset"] in PRESETS


def test_aws_launcher_passes_rays_schema():
    """The cluster-launcher YAML passes the installed Ray's own schema check."""
    from ray.autoscaler._private.util import fillout_defaults, validate_config

    validate_config(fillout_defaults(_yaml("cluster/aws-launcher.yaml")))


def test_ray_job_yaml_is_a_runtime_env_without_secrets():
    """ray_job.yaml is a runtime_env Ray accepts; it keeps the code, drops no needed folder, holds no secret."""
    from ray.runtime_env import RuntimeEnv

    env = _yaml("ray_job.yaml")
    RuntimeEnv(**env)
    assert env["working_dir"] == "."
    assert not {"pip", "conda", "uv"} & env.keys(), "dependencies come from the image, not per job"
    for needed in ("unihema", "data_prep", "cluster", "pyproject.toml"):
        assert needed not in env.get("excludes", []), needed
    assert not set(env.get("env_vars", {})) & {*SECRET_VARS, *LOOPBACK_ONLY_VARS}


def test_rayjob_runtime_env_has_no_secrets():
    """The RayJob's runtimeEnvYAML is a valid runtime_env without credentials or loopback-only settings."""
    from ray.runtime_env import RuntimeEnv

    env = yaml.safe_load(_rayjob()["spec"]["runtimeEnvYAML"])
    RuntimeEnv(**env)
    assert not set(env.get("env_vars", {})) & {*SECRET_VARS, *LOOPBACK_ONLY_VARS}
    text = (CLUSTER / "kuberay-rayjob.yaml").read_text() + (CLUSTER / "aws-launcher.yaml").read_text()
    assert not re.search(r"AKIA[0-9A-Z]{16}", text), "an AWS access key id in a config file"


def test_entrypoints_run_pretrain_with_an_existing_preset():
    """Every shipped or documented entrypoint is `python -m unihema.pretrain` with existing presets and config files."""
    entrypoints = _entrypoints()
    cluster = _entrypoints(cluster_only=True)
    assert len(cluster) >= 5 and len(entrypoints) > len(cluster), sorted(entrypoints)
    for where, argv in entrypoints.items():
        args = _parse_entrypoint(argv)
        for path in args.config:
            assert Path(path).is_file(), f"{where}: config file {path} missing"
        presets = [args.preset] + [yaml.safe_load(Path(p).read_text()).get("preset") for p in args.config]
        presets = [p for p in presets if p]
        assert presets and all(p in PRESETS for p in presets), f"{where}: presets {presets}"
        if where in cluster:
            assert set(presets) == {"paper"}, f"{where}: the cluster runs the paper preset"
            assert any(Path(p).name == "paper-cluster.yaml" for p in args.config), f"{where}: placement overlay"


@NEEDS_PLACEMENT_FIELDS
def test_entrypoints_resolve_to_the_placement_the_configs_advertise():
    """Each entrypoint resolves (preset, files, overrides) and asks for the resources the node groups offer."""
    for where, argv in _entrypoints(cluster_only=True).items():
        args = _parse_entrypoint(argv)
        cfg = load_config(args.preset, args.config, args.overrides)
        assert cfg.train.worker_resources == {TRAINER_RESOURCE: 1}, where
        assert cfg.data.task_resources == _yaml("cluster/paper-cluster.yaml")["data"]["task_resources"], where
        assert cfg.data.uri.startswith("s3://") and cfg.storage.run_uri.startswith("s3://"), where
        assert not cfg.storage.embedded and not cfg.data.synthetic_records, where


def test_placement_overlay_names_resources_the_node_groups_offer():
    """paper-cluster.yaml asks for resources only the GPU group (trainers) or only the data group (tasks) offers."""
    overlay = _yaml("cluster/paper-cluster.yaml")
    assert overlay["train"]["worker_resources"] == {TRAINER_RESOURCE: 1}
    assert set(overlay["data"]["task_resources"]) == {DATA_RESOURCE}
    groups = {
        g["groupName"]: _start_param_resources(g) for g in _rayjob()["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    }
    assert TRAINER_RESOURCE in groups["gpu-trainers"] and DATA_RESOURCE not in groups["gpu-trainers"]
    assert DATA_RESOURCE in groups["cpu-data"] and TRAINER_RESOURCE not in groups["cpu-data"]
    types = _yaml("cluster/aws-launcher.yaml")["available_node_types"]
    assert TRAINER_RESOURCE in types["ray.worker.gpu"]["resources"]
    assert DATA_RESOURCE not in types["ray.worker.gpu"]["resources"]
    assert DATA_RESOURCE in types["ray.worker.data"]["resources"]
    assert TRAINER_RESOURCE not in types["ray.worker.data"]["resources"]


def test_kuberay_shapes_match_the_paper_preset():
    """KubeRay: GPUs x nodes = train.num_workers, worker CPUs covered, data CPUs tagged, store sized, no head CPU."""
    train, data = _paper().train, _paper().data
    spec = _rayjob()["spec"]["rayClusterSpec"]
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    gpu, cpu = groups["gpu-trainers"], groups["cpu-data"]
    for group in (gpu, cpu):
        assert group["replicas"] == group["minReplicas"] == group["maxReplicas"], group["groupName"]

    gpu_limits = gpu["template"]["spec"]["containers"][0]["resources"]["limits"]
    gpus_per_node = int(gpu_limits["nvidia.com/gpu"])
    workers_per_node = int(gpus_per_node / train.gpus_per_worker)
    assert gpu["replicas"] * workers_per_node == train.num_workers
    assert _start_param_resources(gpu)[TRAINER_RESOURCE] == workers_per_node
    ray_cpus = float(gpu["rayStartParams"]["num-cpus"])
    assert ray_cpus >= workers_per_node * train.cpus_per_worker
    assert float(gpu_limits["cpu"]) >= ray_cpus

    cpu_limits = cpu["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert "nvidia.com/gpu" not in cpu_limits
    data_cpus = float(cpu["rayStartParams"]["num-cpus"])
    assert _start_param_resources(cpu)[DATA_RESOURCE] == data_cpus
    assert float(cpu_limits["cpu"]) >= data_cpus
    _assert_cpus_bind_first(data_cpus, _start_param_resources(cpu)[DATA_RESOURCE])

    # Each training worker streams every task through its own Ray Data execution, each allowed
    # data.object_store_memory_mb of object store: the data nodes must hold them all at once.
    streams_mb = train.num_workers * len(TASKS) * data.object_store_memory_mb
    data_store = cpu["replicas"] * int(cpu["rayStartParams"]["object-store-memory"])
    assert data_store >= streams_mb * 2**20, (data_store / 2**30, streams_mb / 1024)
    for group in (gpu, cpu):
        pod = group["template"]["spec"]
        shm = next(v for v in pod["volumes"] if v["name"] == "dshm")["emptyDir"]["sizeLimit"]
        assert _memory_bytes(shm) >= int(group["rayStartParams"]["object-store-memory"]), group["groupName"]
        assert pod["serviceAccountName"] == "unihema-ray"
        env_from = pod["containers"][0]["envFrom"][0]["secretRef"]
        assert env_from["optional"] is True, "IRSA works without the secret"


def test_kuberay_authentication_and_versions():
    """The RayCluster enables token auth and runs the Ray version the clients (this venv) run."""
    import ray

    spec = _rayjob()["spec"]["rayClusterSpec"]
    assert spec["authOptions"]["mode"] == "token"
    assert spec["rayVersion"] == ray.__version__
    images = {
        c["image"]
        for g in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
        for c in g["template"]["spec"]["containers"]
    }
    assert len(images) == 1 and next(iter(images)).endswith(f"-ray{ray.__version__}"), images


def test_aws_launcher_shapes_match_the_paper_preset():
    """Launcher: GPUs x nodes = train.num_workers, a trainer slot per GPU, data CPUs tagged, no head CPU, token auth."""
    import ray

    train = _paper().train
    cfg = _yaml("cluster/aws-launcher.yaml")
    types = cfg["available_node_types"]
    assert types[cfg["head_node_type"]]["resources"] == {"CPU": 0}
    gpu, data = types["ray.worker.gpu"], types["ray.worker.data"]
    assert gpu["min_workers"] == gpu["max_workers"]
    workers_per_node = int(gpu["resources"]["GPU"] / train.gpus_per_worker)
    assert gpu["max_workers"] * workers_per_node == train.num_workers
    assert gpu["resources"][TRAINER_RESOURCE] == workers_per_node
    assert gpu["resources"]["CPU"] >= workers_per_node * train.cpus_per_worker
    assert data["resources"][DATA_RESOURCE] == data["resources"]["CPU"] and "GPU" not in data["resources"]
    _assert_cpus_bind_first(data["resources"]["CPU"], data["resources"][DATA_RESOURCE])
    assert cfg["max_workers"] >= gpu["max_workers"] + data["max_workers"]
    assert (
        cfg["docker"]["image"]
        == _rayjob()["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]
    )
    assert cfg["docker"]["image"].endswith(f"-ray{ray.__version__}")
    # Token auth on every node, the token copied from the client; the dashboard stays on loopback.
    assert "~/.ray/auth_token" in cfg["file_mounts"]
    for command in cfg["head_start_ray_commands"][-1:] + cfg["worker_start_ray_commands"][-1:]:
        assert "RAY_AUTH_MODE=token" in command
    assert "--dashboard-host=127.0.0.1" in cfg["head_start_ray_commands"][-1]


def test_image_installs_what_pyproject_lists():
    """cluster/Dockerfile: the configs' Ray, torch pinned to a CUDA build pyproject allows, Ray extras, the project
    installed."""
    import ray
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.specifiers import SpecifierSet

    text = (CLUSTER / "Dockerfile").read_text()
    version = re.search(r"^ARG RAY_VERSION=(\S+)$", text, re.M).group(1)
    assert version == ray.__version__ == _rayjob()["spec"]["rayClusterSpec"]["rayVersion"]
    base = re.search(r"^FROM rayproject/ray:\$\{RAY_VERSION\}-py(\d)(\d+)-gpu$", text, re.M)
    assert base, "the base image is Ray's own GPU image of that version"
    assert f"{base.group(1)}.{base.group(2)}" in SpecifierSet(_pyproject()["project"]["requires-python"])

    reqs = _requirements()
    assert Requirement("ray").name in reqs and ray.__version__ in reqs["ray"].specifier
    by_name = {}
    for token in re.findall(r'"([^"\s]+)"', text.replace("${RAY_VERSION}", version)):
        try:
            req = Requirement(token)
        except InvalidRequirement:
            continue  # a path, a shell expression, a python -c snippet
        by_name[req.name] = req
    # torch is pinned to one CUDA build, a version pyproject.toml allows.
    for name, arg in (("torch", "TORCH_VERSION"), ("torchvision", "TORCHVISION_VERSION")):
        pinned = re.search(rf"^ARG {arg}=(\S+)$", text, re.M).group(1)
        assert f'"{name}==${{{arg}}}"' in text, name
        assert reqs[name].specifier.contains(pinned), (name, pinned)
    assert re.search(r"^ARG TORCH_CUDA=cu\d+$", text, re.M) and "--only-binary=flash-attn,xformers" in text
    assert by_name["ray"].extras == reqs["ray"].extras and str(by_name["ray"].specifier) == f"=={version}"
    # `pip install .` installs every dependency pyproject.toml lists, at its own bounds.
    assert re.search(r'pip install [^\n]*"\.\$\{EXTRAS', text)
    ignored = (CLUSTER / "Dockerfile.dockerignore").read_text().split()
    assert {".venv", ".cache", ".git"} <= set(ignored)
    for copied in re.findall(r"^COPY \S+ (\S+) ", text, re.M):
        assert copied not in ignored
