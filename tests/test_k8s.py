"""k8s/: everything `kubectl kustomize k8s/` emits is schema-valid and means what we intend.

Schema checks, offline:
- core kinds (and every pod template inside the Ray objects, as a v1 PodTemplate) with
  kubernetes-validate --strict against Kubernetes 1.32;
- RayCluster/RayJob and PodMonitor/ServiceMonitor against their CRDs' openAPIV3Schema in
  ../shared, made strict: `additionalProperties: false` on every object schema that lists
  properties and allows nothing else, which is how an API server treats unknown fields of a
  structural schema (pruned, or rejected with fieldValidation=Strict). CEL rules
  (x-kubernetes-validations) are not evaluated.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from prometheus_client import Counter, Gauge, Histogram

from actors import metrics
from tests.helpers.dashboard_queries import (
    DATASOURCE_UID,
    dashboard_paths,
    metric_names,
    panel_queries,
    panels,
    prometheus_expr,
)

REPO = Path(__file__).resolve().parents[1]
K8S_DIR = REPO / "k8s"
SHARED = REPO.parent / "shared"
K8S_VERSION = "1.32.0"
CRD_FILES = {
    ("ray.io/v1", "RayCluster"): "kuberay/crds/ray.io_rayclusters.yaml",
    ("ray.io/v1", "RayJob"): "kuberay/crds/ray.io_rayjobs.yaml",
    ("monitoring.coreos.com/v1", "PodMonitor"):
        "prometheus-operator/crds/monitoring.coreos.com_podmonitors.yaml",
    ("monitoring.coreos.com/v1", "ServiceMonitor"):
        "prometheus-operator/crds/monitoring.coreos.com_servicemonitors.yaml",
}
TOKEN_SECRET = "oniray-ray-token"
GPU = "nvidia.com/gpu"


# --- building ---------------------------------------------------------------------------

def kustomize(path: Path) -> list[dict[str, Any]]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl not installed")
    out = subprocess.run(["kubectl", "kustomize", str(path)], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    return kustomize(K8S_DIR)


def only(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = only(objects, kind)
    return found


def ray_groups(cluster: dict[str, Any]) -> dict[str, dict[str, Any]]:
    spec = cluster["spec"]
    return {"head": spec["headGroupSpec"],
            **{g["groupName"]: g for g in spec["workerGroupSpecs"]}}


def pod_templates(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    templates = {f"raycluster/{name}": group["template"]
                 for name, group in ray_groups(one(objects, "RayCluster")).items()}
    templates["rayjob/submitter"] = one(objects, "RayJob")["spec"]["submitterPodTemplate"]
    return templates


# --- schema validation ------------------------------------------------------------------

def strict(schema: Any) -> Any:
    """Copy of an OpenAPI v3 schema that rejects fields it does not declare."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: strict(value) for key, value in schema.items()}
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


@functools.cache  # the CRD files are ~10k lines each; parse each once per session
def crd_validator(api_version: str, kind: str) -> jsonschema.Validator:
    if not SHARED.is_dir():
        pytest.skip(f"CRD schemas not found: {SHARED} (the shared/ folder beside the checkout)")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    crd = yaml.load((SHARED / CRD_FILES[(api_version, kind)]).read_text(), Loader=loader)
    version = api_version.split("/")[1]
    (entry,) = [v for v in crd["spec"]["versions"] if v["name"] == version and v["served"]]
    return jsonschema.Draft7Validator(strict(entry["schema"]["openAPIV3Schema"]))


def crd_errors(obj: dict[str, Any]) -> list[str]:
    validator = crd_validator(obj["apiVersion"], obj["kind"])
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(obj)]


