"""Cluster definitions (cluster/) checked offline: Ray's own schema and checks for the launcher YAMLs, the KubeRay
CRD schema for the Kubernetes manifests, and what neither knows (GPU counts per instance type, files that must
exist, Ray's ports kept off the internet, token authentication on). Every check is also shown to fail on a
mutated copy."""

from __future__ import annotations

import copy
import ipaddress
import re
import shlex
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
LAUNCHERS = ["aws-gpu.yaml", "gcp-gpu.yaml"]
MANIFESTS = ["raycluster.yaml", "rayjob.yaml", "shared-pvc.yaml"]
RAY_PORTS = (6379, 8265, 10001)  # GCS, dashboard and job API, Ray client
TOKEN_FILE = "~/.ray/auth_token"

# vCPUs and GPUs of every machine type the launcher YAMLs use (the providers' published specifications).
INSTANCES = {
    # AWS
    "m5.2xlarge": (8, 0),
    "m6i.4xlarge": (16, 0),
    "g5.xlarge": (4, 1),  # NVIDIA A10G 24 GB
    "p4d.24xlarge": (96, 8),  # NVIDIA A100 40 GB
    "p5.48xlarge": (192, 8),  # NVIDIA H100 80 GB
    # GCP
    "n2-standard-8": (8, 0),
    "n2-standard-16": (16, 0),
    "g2-standard-8": (8, 1),  # NVIDIA L4 24 GB
    "a2-highgpu-8g": (96, 8),  # NVIDIA A100 40 GB
    "a3-highgpu-8g": (208, 8),  # NVIDIA H100 80 GB
}


def _load(path: Path):
    # deep copies: the files share subtrees through YAML anchors, and the mutation tests edit one node type
    return copy.deepcopy(yaml.safe_load(path.read_text()))


def _launcher(name: str) -> dict:
    return _load(CLUSTER / name)


def _manifests(name: str) -> list[dict]:
    return [copy.deepcopy(d) for d in yaml.safe_load_all((CLUSTER / "kuberay" / name).read_text()) if d]


# --- Ray's own schema and checks --------------------------------------------------------------------------


def _ray_validate(config: dict) -> None:
    # Private API, but it is what `ray up` runs before it touches a cloud: prepare_config merges the provider's
    # defaults.yaml (validate_config needs the fields it fills), validate_config checks ray-schema.json and the
    # cross-field rules. Both work offline for AWS and GCP; the provider bootstrap after them (IAM, subnets,
    # security groups, AMIs) calls the cloud APIs and is not run here.
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(config)))


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_yaml_passes_rays_schema_and_checks(name):
    _ray_validate(_launcher(name))


def _typo_in_node_type(c):
    node = c["available_node_types"][c["head_node_type"]]
    node["resourcez"] = node.pop("resources")


def _sum_of_min_workers_over_max(c):
    for node in c["available_node_types"].values():
        node["min_workers"] = c["max_workers"]


RAY_MUTATIONS = {
    "unknown top-level key": (lambda c: c.update(max_worker=3), "max_worker"),
    "unknown key in a node type": (_typo_in_node_type, "resourcez"),
    "max_workers not an integer": (lambda c: c.update(max_workers="four"), "four"),
    "fractional GPU count": (
        lambda c: next(n for n in c["available_node_types"].values() if "GPU" in n["resources"])[
            "resources"
        ].update(GPU=0.5),
        "0.5",
    ),
    "head type not among the node types": (lambda c: c.update(head_node_type="nope"), "head_node_type"),
    "min_workers above max_workers": (_sum_of_min_workers_over_max, "min_workers"),
}


@pytest.mark.parametrize("name", LAUNCHERS)
@pytest.mark.parametrize("mutation", list(RAY_MUTATIONS))
def test_rays_checks_reject_a_broken_copy(name, mutation):
    mutate, expected = RAY_MUTATIONS[mutation]
    config = _launcher(name)
    mutate(config)
    with pytest.raises((jsonschema.ValidationError, ValueError)) as err:
        _ray_validate(config)
    assert expected in str(err.value)


