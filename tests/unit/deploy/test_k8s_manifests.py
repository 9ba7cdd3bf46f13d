"""The KubeRay manifests in k8s/: schema-valid, consistent with each other and the project, and safe.

1. Every RayCluster / RayJob document is validated against the ``openAPIV3Schema`` of the ``ray.io/v1``
   CRD in ``../shared/kuberay/`` (skipped with the reason when that folder is absent), with
   ``jsonschema``'s Draft 2020-12 validator after translating Kubernetes' OpenAPI dialect:
   ``x-kubernetes-int-or-string`` (integer or string, quantities' pattern on strings only),
   ``nullable``, ``format: int32/int64`` (range-checked), ``x-kubernetes-list-type: map/set`` (no two
   items with the same keys), unknown fields rejected as ``kubectl apply``'s default strict field
   validation does (``additionalProperties: false`` unless ``x-kubernetes-preserve-unknown-fields``).
   CEL rules (``x-kubernetes-validations``) cannot be evaluated here: a manifest that sets a field
   carrying one fails, so nobody ships an unchecked rule. ``metadata`` (free-form in the CRD) gets
   a subset of ObjectMeta plus KubeRay's name rules (DNS-1035 label, 53 / 47 characters).
2. Some of the KubeRay operator's own checks (``ValidateRayClusterSpec`` / ``ValidateRayJobSpec``).
3. The project's rules: the Ray version everywhere satisfies pyproject.toml's pin; the head does no
   work; autoscaling on; a GPU group asking for ``nvidia.com/gpu`` and tolerating its taint; ClusterIP
   only; token auth on with the token from a Secret; storage credentials from the ``dflray-s3``
   Secret in every container and no literal credential anywhere; RayJobs that clean up, time out and
   retry, whose entrypoints are the jobs/ scripts with arguments the dflray CLI accepts, and whose
   ``rayClusterSpec`` is the RayCluster's spec.

Each check is a function returning problems, and each has a negative test on a broken copy.
"""

from __future__ import annotations

import copy
import functools
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

jsonschema = pytest.importorskip("jsonschema")
from jsonschema import Draft202012Validator, FormatChecker, ValidationError  # noqa: E402
from packaging.requirements import Requirement  # noqa: E402
from packaging.specifiers import SpecifierSet  # noqa: E402
from packaging.version import Version  # noqa: E402

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

REPO = Path(__file__).resolve().parents[3]
K8S = REPO / "k8s"
CRDS = REPO.parent / "shared" / "kuberay"
CRD_FILES = {"RayCluster": "ray.io_rayclusters.yaml", "RayJob": "ray.io_rayjobs.yaml"}
MANIFESTS = sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
STAGES = ("extract", "train", "merge", "generate")

TOKEN_SECRET, TOKEN_KEY = "dflray-ray-token", "auth_token"  # KubeRay's key (RAY_AUTH_TOKEN_SECRET_KEY)
STORAGE_SECRET = "dflray-s3"
SECRET_NAME = re.compile(r"SECRET|KEY|TOKEN|PASSWORD|PASSWD|CREDENTIAL", re.I)
# The RayJobs' rayClusterSpec must equal the RayCluster's spec except at these paths (none today;
# list a path such as ("workerGroupSpecs", 0, "maxReplicas") here, with the reason, to allow one).
ALLOWED_SPEC_DIFFERENCES: tuple[tuple, ...] = ()


# --------------------------------------------------------------------------- loading

def load(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text()) if d is not None]


@functools.lru_cache(maxsize=None)
def _all_docs() -> tuple[tuple[str, dict], ...]:
    return tuple((name, d) for name in MANIFESTS for d in load(name))


def all_docs() -> list[tuple[str, dict]]:
    return copy.deepcopy(list(_all_docs()))


def of_kind(docs, kind):
    return [d for _, d in docs if d.get("kind") == kind]


def cluster_specs(docs) -> list[tuple[str, dict]]:
    """(where, RayClusterSpec) for the RayCluster and every RayJob's rayClusterSpec."""
    out = []
    for name, d in docs:
        if d.get("kind") == "RayCluster":
            out.append((f"{name}:spec", d.get("spec") or {}))
        elif d.get("kind") == "RayJob" and "rayClusterSpec" in (d.get("spec") or {}):
            out.append((f"{name}:spec.rayClusterSpec", d["spec"]["rayClusterSpec"]))
    return out


def groups(spec) -> list[tuple[str, dict]]:
    """('head' | 'worker <name>', group spec)."""
    out = [("head", spec.get("headGroupSpec") or {})]
    out += [(f"worker {g.get('groupName')}", g) for g in spec.get("workerGroupSpecs") or []]
    return out


def containers(group, init: bool = False) -> list[dict]:
    """The pod template's containers (and its init containers with ``init``)."""
    pod = ((group.get("template") or {}).get("spec") or {})
    return list(pod.get("containers") or []) + (list(pod.get("initContainers") or []) if init else [])


def env(container, name):
    return next((e for e in container.get("env") or [] if e.get("name") == name), None)


# --------------------------------------------------------------------------- CRD schema → JSON Schema

def int_format(bits):
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return lambda x: not isinstance(x, int) or isinstance(x, bool) or lo <= x <= hi


FORMATS = FormatChecker()
FORMATS.checks("int32")(int_format(32))
FORMATS.checks("int64")(int_format(64))