def test_core_objects_pass_strict_kubernetes_validation(objects) -> None:
    core = [o for o in objects if (o["apiVersion"], o["kind"]) not in CRD_FILES]
    assert {o["kind"] for o in core} == {"Namespace", "Service", "ConfigMap"}
    for obj in core:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_ray_pod_templates_pass_strict_kubernetes_validation(objects) -> None:
    for name, template in pod_templates(objects).items():
        wrapped = {"apiVersion": "v1", "kind": "PodTemplate",
                   "metadata": {"name": name.replace("/", "-")}, "template": template}
        kubernetes_validate.validate(wrapped, K8S_VERSION, strict=True)


def test_custom_resources_match_their_crds(objects) -> None:
    custom = [o for o in objects if (o["apiVersion"], o["kind"]) in CRD_FILES]
    assert sorted(o["kind"] for o in custom) == [
        "PodMonitor", "PodMonitor", "RayCluster", "RayJob", "ServiceMonitor"]
    for obj in custom:
        assert crd_errors(obj) == [], obj["metadata"]["name"]


@pytest.mark.parametrize(("kind", "path", "field"), [
    ("RayCluster", ["spec", "headGroupSpec"], "rayStartParam"),
    ("RayCluster", ["spec", "workerGroupSpecs", 0, "template", "spec", "containers", 0],
     "securityContex"),
    ("RayJob", ["spec"], "entryPoint"),
    ("PodMonitor", ["spec", "podMetricsEndpoints", 0], "intervall"),
    ("ServiceMonitor", ["spec"], "endpoint"),
])
def test_strict_crd_validation_rejects_unknown_fields(objects, kind, path, field) -> None:
    obj = copy.deepcopy(only(objects, kind)[0])
    node = obj
    for step in path:
        node = node[step]
    node[field] = "typo"
    assert any("Additional properties" in e for e in crd_errors(obj))


# --- RayCluster semantics ---------------------------------------------------------------

def _memory_bytes(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return int(quantity[: -len(suffix)]) * factor
    return int(quantity)


def _custom_resources(params: dict[str, str]) -> dict[str, float]:
    # KubeRay pastes the value into `ray start --resources=...`; the outer quotes protect the
    # JSON from the shell.
    raw = params["resources"]
    assert raw.startswith('"') and raw.endswith('"'), raw
    return json.loads(raw[1:-1].replace('\\"', '"'))


def test_cluster_topology_and_autoscaling(objects) -> None:
    cluster = one(objects, "RayCluster")
    assert cluster["spec"]["enableInTreeAutoscaling"] is True
    groups = ray_groups(cluster)
    assert groups["head"]["rayStartParams"]["num-cpus"] == "0"
    expected = {"rollout": "rollout_node", "learner": "learner_node", "judge": "judge_node"}
    assert set(groups) == {"head", *expected}
    for name, resource in expected.items():
        group = groups[name]
        assert _custom_resources(group["rayStartParams"]) == {resource: 1}
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], name
        assert group["minReplicas"] <= group["maxReplicas"]


def test_every_container_is_non_root_with_equal_requests_and_limits(objects) -> None:
    for name, template in pod_templates(objects).items():
        pod_security = template["spec"].get("securityContext", {})
        for container in template["spec"]["containers"]:
            security = {**pod_security, **container.get("securityContext", {})}
            assert security.get("runAsNonRoot") is True, name
            assert security.get("runAsUser") == 1000, name
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, name
            assert container["securityContext"]["capabilities"]["drop"] == ["ALL"], name
            resources = container["resources"]
            # Guaranteed QoS: a rollout or learner pod must not be the first one evicted.
            assert resources["requests"] == resources["limits"], name
    autoscaler = one(objects, "RayCluster")["spec"]["autoscalerOptions"]
    assert autoscaler["securityContext"]["runAsNonRoot"] is True
    assert autoscaler["securityContext"]["capabilities"]["drop"] == ["ALL"]


def test_gpu_only_on_learner_and_judge(objects) -> None:
    for name, group in ray_groups(one(objects, "RayCluster")).items():
        (container,) = group["template"]["spec"]["containers"]
        limits, requests = container["resources"]["limits"], container["resources"]["requests"]
        if name in ("learner", "judge"):
            assert limits[GPU] == requests[GPU] == "1", name
            tolerations = group["template"]["spec"]["tolerations"]
            assert any(t["key"] == GPU for t in tolerations), name
        else:
            assert GPU not in limits and GPU not in requests, name