# --- what Ray's schema cannot see: GPUs per instance type ---------------------------------------------------


def _instance_type(node_config: dict) -> str:
    return node_config.get("InstanceType") or node_config.get("machineType") or "?"


def instance_problems(config: dict) -> list[str]:
    """Declared Ray resources that do not fit the machine: a wrong GPU count, more CPUs than it has."""
    problems = []
    for name, node in config["available_node_types"].items():
        itype = _instance_type(node["node_config"])
        if itype not in INSTANCES:
            problems.append(f"{name}: machine type {itype} is not in the table of known types")
            continue
        cpus, gpus = INSTANCES[itype]
        declared = node["resources"]
        if declared.get("GPU", 0) != gpus:
            problems.append(f"{name}: {itype} has {gpus} GPUs, resources declare {declared.get('GPU', 0)}")
        if "CPU" not in declared or not 0 <= declared["CPU"] <= cpus:
            problems.append(f"{name}: {itype} has {cpus} vCPUs, resources declare {declared.get('CPU')}")
    return problems


@pytest.mark.parametrize("name", LAUNCHERS)
def test_declared_gpus_and_cpus_fit_the_instance_types(name):
    config = _launcher(name)
    assert instance_problems(config) == []
    gpu_types = [n for n in config["available_node_types"].values() if n["resources"].get("GPU")]
    cpu_workers = [
        k
        for k, n in config["available_node_types"].items()
        if k != config["head_node_type"] and not n["resources"].get("GPU")
    ]
    assert len(gpu_types) >= 2 and cpu_workers  # GPU workers, and CPU workers for Ray Data


def _first_gpu_type(config):
    return next(n for n in config["available_node_types"].values() if n["resources"].get("GPU"))


INSTANCE_MUTATIONS = {
    "wrong GPU count": lambda c: _first_gpu_type(c)["resources"].update(GPU=4),
    "GPUs missing on a GPU machine": lambda c: _first_gpu_type(c)["resources"].pop("GPU"),
    "GPUs on a CPU machine": lambda c: c["available_node_types"][c["head_node_type"]]["resources"].update(
        GPU=1
    ),
    "more CPUs than the machine has": lambda c: _first_gpu_type(c)["resources"].update(CPU=1000),
    "unknown machine type": lambda c: _first_gpu_type(c)["node_config"].update(
        InstanceType="x9.huge", machineType="x9-huge"
    ),
}


@pytest.mark.parametrize("name", LAUNCHERS)
@pytest.mark.parametrize("mutation", list(INSTANCE_MUTATIONS))
def test_gpu_check_rejects_a_broken_copy(name, mutation):
    config = _launcher(name)
    INSTANCE_MUTATIONS[mutation](config)
    assert instance_problems(config)


# --- referenced files exist ----------------------------------------------------------------------------------


def launcher_missing_files(config: dict) -> list[str]:
    """file_mounts sources (relative to the repository root, where `ray up` runs) that do not exist."""
    missing = []
    for remote, local in config.get("file_mounts", {}).items():
        if local == TOKEN_FILE and remote == TOKEN_FILE:
            continue  # the cluster's token: made by `ray get-auth-token --generate`, never in the repository
        if Path(local).is_absolute() or local.startswith("~") or not (ROOT / local).exists():
            missing.append(f"file_mounts {remote}: {local} is not a path in the repository")
    for command in _all_commands(config):
        for script in re.findall(r"(?:bash|sh|python3?)\s+(cluster/\S+)", command):
            if not (ROOT / script).is_file():
                missing.append(f"command runs {script}, which does not exist")
    return missing


def _all_commands(config: dict) -> list[str]:
    keys = ["initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands"]
    keys += ["head_start_ray_commands", "worker_start_ray_commands"]
    return [cmd for key in keys for cmd in config.get(key, [])]


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_file_mounts_exist_in_the_repository(name):
    config = _launcher(name)
    assert launcher_missing_files(config) == []
    # the project is synced and installed on every node
    assert {"pyproject.toml", "bridgetower", "platform"} <= set(config["file_mounts"].values())
    assert any("pip install -e ~/bridgetower-platform" in c for c in config["setup_commands"])