def to_jsonschema(node):
    """A structural OpenAPI v3 schema of a CRD as JSON Schema (2020-12) with Kubernetes' semantics."""
    if isinstance(node, list):
        return [to_jsonschema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for k, v in node.items():
        if k in ("properties", "patternProperties"):
            out[k] = {name: to_jsonschema(s) for name, s in v.items()}
        elif k in ("items", "additionalProperties", "not", "anyOf", "allOf", "oneOf"):
            out[k] = to_jsonschema(v)
        else:  # values (enum, default, required, x-kubernetes-*) are data, not schemas
            out[k] = v
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if node.get("nullable"):
        if "type" in out:
            out["type"] = [out["type"], "null"]
        elif "anyOf" in out:
            out["anyOf"] = [*out["anyOf"], {"type": "null"}]
        if "enum" in out and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
    if node.get("x-kubernetes-embedded-resource"):
        props = out.setdefault("properties", {})
        for f in ("apiVersion", "kind"):
            props.setdefault(f, {"type": "string"})
        props.setdefault("metadata", {"type": "object"})
    if "properties" in out and "additionalProperties" not in out \
            and not node.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False  # kubectl apply's default: strict field validation
    return out


def _list_type(validator, list_type, instance, schema):
    if not validator.is_type(instance, "array"):
        return
    if list_type == "map":
        keys = schema.get("x-kubernetes-list-map-keys") or []
        item_props = (schema.get("items") or {}).get("properties") or {}
        seen = {}
        for i, item in enumerate(instance):
            if not isinstance(item, dict):
                continue
            key = tuple(item.get(k, (item_props.get(k) or {}).get("default")) for k in keys)
            if key in seen:
                yield ValidationError(f"items {seen[key]} and {i} have the same key "
                                      f"{dict(zip(keys, key))} in a list keyed by {keys}")
            seen.setdefault(key, i)
    elif list_type == "set":
        for i, item in enumerate(instance):
            if any(item == other and type(item) is type(other) for other in instance[:i]):
                yield ValidationError(f"item {i} ({item!r}) repeats an earlier item of a set")


def _cel(validator, rules, instance, schema):
    msgs = "; ".join(r.get("message") or r.get("rule", "") for r in rules)
    yield ValidationError(f"this field carries CEL rules that this test cannot evaluate ({msgs}): "
                          "check them by hand and extend the test, or leave the field out")


K8sValidator = jsonschema.validators.extend(
    Draft202012Validator, {"x-kubernetes-list-type": _list_type, "x-kubernetes-validations": _cel})

DNS1035 = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
OBJECT_META = {  # the part of ObjectMeta these manifests may use; KubeRay names are DNS-1035 labels
    "type": "object", "required": ["name"], "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "pattern": DNS1035},
        "namespace": {"type": "string", "pattern": DNS1035, "maxLength": 63},
        "labels": {"type": "object",
                   "additionalProperties": {"type": "string", "maxLength": 63, "pattern": LABEL_VALUE}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}
MAX_NAME = {"RayCluster": 53, "RayJob": 47}  # KubeRay's MaxRayClusterNameLength / MaxRayJobNameLength


def require_crds():
    if not all((CRDS / f).is_file() for f in CRD_FILES.values()):
        pytest.skip(f"KubeRay CRDs not found in {CRDS} (../shared/kuberay/ray.io_rayclusters.yaml and "
                    "ray.io_rayjobs.yaml): schema validation needs them")


@functools.lru_cache(maxsize=None)
def crd_schema(kind: str, version: str = "v1") -> dict:
    crd = yaml.safe_load((CRDS / CRD_FILES[kind]).read_text())
    assert crd["spec"]["names"]["kind"] == kind
    versions = {v["name"]: v for v in crd["spec"]["versions"]}
    assert version in versions, f"{kind} CRD has no version {version} (has {sorted(versions)})"
    schema = to_jsonschema(versions[version]["schema"]["openAPIV3Schema"])
    schema["properties"]["metadata"] = {**OBJECT_META, "properties": {
        **OBJECT_META["properties"],
        "name": {**OBJECT_META["properties"]["name"], "maxLength": MAX_NAME[kind]}}}
    schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata", "spec"})
    schema["properties"]["apiVersion"] = {"const": f"{crd['spec']['group']}/{version}"}
    schema["properties"]["kind"] = {"const": kind}
    return schema


@functools.lru_cache(maxsize=None)
def validator(kind: str) -> Draft202012Validator:
    return K8sValidator(crd_schema(kind), format_checker=FORMATS)


def schema_errors(doc) -> list[str]:
    kind = doc.get("kind")
    if kind not in CRD_FILES:
        return [f"kind {kind!r} is not one of {sorted(CRD_FILES)}"]
    errors = sorted(validator(kind).iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    return [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors]


# --------------------------------------------------------------------------- checks (lists of problems)

def operator_problems(doc) -> list[str]:
    """A subset of KubeRay's ValidateRayClusterSpec / ValidateRayJobSpec, which the CRD schema lacks."""
    p = []
    spec = doc.get("spec") or {}
    specs = [spec] if doc.get("kind") == "RayCluster" else [spec.get("rayClusterSpec") or {}]
    if doc.get("kind") == "RayJob":
        if not spec.get("rayClusterSpec") and not spec.get("clusterSelector"):
            p.append("one of rayClusterSpec or clusterSelector must be set")
        if spec.get("ttlSecondsAfterFinished", 0) and not spec.get("shutdownAfterJobFinishes"):
            p.append("ttlSecondsAfterFinished needs shutdownAfterJobFinishes")
        if isinstance(spec.get("activeDeadlineSeconds"), int) and spec["activeDeadlineSeconds"] <= 0:
            p.append("activeDeadlineSeconds must be positive")
        if isinstance(spec.get("backoffLimit"), int) and spec["backoffLimit"] < 0:
            p.append("backoffLimit must be >= 0")
        if spec.get("submissionMode") == "InteractiveMode" and spec.get("backoffLimit") not in (None, 0):
            p.append("backoffLimit is incompatible with InteractiveMode")
        if spec.get("submissionMode", "K8sJobMode") != "InteractiveMode" and not spec.get("entrypoint"):
            p.append("entrypoint is empty")
        try:
            env_yaml = yaml.safe_load(spec.get("runtimeEnvYAML") or "{}")
            if not isinstance(env_yaml, dict):
                p.append("runtimeEnvYAML is not a mapping")
        except yaml.YAMLError as e:
            p.append(f"runtimeEnvYAML is not YAML: {e}")
    for s in specs:
        names = []
        for where, g in groups(s):
            if not containers(g):
                p.append(f"{where}: no container")
            if where != "head":
                names.append(g.get("groupName"))
                lo, hi = g.get("minReplicas", 0), g.get("maxReplicas", 2 ** 31 - 1)
                n = g.get("replicas", lo)
                if all(isinstance(x, int) for x in (lo, n, hi)) and not lo <= n <= hi:
                    p.append(f"{where}: replicas outside [minReplicas, maxReplicas]")
        if len(set(names)) != len(names) or "headgroup" in names:
            p.append(f"worker group names must be unique and not 'headgroup': {names}")
    return p


def pinned_ray() -> SpecifierSet:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    reqs = [Requirement(d) for d in deps if Requirement(d).name == "ray"]
    assert len(reqs) == 1, f"pyproject.toml should pin ray once, found {reqs}"
    assert reqs[0].specifier, "pyproject.toml's ray dependency has no version bounds"
    return reqs[0].specifier


# The stock images (`docker.io/` spelled out on the GPU group so kustomize can retarget it alone) and
# the dflray images of cluster/Dockerfile, whose tags carry the Ray and Python versions.
IMAGE_VERSIONS = (
    re.compile(r"^(docker\.io/)?rayproject/ray(-ml)?:(?P<ver>\d+\.\d+\.\d+)(-py(?P<py>\d+))?(?P<gpu>-gpu|-cu\d+)?$"),
    re.compile(r"^[^:]+/dflray:[^:]*-ray(?P<ver>\d+\.\d+\.\d+)-py(?P<py>\d+)(-cpu|(?P<gpu>-gpu))$"),
)


def version_problems(docs, pinned: SpecifierSet) -> list[str]:
    p = []
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    python_ok = SpecifierSet(project.get("requires-python", ""))
    for where, spec in cluster_specs(docs):
        rv = str(spec.get("rayVersion", ""))
        if not rv or Version(rv) not in pinned:
            p.append(f"{where}: rayVersion {rv!r} does not satisfy the project's ray{pinned}")
        for gname, g in groups(spec):
            for c in containers(g, init=True):
                m = next((m for r in IMAGE_VERSIONS if (m := r.match(c.get("image", "")))), None)
                if not m:
                    p.append(f"{where} {gname}: image {c.get('image')!r} is neither rayproject/ray:<version>"
                             "-py<NN>[-gpu] nor a dflray build tagged <app>-ray<version>-py<NN>-cpu|gpu")
                    continue
                if m["ver"] != rv or Version(m["ver"]) not in pinned:
                    p.append(f"{where} {gname}: image {c['image']} differs from rayVersion {rv} / ray{pinned}")
                if g in gpu_group(spec) and not m["gpu"]:
                    p.append(f"{where} {gname}: the GPU group needs a CUDA (-gpu) image, not {c['image']}")
                if m["py"] and Version(f"{m['py'][0]}.{m['py'][1:]}") not in python_ok:
                    p.append(f"{where} {gname}: image Python {m['py']} outside requires-python {python_ok}")
    return p


def gpu_group(spec):
    return [g for g in spec.get("workerGroupSpecs") or []
            if any("nvidia.com/gpu" in ((c.get("resources") or {}).get("limits") or {}) for c in containers(g))]


def topology_problems(docs) -> list[str]:
    p = []
    for where, spec in cluster_specs(docs):
        head = spec.get("headGroupSpec") or {}
        if str((head.get("rayStartParams") or {}).get("num-cpus")) != "0" or \
                not isinstance((head.get("rayStartParams") or {}).get("num-cpus"), str):
            p.append(f"{where}: the head must have rayStartParams num-cpus: \"0\" (a string)")
        if spec.get("enableInTreeAutoscaling") is not True or not spec.get("autoscalerOptions"):
            p.append(f"{where}: in-tree autoscaling (with autoscalerOptions) is off")
        workers = spec.get("workerGroupSpecs") or []
        gpus = gpu_group(spec)
        if not [g for g in workers if g not in gpus]:
            p.append(f"{where}: no CPU worker group")
        if not gpus:
            p.append(f"{where}: no worker group with an nvidia.com/gpu limit")
        for g in gpus:
            pod = g["template"]["spec"]
            for c in containers(g):
                res = c.get("resources") or {}
                lim = (res.get("limits") or {}).get("nvidia.com/gpu")
                if "nvidia.com/gpu" in (res.get("requests") or {}) and res["requests"]["nvidia.com/gpu"] != lim:
                    p.append(f"{where} {g['groupName']}: nvidia.com/gpu requests must equal limits")
                if not lim or int(lim) < 1:
                    p.append(f"{where} {g['groupName']}: nvidia.com/gpu limit must be >= 1")
            if not any(t.get("key") == "nvidia.com/gpu" and t.get("operator") in ("Exists", "Equal")
                       and t.get("effect") in (None, "", "NoSchedule") for t in pod.get("tolerations") or []):
                p.append(f"{where} {g['groupName']}: no toleration for the nvidia.com/gpu taint")
            if g.get("minReplicas", 0) != 0:
                p.append(f"{where} {g['groupName']}: GPU workers should scale from zero (minReplicas 0)")
    return p


def exposure_problems(docs) -> list[str]:
    p = []
    for where, spec in cluster_specs(docs):
        head = spec.get("headGroupSpec") or {}
        svc_types = [head.get("serviceType"),
                     (((head.get("headService") or {}).get("spec")) or {}).get("type")]
        if head.get("serviceType") != "ClusterIP":
            p.append(f"{where}: headGroupSpec.serviceType must be ClusterIP (got {head.get('serviceType')!r})")
        if {"LoadBalancer", "NodePort"} & set(svc_types):
            p.append(f"{where}: the head is exposed outside the cluster ({svc_types})")
        if head.get("enableIngress"):
            p.append(f"{where}: enableIngress exposes the dashboard")
        for gname, g in groups(spec):
            pod = (g.get("template") or {}).get("spec") or {}
            if pod.get("hostNetwork"):
                p.append(f"{where} {gname}: hostNetwork exposes Ray's ports on the node")
            for c in containers(g):
                if any(port.get("hostPort") for port in c.get("ports") or []):
                    p.append(f"{where} {gname}: hostPort exposes a Ray port on the node")
    return p


def _envs_everywhere(docs):
    """(where, env list) for every container, the autoscaler and the submitter pod."""
    for where, spec in cluster_specs(docs):
        for gname, g in groups(spec):
            for c in containers(g, init=True):
                yield f"{where} {gname} {c.get('name')}", c.get("env") or []
        yield f"{where} autoscaler", (spec.get("autoscalerOptions") or {}).get("env") or []
    for name, d in docs:
        tpl = ((d.get("spec") or {}).get("submitterPodTemplate") or {}).get("spec") or {}
        for c in tpl.get("containers") or []:
            yield f"{name} submitter {c.get('name')}", c.get("env") or []


def credential_problems(docs, texts: dict[str, str]) -> list[str]:
    p = []
    for where, envs in _envs_everywhere(docs):
        for e in envs:
            if SECRET_NAME.search(e.get("name", "")) and "value" in e:
                p.append(f"{where}: env {e['name']} has a literal value: take it from a Secret")
    for name, d in docs:
        if d.get("kind") == "RayJob":
            env_vars = (yaml.safe_load(d["spec"].get("runtimeEnvYAML") or "{}") or {}).get("env_vars") or {}
            for k in env_vars:
                if SECRET_NAME.search(k) or k.startswith("AWS_"):
                    p.append(f"{name}: runtimeEnvYAML env_vars sets {k}: credentials and AWS_* settings "
                             f"come from the {STORAGE_SECRET} Secret")
            if re.search(r"://[^/\s:@]+:[^/\s@]+@", d["spec"].get("runtimeEnvYAML") or ""):
                p.append(f"{name}: runtimeEnvYAML has a URI with credentials in it")
    for name, text in texts.items():
        if re.search(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b", text):
            p.append(f"{name}: contains what looks like an AWS access key id")
        if re.search(r"^\s*(data|stringData):", text, re.M) or re.search(r"^kind:\s*Secret\b", text, re.M):
            p.append(f"{name}: contains a Secret: create Secrets with kubectl (k8s/README.md), never in git")
    return p


def storage_problems(docs) -> list[str]:
    p = []
    for where, spec in cluster_specs(docs):
        for gname, g in groups(spec):
            for c in containers(g):
                from_secret = any((ef.get("secretRef") or {}).get("name") == STORAGE_SECRET
                                  for ef in c.get("envFrom") or [])
                by_key = all(((env(c, k) or {}).get("valueFrom") or {}).get("secretKeyRef", {}).get("name")
                             == STORAGE_SECRET for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"))
                if not (from_secret or by_key):
                    p.append(f"{where} {gname} {c.get('name')}: no storage credentials from "
                             f"Secret {STORAGE_SECRET}")
    return p


def auth_problems(docs) -> list[str]:
    p = []
    for where, spec in cluster_specs(docs):
        auth = spec.get("authOptions") or {}
        if auth.get("mode") != "token" or auth.get("secretName") != TOKEN_SECRET:
            p.append(f"{where}: authOptions must be {{mode: token, secretName: {TOKEN_SECRET}}} (got {auth})")
        for gname, g in groups(spec):
            for c in containers(g):
                mode, token = env(c, "RAY_AUTH_MODE"), env(c, "RAY_AUTH_TOKEN")
                if mode is None or mode.get("value") != "token":
                    p.append(f"{where} {gname} {c.get('name')}: RAY_AUTH_MODE must be token")
                ref = ((token or {}).get("valueFrom") or {}).get("secretKeyRef") or {}
                if (ref.get("name"), ref.get("key")) != (TOKEN_SECRET, TOKEN_KEY) or "value" in (token or {}):
                    p.append(f"{where} {gname} {c.get('name')}: RAY_AUTH_TOKEN must come from Secret "
                             f"{TOKEN_SECRET} key {TOKEN_KEY}")
    for where, envs in _envs_everywhere(docs):
        for e in envs:
            if e.get("name") == "RAY_AUTH_MODE" and e.get("value") not in (None, "token"):
                p.append(f"{where}: RAY_AUTH_MODE={e.get('value')} turns token authentication off")
    for name, d in docs:
        if d.get("kind") == "RayJob":
            env_vars = (yaml.safe_load(d["spec"].get("runtimeEnvYAML") or "{}") or {}).get("env_vars") or {}
            if "RAY_AUTH_MODE" in env_vars:
                p.append(f"{name}: runtimeEnvYAML must not touch RAY_AUTH_MODE")
    return p


def rayjob_problems(docs) -> list[str]:
    p = []
    for name, d in docs:
        if d.get("kind") != "RayJob":
            continue
        s = d.get("spec") or {}
        if s.get("shutdownAfterJobFinishes") is not True:
            p.append(f"{name}: shutdownAfterJobFinishes must be true")
        for f, lo in (("ttlSecondsAfterFinished", 1), ("activeDeadlineSeconds", 1), ("backoffLimit", 0)):
            v = s.get(f)
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                p.append(f"{name}: {f} must be an integer >= {lo} (got {v!r})")
        env_yaml = yaml.safe_load(s.get("runtimeEnvYAML") or "{}") or {}
        if not isinstance(env_yaml, dict) or not (env_yaml.get("working_dir") or env_yaml.get("pip")):
            p.append(f"{name}: runtimeEnvYAML needs working_dir and/or pip (the code and its dependencies)")
        elif "://" not in str(env_yaml.get("working_dir", "://")):
            p.append(f"{name}: working_dir must be a remote URI (the submitter pod has no local checkout)")
        for k, v in (env_yaml.get("env_vars") or {}).items() if isinstance(env_yaml, dict) else ():
            if not isinstance(v, str):
                p.append(f"{name}: runtimeEnvYAML env_vars {k} must be a string")
    return p


def same_spec_problems(docs) -> list[str]:
    clusters = of_kind(docs, "RayCluster")
    if len(clusters) != 1:
        return [f"expected one RayCluster, found {len(clusters)}"]

    def strip(spec):
        spec = copy.deepcopy(spec)
        for path in ALLOWED_SPEC_DIFFERENCES:
            node = spec
            for k in path[:-1]:
                node = node[k]
            node.pop(path[-1], None)
        return spec

    want = strip(clusters[0]["spec"])
    return [f"{name}: spec.rayClusterSpec differs from raycluster.yaml's spec at {where}"
            for name, d in docs if d.get("kind") == "RayJob"
            for where in _diff(strip((d.get("spec") or {}).get("rayClusterSpec") or {}), want)]


def _diff(a, b, path="") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [x for k in sorted(set(a) | set(b), key=str)
                for x in (_diff(a.get(k), b.get(k), f"{path}.{k}") if k in a and k in b else [f"{path}.{k}"])]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [x for i, (u, v) in enumerate(zip(a, b)) for x in _diff(u, v, f"{path}[{i}]")]
    return [] if a == b and type(a) is type(b) else [path or "<root>"]


def entrypoint_problems(docs) -> list[str]:
    from dflray.cli import main

    p = []
    for name, d in docs:
        if d.get("kind") != "RayJob":
            continue
        argv = shlex.split((d.get("spec") or {}).get("entrypoint") or "")
        stage = ((d.get("metadata") or {}).get("labels") or {}).get("app.kubernetes.io/component")
        if stage not in STAGES:
            p.append(f"{name}: label app.kubernetes.io/component should name the stage, one of {STAGES}")
            continue
        if argv[:2] != ["python", f"jobs/{stage}.py"]:
            p.append(f"{name}: entrypoint should run `python jobs/{stage}.py ...` (got {argv[:2]})")
            continue
        if not (REPO / argv[1]).is_file():
            p.append(f"{name}: {argv[1]} does not exist in the repository")
        for a in argv[2:]:
            if "://" in a and not a.startswith("s3://"):
                p.append(f"{name}: {a} should be an s3:// URI (object storage the cluster reads)")
        cwd = os.getcwd()
        os.chdir(REPO)  # the job's working dir is the repository (a plan file given by relative path)
        try:
            code = main([stage, *argv[2:], "--print-config"])
        except SystemExit as e:
            code = e.code
        finally:
            os.chdir(cwd)
        if code != 0:
            p.append(f"{name}: `dflray {stage}` rejects the entrypoint's arguments (exit {code})")
    return p


# --------------------------------------------------------------------------- tests: the manifests

def test_the_manifests_exist():
    # more RayJobs may be added (k8s/README.md: the dst extraction job); these are the shipped ones
    assert {"raycluster.yaml", *(f"rayjob-{s}.yaml" for s in STAGES)} <= set(MANIFESTS)
    kinds = {name: [d["kind"] for d in load(name)] for name in MANIFESTS}
    assert kinds.pop("raycluster.yaml") == ["RayCluster"]
    assert all(k == ["RayJob"] for k in kinds.values()), kinds
    stages = sorted(d["metadata"]["labels"]["app.kubernetes.io/component"] for d in of_kind(all_docs(), "RayJob"))
    assert set(stages) == set(STAGES), stages


@pytest.mark.parametrize("name", MANIFESTS)
def test_manifest_matches_the_kuberay_crd_schema(name):
    require_crds()
    for doc in load(name):
        assert doc["kind"] in CRD_FILES, f"{name}: unexpected kind {doc['kind']}"
        assert schema_errors(doc) == [], name


@pytest.mark.parametrize("name", MANIFESTS)
def test_manifest_passes_kuberays_own_checks(name):
    for doc in load(name):
        assert operator_problems(doc) == [], name


def test_ray_version_matches_the_project_pin():
    pinned = pinned_ray()
    assert Version("2.60.0") in pinned  # the pin these manifests were written for
    assert version_problems(all_docs(), pinned) == []


def test_cluster_topology():
    assert topology_problems(all_docs()) == []


def test_nothing_exposed_outside_the_cluster():
    assert exposure_problems(all_docs()) == []


def test_no_literal_credentials():
    texts = {p.name: p.read_text() for p in K8S.iterdir() if p.is_file()}
    assert credential_problems(all_docs(), texts) == []


def test_every_container_gets_the_storage_secret():
    assert storage_problems(all_docs()) == []


def test_token_authentication_is_on():
    assert auth_problems(all_docs()) == []


def test_rayjobs_clean_up_time_out_and_retry():
    assert rayjob_problems(all_docs()) == []


def test_rayjobs_run_the_raycluster_spec():
    assert same_spec_problems(all_docs()) == []


def test_entrypoints_are_the_job_scripts_with_valid_arguments():
    assert entrypoint_problems(all_docs()) == []


def test_kustomization_lists_every_manifest():
    k = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert k["kind"] == "Kustomization"
    assert sorted(k["resources"]) == MANIFESTS
    assert not k.get("images"), "the default build keeps the stock Ray images (README: how to override)"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed (kubectl kustomize)")
def test_kustomize_build_and_image_override(tmp_path):
    built = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60)
    assert built.returncode == 0, built.stderr
    rendered = [d for d in yaml.safe_load_all(built.stdout) if d]
    assert sorted((d["kind"], d["metadata"]["name"]) for d in rendered) == \
        sorted((d["kind"], d["metadata"]["name"]) for _, d in all_docs())
    # the README's recipe for the dflray images (CPU and GPU builds), `pip` dropped from the RayJobs
    shutil.copytree(K8S, tmp_path / "k8s")
    with open(tmp_path / "k8s" / "kustomization.yaml", "a") as f:
        f.write(DFLRAY_IMAGE_OVERLAY)
    built = subprocess.run(["kubectl", "kustomize", str(tmp_path / "k8s")], capture_output=True, text=True,
                           timeout=60)
    assert built.returncode == 0, built.stderr
    docs = [(f"kustomized {d['metadata']['name']}", d) for d in yaml.safe_load_all(built.stdout) if d]
    images = {(gname, c["image"]) for _, spec in cluster_specs(docs) for gname, g in groups(spec)
              for c in containers(g)}
    assert images == {("head", "ghcr.io/owner/dflray:0.1.0-ray2.60.0-py311-cpu"),
                      ("worker cpu", "ghcr.io/owner/dflray:0.1.0-ray2.60.0-py311-cpu"),
                      ("worker gpu", "ghcr.io/owner/dflray:0.1.0-ray2.60.0-py311-gpu")}
    assert sum(1 for _, spec in cluster_specs(docs) for _, g in groups(spec) for _ in containers(g)) == \
        3 * len(cluster_specs(docs))
    assert version_problems(docs, pinned_ray()) == []
    for d in of_kind(docs, "RayJob"):
        assert "pip" not in yaml.safe_load(d["spec"]["runtimeEnvYAML"])
    for check in (topology_problems, exposure_problems, storage_problems, auth_problems, rayjob_problems,
                  same_spec_problems):
        assert check(docs) == [], check.__name__
    if all((CRDS / f).is_file() for f in CRD_FILES.values()):
        assert [e for _, d in docs for e in schema_errors(d)] == []


DFLRAY_IMAGE_OVERLAY = """\
images:
  - name: rayproject/ray
    newName: ghcr.io/owner/dflray
    newTag: 0.1.0-ray2.60.0-py311-cpu
  - name: docker.io/rayproject/ray
    newName: ghcr.io/owner/dflray
    newTag: 0.1.0-ray2.60.0-py311-gpu
patches:
  - target: {kind: RayJob}
    patch: |
      - op: replace
        path: /spec/runtimeEnvYAML
        value: |
          working_dir: "https://github.com/OWNER/dflray/archive/refs/tags/v0.1.0.zip"
          env_vars: {PYTHONUNBUFFERED: "1"}
"""


# --------------------------------------------------------------------------- tests: the checks can fail

def _cluster():
    return copy.deepcopy(load("raycluster.yaml")[0])


def _job(stage="train"):
    return copy.deepcopy(load(f"rayjob-{stage}.yaml")[0])


def _gpu(spec):
    return next(g for g in spec["workerGroupSpecs"] if g["groupName"] == "gpu")


@pytest.mark.parametrize("break_it, expect", [
    (lambda d: d["spec"].__setitem__("backoffLimit", "2"), "backoffLimit: '2' is not of type 'integer'"),
    (lambda d: d["spec"].__setitem__("shutdownAfterJobFinishes", "yes"), "is not of type 'boolean'"),
    (lambda d: d["spec"].__setitem__("activeDeadlineSeconds", 2 ** 31), "is not a 'int32'"),
    (lambda d: d["spec"].__setitem__("entrypointNumCpus", "1"), "is not of type 'number'"),
    (lambda d: d["spec"].__setitem__("shutdownAfterJobFinish", True), "'shutdownAfterJobFinish' was unexpected"),
    (lambda d: d["spec"]["rayClusterSpec"]["workerGroupSpecs"][0].__setitem__(
        "minReplica", 1), "'minReplica' was unexpected"),
    (lambda d: d["spec"]["rayClusterSpec"]["workerGroupSpecs"][0].pop("groupName"),
     "'groupName' is a required property"),
    (lambda d: d["spec"]["rayClusterSpec"]["autoscalerOptions"].__setitem__("upscalingMode", "Fast"),
     "'Fast' is not one of"),
    (lambda d: d["spec"]["rayClusterSpec"]["headGroupSpec"]["rayStartParams"].__setitem__("num-cpus", 0),
     "0 is not of type 'string'"),
    (lambda d: d["spec"]["rayClusterSpec"].__setitem__("managedBy", "ray.io/kuberay-operator"),
     "CEL rules that this test cannot evaluate"),
    (lambda d: d["metadata"].__setitem__("name", "Dflray_Train"), "does not match"),
    (lambda d: d["metadata"].__setitem__("name", "d" * 48), "is too long"),
    (lambda d: d.__setitem__("apiVersion", "ray.io/v1alpha1"), "'ray.io/v1' was expected"),
])
def test_validator_rejects_broken_rayjobs(break_it, expect):
    require_crds()
    doc = _job()
    assert schema_errors(doc) == []
    break_it(doc)
    errors = schema_errors(doc)
    assert any(expect in e for e in errors), errors


def _head_container(doc):
    return doc["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("cpu, ok", [
    ("2", True), (2, True), ("500m", True), ("1.5", True), ("2e3", True),  # int-or-string quantities
    (1.5, False), ("2 cores", False), (True, False), (None, False), ([2], False),
])
def test_int_or_string_quantities(cpu, ok):
    require_crds()
    doc = _cluster()
    _head_container(doc)["resources"]["limits"]["cpu"] = cpu
    assert (schema_errors(doc) == []) is ok, schema_errors(doc)


def test_list_map_keys_are_unique():
    require_crds()
    doc = _cluster()
    c = _head_container(doc)
    c["env"].append({"name": "RAY_AUTH_MODE", "value": "disabled"})
    assert any("same key {'name': 'RAY_AUTH_MODE'}" in e for e in schema_errors(doc))
    # containerPort + protocol (defaulted to TCP) key the ports list
    doc = _cluster()
    _head_container(doc)["ports"].append({"containerPort": 8265, "name": "dashboard2", "protocol": "TCP"})
    assert any("same key" in e and "8265" in e for e in schema_errors(doc)), schema_errors(doc)


def test_openapi_translation():
    int_or_string = to_jsonschema({"x-kubernetes-int-or-string": True})
    nullable = to_jsonschema({"type": "object", "nullable": True, "properties": {"a": {"type": "string"}}})
    for value, ok in ((3, True), ("3", True), (3.5, False), (None, False)):
        assert K8sValidator(int_or_string).is_valid(value) is ok, value
    v = K8sValidator(nullable)
    assert v.is_valid(None) and v.is_valid({"a": "x"})
    assert not v.is_valid({"b": "x"})  # unknown field
    assert not K8sValidator(to_jsonschema({"type": "string"})).is_valid(None)
    assert not K8sValidator(to_jsonschema({"type": "object", "x-kubernetes-preserve-unknown-fields": True,
                                           "properties": {"a": {"type": "string"}}})).is_valid({"a": 1})
    assert K8sValidator(to_jsonschema({"type": "object", "x-kubernetes-preserve-unknown-fields": True,
                                       "properties": {"a": {"type": "string"}}})).is_valid({"b": 1})
    i32 = K8sValidator(to_jsonschema({"type": "integer", "format": "int32"}), format_checker=FORMATS)
    assert i32.is_valid(2 ** 31 - 1) and not i32.is_valid(2 ** 31)
    s = K8sValidator(to_jsonschema({"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"}))
    assert s.is_valid(["a", "b"]) and not s.is_valid(["a", "a"])


def test_translated_schemas_are_valid_json_schema():
    require_crds()
    for kind in CRD_FILES:
        Draft202012Validator.check_schema(crd_schema(kind))


def test_operator_checks_can_fail():
    doc = _job()
    doc["spec"]["shutdownAfterJobFinishes"] = False
    doc["spec"]["backoffLimit"] = -1
    doc["spec"]["runtimeEnvYAML"] = "- a list"
    doc["spec"]["rayClusterSpec"]["workerGroupSpecs"][1]["groupName"] = "cpu"
    doc["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["replicas"] = 99
    got = " | ".join(operator_problems(doc))
    for expect in ("ttlSecondsAfterFinished needs shutdownAfterJobFinishes", "backoffLimit must be >= 0",
                   "runtimeEnvYAML is not a mapping", "must be unique", "replicas outside"):
        assert expect in got, got


def _with(docs, name, change):
    docs = copy.deepcopy(docs)
    change(next(d for n, d in docs if n == name))
    return docs


def test_version_check_can_fail():
    docs = all_docs()
    pinned = pinned_ray()
    bad = _with(docs, "raycluster.yaml", lambda d: d["spec"].__setitem__("rayVersion", "2.59.0"))
    assert any("rayVersion '2.59.0'" in p for p in version_problems(bad, pinned))
    bad = _with(docs, "rayjob-merge.yaml", lambda d: _gpu(d["spec"]["rayClusterSpec"])["template"]["spec"][
        "containers"][0].__setitem__("image", "rayproject/ray:2.61.0-py311-gpu"))
    assert any("2.61.0-py311-gpu differs" in p for p in version_problems(bad, pinned))
    bad = _with(docs, "raycluster.yaml", lambda d: _head_container(d).__setitem__("image", "rayproject/ray:latest"))
    assert any("is neither rayproject/ray:<version>" in p for p in version_problems(bad, pinned))
    bad = _with(docs, "raycluster.yaml", lambda d: _gpu(d["spec"])["template"]["spec"]["containers"][0].__setitem__(
        "image", "rayproject/ray:2.60.0-py311"))
    assert any("needs a CUDA (-gpu) image" in p for p in version_problems(bad, pinned))
    bad = _with(docs, "raycluster.yaml", lambda d: _head_container(d).__setitem__(
        "image", "ghcr.io/o/dflray:0.1.0-ray2.60.0-py39-cpu"))
    assert any("image Python 39 outside" in p for p in version_problems(bad, pinned))
    bad = _with(docs, "raycluster.yaml", lambda d: _head_container(d).__setitem__(
        "image", "ghcr.io/o/dflray:0.1.0-ray2.59.1-py311-cpu"))
    assert any("ray2.59.1-py311-cpu differs" in p for p in version_problems(bad, pinned))
    new_pin = version_problems(docs, SpecifierSet(">=2.61,<2.62"))  # a new pin flags every manifest
    assert len(new_pin) == 4 * len(cluster_specs(docs)), new_pin  # each spec: its rayVersion and 3 images


def test_topology_check_can_fail():
    docs = all_docs()

    def no_toleration(d):
        _gpu(d["spec"])["template"]["spec"]["tolerations"] = []

    def head_works(d):
        d["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = "4"

    def no_gpu(d):
        for c in _gpu(d["spec"])["template"]["spec"]["containers"]:
            for r in c["resources"].values():
                r.pop("nvidia.com/gpu")

    for change, expect in ((no_toleration, "no toleration"), (head_works, "num-cpus"),
                           (no_gpu, "no worker group with an nvidia.com/gpu limit"),
                           (lambda d: d["spec"].__setitem__("enableInTreeAutoscaling", False), "autoscaling")):
        got = topology_problems(_with(docs, "raycluster.yaml", change))
        assert any(expect in p for p in got), (expect, got)


@pytest.mark.parametrize("service", ["LoadBalancer", "NodePort"])
def test_exposure_check_can_fail(service):
    docs = all_docs()
    bad = _with(docs, "rayjob-extract.yaml", lambda d: d["spec"]["rayClusterSpec"]["headGroupSpec"].__setitem__(
        "serviceType", service))
    assert any("must be ClusterIP" in p for p in exposure_problems(bad))
    bad = _with(docs, "raycluster.yaml", lambda d: d["spec"]["headGroupSpec"].__setitem__(
        "headService", {"spec": {"type": service}}))
    assert any("exposed outside" in p for p in exposure_problems(bad))


def test_credential_check_can_fail():
    docs = all_docs()
    for env_name in ("AWS_SECRET_ACCESS_KEY", "RAY_AUTH_TOKEN", "DB_PASSWORD", "AWS_ACCESS_KEY_ID"):
        bad = _with(docs, "raycluster.yaml", lambda d: _head_container(d)["env"].append(
            {"name": env_name, "value": "x"}))
        assert any(f"env {env_name} has a literal value" in p for p in credential_problems(bad, {})), env_name
    bad = _with(docs, "rayjob-train.yaml", lambda d: d["spec"].__setitem__(
        "runtimeEnvYAML", "env_vars:\n  AWS_SECRET_ACCESS_KEY: x\n"))
    assert any("env_vars sets AWS_SECRET_ACCESS_KEY" in p for p in credential_problems(bad, {}))
    assert credential_problems(docs, {"x.yaml": "key: AKIAABCDEFGHIJKLMNOP\n"})
    assert credential_problems(docs, {"x.yaml": "kind: Secret\nstringData:\n  token: x\n"})


def test_storage_and_auth_checks_can_fail():
    docs = all_docs()

    def no_storage(d):
        _gpu(d["spec"]["rayClusterSpec"])["template"]["spec"]["containers"][0]["envFrom"] = []

    assert any("worker gpu ray-worker: no storage credentials" in p
               for p in storage_problems(_with(docs, "rayjob-train.yaml", no_storage)))

    def inline_token(d):
        _head_container(d)["env"][1] = {"name": "RAY_AUTH_TOKEN", "value": "abc"}

    def auth_off(d):
        d["spec"]["authOptions"]["mode"] = "disabled"
        _head_container(d)["env"][0]["value"] = "disabled"

    assert any("RAY_AUTH_TOKEN must come from Secret" in p
               for p in auth_problems(_with(docs, "raycluster.yaml", inline_token)))
    got = auth_problems(_with(docs, "raycluster.yaml", auth_off))
    assert any("authOptions must be" in p for p in got) and any("turns token authentication off" in p for p in got)


def test_rayjob_checks_can_fail():
    docs = all_docs()

    def no_cleanup(d):
        d["spec"]["shutdownAfterJobFinishes"] = False
        del d["spec"]["ttlSecondsAfterFinished"], d["spec"]["activeDeadlineSeconds"], d["spec"]["backoffLimit"]
        d["spec"]["runtimeEnvYAML"] = "working_dir: .\n"

    got = " | ".join(rayjob_problems(_with(docs, "rayjob-merge.yaml", no_cleanup)))
    for f in ("shutdownAfterJobFinishes", "ttlSecondsAfterFinished", "activeDeadlineSeconds", "backoffLimit",
              "working_dir must be a remote URI"):
        assert f in got, got


def test_same_spec_check_can_fail():
    docs = all_docs()
    bad = _with(docs, "rayjob-train.yaml", lambda d: d["spec"]["rayClusterSpec"]["workerGroupSpecs"][1].__setitem__(
        "maxReplicas", 8))
    assert same_spec_problems(bad) == ["rayjob-train.yaml: spec.rayClusterSpec differs from raycluster.yaml's "
                                       "spec at .workerGroupSpecs[1].maxReplicas"]
    bad = _with(docs, "raycluster.yaml", lambda d: d["spec"]["headGroupSpec"]["rayStartParams"].__setitem__(
        "num-cpus", 0))  # "0" vs 0: a type change is a difference
    assert len(same_spec_problems(bad)) == len(of_kind(docs, "RayJob"))


def test_entrypoint_check_can_fail():
    docs = all_docs()
    bad = _with(docs, "rayjob-train.yaml", lambda d: d["spec"].__setitem__(
        "entrypoint", "python jobs/train.py --src s3://b/s --dst s3://b/d --out s3://b/o steps=ten"))
    bad = _with(bad, "rayjob-merge.yaml", lambda d: d["spec"].__setitem__("entrypoint", "python jobs/train.py"))
    got = " | ".join(entrypoint_problems(bad))
    assert "rayjob-train.yaml: `dflray train` rejects" in got, got
    assert "rayjob-merge.yaml: entrypoint should run `python jobs/merge.py" in got, got