def test_shm_is_memory_backed_and_sized_for_the_object_store(objects) -> None:
    for name, group in ray_groups(one(objects, "RayCluster")).items():
        spec = group["template"]["spec"]
        (container,) = spec["containers"]
        (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/dev/shm"]
        (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
        assert volume["emptyDir"]["medium"] == "Memory", name
        shm = _memory_bytes(volume["emptyDir"]["sizeLimit"])
        store = int(group["rayStartParams"]["object-store-memory"])
        memory = _memory_bytes(container["resources"]["limits"]["memory"])
        # The store must fit in shm, and shm pages count against the memory limit.
        assert store < shm < memory, name


def test_token_auth_is_on_everywhere(objects) -> None:
    cluster = one(objects, "RayCluster")
    assert cluster["spec"]["authOptions"] == {"mode": "token", "secretName": TOKEN_SECRET}
    for name, template in pod_templates(objects).items():
        for container in template["spec"]["containers"]:
            env = {e["name"]: e for e in container["env"]}
            assert env["RAY_AUTH_MODE"]["value"] == "token", name
            ref = env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]
            assert ref == {"name": TOKEN_SECRET, "key": "auth_token"}, name
    # The token itself is never part of the manifests.
    assert not only(objects, "Secret")


def test_rayjob_targets_the_cluster(objects) -> None:
    job, cluster = one(objects, "RayJob"), one(objects, "RayCluster")
    assert job["spec"]["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
    assert "rayClusterSpec" not in job["spec"]
    assert "oniray train configs/cluster/gpu_cluster.yaml" in job["spec"]["entrypoint"]


def test_sweep_rayjob_is_valid_and_runs_the_bench_as_tune_trials(objects) -> None:
    # Applied by hand (kubectl apply -f), not part of the kustomization: an apply -k must not
    # start a sweep.
    kustomization = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    assert "rayjob-sweep.yaml" not in kustomization["resources"]
    (sweep,) = [d for d in yaml.safe_load_all((K8S_DIR / "rayjob-sweep.yaml").read_text()) if d]
    assert crd_errors(sweep) == []
    cluster, train = one(objects, "RayCluster"), one(objects, "RayJob")
    assert sweep["spec"]["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
    entrypoint = sweep["spec"]["entrypoint"].split()
    assert entrypoint[:4] == ["cd", "/app", "&&", "python"] and "bench/learning.py" in entrypoint
    assert "--tune" in entrypoint and entrypoint[entrypoint.index("--ray-address") + 1] == "auto"
    for flag in ("--out", "--storage"):  # results and Tune state outlive the job's temp dir
        value = entrypoint[entrypoint.index(flag) + 1]
        assert value.startswith("/") or "://" in value, flag
    # The submitter is the training job's (the token, non-root, equal requests and limits).
    assert sweep["spec"]["submitterPodTemplate"] == train["spec"]["submitterPodTemplate"]
    kubernetes_validate.validate(  # raises on an invalid pod template
        {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "sweep-submitter"},
         "template": sweep["spec"]["submitterPodTemplate"]}, K8S_VERSION, strict=True)


def test_kustomize_images_retags_every_container(objects, tmp_path) -> None:
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "resources": [os.path.relpath(K8S_DIR, tmp_path)],
        "images": [{"name": "oniray", "newName": "registry.example/oniray", "newTag": "v1"}],
    }))
    retagged = kustomize(tmp_path)
    images = [c["image"] for t in pod_templates(retagged).values()
              for c in t["spec"]["containers"]]
    assert len(images) == len(pod_templates(objects))
    assert set(images) == {"registry.example/oniray:v1"}


# --- scraping ---------------------------------------------------------------------------