@pytest.mark.parametrize("name", LAUNCHERS)
@pytest.mark.parametrize(
    "mutate",
    [
        lambda c: c["file_mounts"].update({"~/extra": "nowhere"}),
        lambda c: c["file_mounts"].update({"~/secrets": "~/.aws"}),
        lambda c: c["setup_commands"].append("bash cluster/setup-missing.sh"),
    ],
    ids=["missing source", "source outside the repository", "missing setup script"],
)
def test_missing_file_check_rejects_a_broken_copy(name, mutate):
    config = _launcher(name)
    mutate(config)
    assert launcher_missing_files(config)


def rayjob_problems(job: dict) -> list[str]:
    """A RayJob entrypoint's `btp` commands: they parse, their experiment files exist, their overrides fit."""
    from btp.cli import build_parser
    from btp.config import ConfigError, load_experiment

    problems = []
    commands = [c.strip(" ()") for c in re.split(r"&&|\|\||;", job["spec"]["entrypoint"])]
    btp_commands = [shlex.split(c)[1:] for c in commands if c.startswith("btp ")]
    if not any(argv[:1] == ["train"] for argv in btp_commands):
        problems.append("the entrypoint runs no `btp train`")
    for argv in btp_commands:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit:
            problems.append(f"btp {' '.join(argv)}: not a valid btp command line")
            continue
        if args.command == "train":
            if not (ROOT / args.experiment).is_file():
                problems.append(f"{args.experiment}: no such experiment file in the repository")
                continue
            try:
                load_experiment(str(ROOT / args.experiment), args.overrides)
            except ConfigError as err:
                problems.append(str(err))
    return problems


def test_rayjob_runs_an_experiment_of_the_repository():
    (job,) = _manifests("rayjob.yaml")
    assert rayjob_problems(job) == []
    assert "train.storage=/mnt/shared/runs" in job["spec"]["entrypoint"]


@pytest.mark.parametrize(
    "old, new",
    [
        ("experiments/synth/vqa.yaml", "experiments/synth/nope.yaml"),
        ("train.use_gpu=true", "train.use_gpus=true"),
        ("btp train", "btp trian"),
        ("btp train", "python -m train"),
    ],
    ids=["missing experiment file", "mistyped override", "unknown subcommand", "no btp train"],
)
def test_rayjob_check_rejects_a_broken_copy(old, new):
    (job,) = _manifests("rayjob.yaml")
    assert old in job["spec"]["entrypoint"]
    job["spec"]["entrypoint"] = job["spec"]["entrypoint"].replace(old, new)
    assert rayjob_problems(job)


def dockerfile_missing_sources(text: str) -> list[str]:
    missing = []
    for line in text.splitlines():
        parts = line.split()
        if parts[:1] == ["COPY"]:
            sources = [p for p in parts[1:-1] if not p.startswith("--")]
            missing += [s for s in sources if not (ROOT / s).exists()]
    return missing


def test_dockerfile_copies_files_that_exist():
    text = (CLUSTER / "Dockerfile").read_text()
    assert dockerfile_missing_sources(text) == []
    assert "pip install --no-cache-dir -e ." in text
    assert dockerfile_missing_sources(text + "\nCOPY nowhere ./\n") == ["nowhere"]


# --- Ray's ports stay off the internet; token auth stays on -------------------------------------------------


def _covers_ray_port(rule: dict) -> bool:
    if str(rule.get("IpProtocol")) == "-1":
        return True
    low, high = rule.get("FromPort", -1), rule.get("ToPort", -1)
    return low == -1 or any(low <= port <= high for port in RAY_PORTS)


def open_ray_ports(config: dict) -> list[str]:
    """Security-group rules (AWS) or firewall rules (any `sourceRanges`) that admit Ray's ports from outside
    private address space."""
    problems = []
    rules = config["provider"].get("security_group", {}).get("IpPermissions", [])
    for rule in rules:
        if not _covers_ray_port(rule):
            continue
        cidrs = [r["CidrIp"] for r in rule.get("IpRanges", [])]
        cidrs += [r["CidrIpv6"] for r in rule.get("Ipv6Ranges", [])]
        problems += [f"{rule}: {c} is not private" for c in cidrs if not ipaddress.ip_network(c).is_private]
        if rule.get("PrefixListIds"):
            problems.append(f"{rule}: prefix lists are not checked here")
    for ranges in _find_key(config, "sourceRanges"):
        problems += [
            f"sourceRanges {c} is not private" for c in ranges if not ipaddress.ip_network(c).is_private
        ]
    return problems


def _find_key(node, key):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                yield v
            yield from _find_key(v, key)
    elif isinstance(node, list):
        for v in node:
            yield from _find_key(v, key)


def token_auth_problems(config: dict) -> list[str]:
    problems = []
    starts = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    for command in starts:
        for part in command.split(";"):
            if "ray start" in part and "RAY_AUTH_MODE=token ray start" not in part:
                problems.append(f"{part.strip()}: starts Ray without RAY_AUTH_MODE=token")
    if not any("ray start --head" in c for c in config["head_start_ray_commands"]):
        problems.append("no head start command")
    if "RAY_AUTH_MODE=disabled" in yaml.safe_dump(config):
        problems.append("RAY_AUTH_MODE=disabled somewhere")
    if config.get("file_mounts", {}).get(TOKEN_FILE) != TOKEN_FILE:
        problems.append(f"the token {TOKEN_FILE} is not copied to the nodes")
    return problems


@pytest.mark.parametrize("name", LAUNCHERS)
def test_ray_ports_are_not_open_to_the_internet_and_token_auth_is_on(name):
    config = _launcher(name)
    assert open_ray_ports(config) == []
    assert token_auth_problems(config) == []


def _add_rule(config, rule):
    config["provider"].setdefault("security_group", {}).setdefault("IpPermissions", []).append(rule)