def _head_ports(objects) -> dict[str, int]:
    (container,) = one(objects, "RayCluster")["spec"]["headGroupSpec"]["template"]["spec"][
        "containers"]
    return {p["name"]: p["containerPort"] for p in container["ports"]}


def test_each_metrics_port_is_scraped_exactly_once(objects) -> None:
    assert _head_ports(objects)["oniray-metrics"] == 9400
    scraped: list[tuple[str, str]] = []  # (node type, port name)
    for monitor in only(objects, "PodMonitor"):
        node_type = monitor["spec"]["selector"]["matchLabels"]["ray.io/node-type"]
        assert monitor["spec"]["selector"]["matchLabels"]["ray.io/cluster"] == "oniray"
        scraped += [(node_type, e["port"]) for e in monitor["spec"]["podMetricsEndpoints"]]
    service = one(objects, "Service")
    monitor = one(objects, "ServiceMonitor")
    labels = service["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        target = ports[endpoint["port"]]["targetPort"]
        scraped.append((service["spec"]["selector"]["ray.io/node-type"], target))
    assert service["spec"]["selector"] == {"ray.io/cluster": "oniray", "ray.io/node-type": "head"}
    assert len(scraped) == len(set(scraped)), scraped
    assert {("head", "metrics"), ("worker", "metrics"), ("head", "oniray-metrics")} <= set(scraped)
    head_ports = _head_ports(objects)
    assert all(port in head_ports for node, port in scraped if node == "head")


def test_dashboards_configmap(objects) -> None:
    config_map = one(objects, "ConfigMap")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["data"] == {p.name: p.read_text() for p in dashboard_paths()}


# --- dashboards -------------------------------------------------------------------------

def declared_series() -> set[str]:
    names: set[str] = set()
    for value in vars(metrics).values():
        if isinstance(value, Counter):
            names.add(f"{value._name}_total")
        elif isinstance(value, Gauge):
            names.add(value._name)
        elif isinstance(value, Histogram):
            names |= {f"{value._name}_{s}" for s in ("bucket", "sum", "count")}
    return names


def test_metric_name_parser() -> None:
    expr = ('histogram_quantile(0.9, sum by (le, role) (rate(oniray_a_bucket{role="x",'
            'le!="1"}[$__rate_interval]))) / clamp_min(sum(oniray_b) or on(job) up, 1e-9)')
    assert metric_names(expr) == {"oniray_a_bucket", "oniray_b", "up"}
    assert prometheus_expr("rate(x[$__rate_interval]) + y[${__range}]") == "rate(x[1m]) + y[5m]"
    with pytest.raises(KeyError):
        prometheus_expr('x{actor_id="$actor"}')


@pytest.mark.parametrize("path", dashboard_paths(), ids=lambda p: p.name)
def test_dashboard_panels_use_the_datasource_variable_and_declared_metrics(path) -> None:
    dashboard = json.loads(path.read_text())
    (variable,) = [v for v in dashboard["templating"]["list"] if v["name"] == "datasource"]
    assert variable["type"] == "datasource" and variable["query"] == "prometheus"
    assert len({p["id"] for p in panels(path)}) == len(panels(path))
    for panel in panels(path):
        assert panel["datasource"]["uid"] == DATASOURCE_UID, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == DATASOURCE_UID, panel["title"]
    queries = panel_queries(path)
    assert len(queries) >= 8
    declared = declared_series()
    for title, expr in queries:
        assert "$" not in prometheus_expr(expr), title
        names = metric_names(expr)
        assert names, (title, expr)
        assert names <= declared, (title, names - declared)


def test_dashboards_cover_every_declared_metric() -> None:
    used = {name for path in dashboard_paths() for _, expr in panel_queries(path)
            for name in metric_names(expr)}
    families = {n.removesuffix("_bucket").removesuffix("_sum").removesuffix("_count")
                for n in used}
    missing = [v._name for v in vars(metrics).values()
               if isinstance(v, (Counter, Gauge, Histogram))
               and v._name not in families and f"{v._name}_total" not in families]
    assert missing == []