PORT_MUTATIONS = {
    "dashboard to the world": lambda c: _add_rule(
        c, {"IpProtocol": "tcp", "FromPort": 8265, "ToPort": 8265, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
    ),
    "GCS inside a range to the world (IPv6)": lambda c: _add_rule(
        c, {"IpProtocol": "tcp", "FromPort": 6000, "ToPort": 7000, "Ipv6Ranges": [{"CidrIpv6": "::/0"}]}
    ),
    "all traffic from a public range": lambda c: _add_rule(
        c, {"IpProtocol": "-1", "IpRanges": [{"CidrIp": "1.0.0.0/8"}]}
    ),
    "a firewall rule from anywhere": lambda c: c["provider"].update(
        firewall={"sourceRanges": ["0.0.0.0/0"], "allowed": [{"IPProtocol": "tcp", "ports": ["10001"]}]}
    ),
}
AUTH_MUTATIONS = {
    "head without token auth": lambda c: c["head_start_ray_commands"].__setitem__(
        -1, c["head_start_ray_commands"][-1].replace("RAY_AUTH_MODE=token ", "")
    ),
    "worker with auth disabled": lambda c: c["worker_start_ray_commands"].__setitem__(
        -1, c["worker_start_ray_commands"][-1].replace("RAY_AUTH_MODE=token", "RAY_AUTH_MODE=disabled")
    ),
    "token not copied": lambda c: c["file_mounts"].pop(TOKEN_FILE),
}


@pytest.mark.parametrize("name", LAUNCHERS)
@pytest.mark.parametrize("mutation", list(PORT_MUTATIONS) + list(AUTH_MUTATIONS))
def test_port_and_auth_checks_reject_a_broken_copy(name, mutation):
    config = _launcher(name)
    (PORT_MUTATIONS | AUTH_MUTATIONS)[mutation](config)
    assert open_ray_ports(config) or token_auth_problems(config)


# --- KubeRay: the CRD schema -----------------------------------------------------------------------------------


def _strict(node):
    """additionalProperties: false wherever `properties` is declared and unknown fields are not preserved:
    Kubernetes prunes unknown fields silently, this makes a mistyped field an error instead."""
    if isinstance(node, dict):
        if (
            "properties" in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
            and "additionalProperties" not in node
        ):
            node["additionalProperties"] = False
        for value in node.values():
            _strict(value)
    elif isinstance(node, list):
        for value in node:
            _strict(value)
    return node


@pytest.fixture(scope="module")
def crd_schemas():
    schemas = yaml.safe_load((ROOT / "tests" / "data" / "kuberay" / "ray.io_v1.schema.yaml").read_text())
    return {kind: _strict(copy.deepcopy(schemas[kind])) for kind in ("RayCluster", "RayJob")}


def _validate_manifest(doc: dict, crd_schemas) -> None:
    if doc["kind"] in crd_schemas:
        assert doc["apiVersion"] == "ray.io/v1"
        jsonschema.Draft7Validator(crd_schemas[doc["kind"]]).validate(doc)
    else:
        assert (doc["apiVersion"], doc["kind"]) in {("v1", "PersistentVolumeClaim"), ("v1", "Service")}


@pytest.mark.parametrize("name", MANIFESTS)
def test_kuberay_manifests_fit_the_crd_schema(name, crd_schemas):
    docs = _manifests(name)
    assert docs
    for doc in docs:
        _validate_manifest(doc, crd_schemas)


def _job_cluster(docs):
    return docs[0]["spec"]["rayClusterSpec"]


CRD_MUTATIONS = {
    "mistyped RayJob field": ("rayjob.yaml", lambda d: d[0]["spec"].update(shutdownAfterJobFinish=True)),
    "mistyped field deep in a pod template": (
        "raycluster.yaml",
        lambda d: d[0]["spec"]["workerGroupSpecs"][1]["template"]["spec"]["containers"][0].update(imagee="x"),
    ),
    "mistyped resource requirements": (
        "raycluster.yaml",
        lambda d: d[0]["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["resources"].update(
            limitz={}
        ),
    ),
    "replicas not an integer": (
        "raycluster.yaml",
        lambda d: d[0]["spec"]["workerGroupSpecs"][0].update(replicas="two"),
    ),
    "worker group without groupName": (
        "rayjob.yaml",
        lambda d: _job_cluster(d)["workerGroupSpecs"][0].pop("groupName"),
    ),
    "unknown auth mode": ("raycluster.yaml", lambda d: d[0]["spec"]["authOptions"].update(mode="password")),
}


@pytest.mark.parametrize("mutation", list(CRD_MUTATIONS))
def test_crd_schema_rejects_a_broken_copy(mutation, crd_schemas):
    name, mutate = CRD_MUTATIONS[mutation]
    docs = _manifests(name)
    mutate(docs)
    with pytest.raises(jsonschema.ValidationError):
        _validate_manifest(docs[0], crd_schemas)


# --- KubeRay: services, ports, GPUs, token ---------------------------------------------------------------------


def _cluster_specs(doc: dict) -> list[dict]:
    if doc["kind"] == "RayCluster":
        return [doc["spec"]]
    if doc["kind"] == "RayJob":
        return [doc["spec"]["rayClusterSpec"]]
    return []


def _pod_specs(spec: dict) -> list[tuple[str, dict, dict]]:
    groups = [("head", spec["headGroupSpec"])] + [
        (g["groupName"], g) for g in spec.get("workerGroupSpecs", [])
    ]
    return [(name, group, group["template"]["spec"]) for name, group in groups]


def kuberay_problems(docs: list[dict]) -> list[str]:
    """Services other than ClusterIP, host ports or host networking for Ray's ports, token auth off, GPU counts
    that differ between a pod's resources and Ray's start parameters."""
    problems = []
    for doc in docs:
        if doc["kind"] == "Service":
            spec = doc.get("spec", {})
            if spec.get("type", "ClusterIP") != "ClusterIP":
                problems.append(f"Service {doc['metadata']['name']}: type {spec['type']}")
        for spec in _cluster_specs(doc):
            head = spec["headGroupSpec"]
            if head.get("serviceType", "ClusterIP") != "ClusterIP":
                problems.append(f"head service type {head['serviceType']}")
            service = head.get("headService", {}).get("spec", {})
            if service.get("type", "ClusterIP") != "ClusterIP":
                problems.append(f"headService type {service['type']}")
            for cidr in service.get("loadBalancerSourceRanges", []):
                problems.append(f"headService loadBalancerSourceRanges {cidr}")
            if head.get("enableIngress"):
                problems.append("the head has an Ingress")
            if spec.get("authOptions", {}).get("mode") != "token":
                problems.append("authOptions.mode is not token")
            for name, group, pod in _pod_specs(spec):
                if pod.get("hostNetwork"):
                    problems.append(f"{name}: hostNetwork puts Ray's ports on the node")
                gpus = 0
                for container in pod["containers"]:
                    for port in container.get("ports", []):
                        if port.get("hostPort"):
                            problems.append(f"{name}: hostPort {port['hostPort']}")
                    for env in container.get("env", []):
                        if env["name"] == "RAY_AUTH_MODE" and env.get("value") != "token":
                            problems.append(f"{name}: RAY_AUTH_MODE={env.get('value')}")
                    resources = container.get("resources", {})
                    limit = int(resources.get("limits", {}).get("nvidia.com/gpu", 0))
                    request = resources.get("requests", {}).get("nvidia.com/gpu")
                    if request is not None and int(request) != limit:
                        problems.append(f"{name}: GPU request {request} != limit {limit}")
                    gpus += limit
                start = group.get("rayStartParams", {})
                if "num-gpus" in start and int(start["num-gpus"]) != gpus:
                    problems.append(f"{name}: num-gpus {start['num-gpus']} but the pod has {gpus} GPUs")
                if gpus and not any(t.get("key") == "nvidia.com/gpu" for t in pod.get("tolerations", [])):
                    problems.append(f"{name}: GPU pods do not tolerate the nvidia.com/gpu taint")
    return problems


@pytest.mark.parametrize("name", MANIFESTS)
def test_kuberay_services_stay_inside_and_gpu_counts_agree(name):
    assert kuberay_problems(_manifests(name)) == []


def _group(docs, name):
    spec = _cluster_specs(docs[0])[0]
    return next(g for n, g, _ in _pod_specs(spec) if n == name)


def _container(docs, name):
    return _group(docs, name)["template"]["spec"]["containers"][0]


K8S_MUTATIONS = {
    "LoadBalancer head": (
        "raycluster.yaml",
        lambda d: d[0]["spec"]["headGroupSpec"].update(serviceType="LoadBalancer"),
    ),
    "NodePort head service": (
        "rayjob.yaml",
        lambda d: _job_cluster(d)["headGroupSpec"].update(headService={"spec": {"type": "NodePort"}}),
    ),
    "extra LoadBalancer Service": (
        "shared-pvc.yaml",
        lambda d: d.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "x"},
                "spec": {"type": "LoadBalancer"},
            }
        ),
    ),
    "dashboard on a host port": (
        "raycluster.yaml",
        lambda d: _container(d, "head")["ports"][1].update(hostPort=8265),
    ),
    "host networking": (
        "rayjob.yaml",
        lambda d: _group(d, "head")["template"]["spec"].update(hostNetwork=True),
    ),
    "token auth off": ("raycluster.yaml", lambda d: d[0]["spec"].pop("authOptions")),
    "auth disabled by env": (
        "rayjob.yaml",
        lambda d: _container(d, "head").update(env=[{"name": "RAY_AUTH_MODE", "value": "disabled"}]),
    ),
    "GPU count differs from num-gpus": (
        "raycluster.yaml",
        lambda d: _container(d, "gpu-8x")["resources"]["limits"].update({"nvidia.com/gpu": "4"}),
    ),
    "GPU pods without the toleration": (
        "rayjob.yaml",
        lambda d: _group(d, "gpu-1x")["template"]["spec"].pop("tolerations"),
    ),
}


@pytest.mark.parametrize("mutation", list(K8S_MUTATIONS))
def test_kuberay_checks_reject_a_broken_copy(mutation):
    name, mutate = K8S_MUTATIONS[mutation]
    docs = _manifests(name)
    mutate(docs)
    assert kuberay_problems(docs)
