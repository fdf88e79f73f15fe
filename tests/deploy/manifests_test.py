#!/usr/bin/python3
"""Checks the Kubernetes manifests in deploy/k8s without a cluster.

Every YAML file must parse; `kubectl kustomize` must render the base, both overlays and
the overlays with every component; and the rendered objects must hang together: selectors
match the pods they are meant for, every port a flag names is the container port of that
name, every --flag exists in the binary's source (so renaming a flag breaks this test),
probes hit the right ports, the learner's rank variables agree with the StatefulSet, and
so on (check_all lists them). The negative tests break a manifest in memory and expect
the checks to say so, so they cannot pass by checking nothing.

Without kubectl the rendering tests are skipped and the checks run on the base files.
Run: /usr/bin/python3 tests/deploy/manifests_test.py
"""
import copy
import json
import os
import posixpath
import re
import shutil
import subprocess
import tempfile
import unittest
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
KUBECTL = shutil.which("kubectl")
NO_KUBECTL = "kubectl not found: rendering with kustomize is not checked"

# The binary each container command may name, and the source that defines its flags.
BINARY_SOURCES = {
    "grpo_coordinator": "coordinator/main.cc",
    "grpo_reward_server": "reward_server/main.cc",
    "grpo_learner": "learner/main.cc",
    "grpo_rollout_worker": "rollout_worker/main.cc",
    "grpoctl": "grpoctl/main.cc",
}
SECURITY_FLAGS_SOURCE = "rpc/security_flags.cc"
# --log_format: the services install structured logs (rpc/structured_log.h); grpoctl not.
LOG_FLAGS_SOURCE = "rpc/structured_log.cc"
BIN_DIR = "/usr/local/bin/"
WORKLOAD_KINDS = ("Deployment", "StatefulSet")
# Flags whose value is a file or directory the process reads or writes: it must be on a
# mounted volume (a Secret, a ConfigMap, a PersistentVolumeClaim).
PATH_FLAGS = ("state_dir", "run_root", "tls_cert", "tls_key", "tls_ca", "auth_token_file")
# Flags whose value is HOST:PORT of another service.
ADDRESS_FLAGS = ("coordinator", "reward_server")
RANK_FIELD = "metadata.labels['apps.kubernetes.io/pod-index']"
COMPONENT = "app.kubernetes.io/component"


# ---------------------------------------------------------------------------------------
# Loading and rendering


def yaml_files():
    return sorted(p for p in K8S.rglob("*") if p.suffix in (".yaml", ".yml"))


def load_file(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def kustomize(directory):
    """`kubectl kustomize DIRECTORY`, parsed."""
    out = subprocess.run([KUBECTL, "kustomize", str(directory)], capture_output=True,
                         text=True, timeout=120)
    if out.returncode != 0:
        raise AssertionError(f"kubectl kustomize {directory} failed:\n{out.stderr}")
    return [d for d in yaml.safe_load_all(out.stdout) if d is not None]


def kustomize_combined(resources, components=(), patches=()):
    """Renders a throwaway kustomization that uses deploy/k8s parts: what a user's own
    overlay would write. kustomize wants relative paths, so they are made relative."""
    with tempfile.TemporaryDirectory() as tmp:
        rel = lambda part: os.path.relpath(K8S / part, tmp)
        kustomization = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": [rel(r) for r in resources],
        }
        if components:
            kustomization["components"] = [rel(c) for c in components]
        if patches:
            kustomization["patches"] = list(patches)
        with open(os.path.join(tmp, "kustomization.yaml"), "w") as f:
            yaml.safe_dump(kustomization, f)
        return kustomize(tmp)


def base_docs():
    """The base's objects as written (what kustomize starts from), for when there is no
    kubectl and for the negative tests."""
    kustomization = load_file(K8S / "base" / "kustomization.yaml")[0]
    docs = []
    for resource in kustomization["resources"]:
        docs.extend(load_file(K8S / "base" / resource))
    return docs


def defined_flags(binary):
    """The ABSL_FLAG names a binary defines: its main.cc plus the shared security flags
    (and, for the services, the log format flag)."""
    names = set()
    sources = [BINARY_SOURCES[binary], SECURITY_FLAGS_SOURCE]
    if binary != "grpoctl":
        sources.append(LOG_FLAGS_SOURCE)
    for source in sources:
        text = (REPO / source).read_text()
        names.update(re.findall(r"ABSL_FLAG\([^,]+,\s*(\w+)", text))
    return names


# ---------------------------------------------------------------------------------------
# Accessors


def of_kind(docs, *kinds):
    return [d for d in docs if d.get("kind") in kinds]


def find(docs, kind, name):
    for d in docs:
        if d.get("kind") == kind and d["metadata"]["name"] == name:
            return d
    return None


def ident(doc):
    return f"{doc['kind']}/{doc['metadata']['name']}"


def pod_spec(doc):
    return doc["spec"]["template"]["spec"]


def template_labels(doc):
    return doc["spec"]["template"].get("metadata", {}).get("labels", {}) or {}


def containers(doc):
    spec = pod_spec(doc)
    return spec.get("initContainers", []) + spec.get("containers", [])


def named_ports(container):
    return {p["name"]: p["containerPort"] for p in container.get("ports", []) if "name" in p}


def env_of(container):
    return {e["name"]: e for e in container.get("env", [])}


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def parse_args(container):
    """(flag name, value or None) for each --flag; positional arguments as (None, arg)."""
    parsed = []
    for arg in container.get("args", []):
        m = re.fullmatch(r"--(\w+)(?:=(.*))?", arg, re.S)
        parsed.append((m.group(1), m.group(2)) if m else (None, arg))
    return parsed


def flag(container, name):
    for n, v in parse_args(container):
        if n == name:
            return v
    return None


def binary_of(container):
    command = container.get("command") or []
    return posixpath.basename(command[0]) if command else None


def port_of(address):
    """The port of HOST:PORT or of a bare PORT."""
    return int(address.rsplit(":", 1)[-1])


def role(doc):
    return template_labels(doc).get(COMPONENT) or doc["metadata"].get("labels", {}).get(COMPONENT)


def workload_containers(docs, component):
    return [(w, c) for w in of_kind(docs, *WORKLOAD_KINDS) if role(w) == component
            for c in pod_spec(w)["containers"]]


# ---------------------------------------------------------------------------------------
# Invariants: each returns a list of problems, empty when all is well.


def check_selectors(docs):
    problems = []
    workloads = of_kind(docs, *WORKLOAD_KINDS)
    for w in workloads:
        match = w["spec"].get("selector", {}).get("matchLabels", {})
        if not match:
            problems.append(f"{ident(w)}: no selector.matchLabels")
        elif not selects(match, template_labels(w)):
            problems.append(f"{ident(w)}: selector {match} does not select its own pods "
                            f"{template_labels(w)}")
        others = [o for o in workloads if o is not w and selects(match, template_labels(o))]
        if others:
            problems.append(f"{ident(w)}: selector also selects {[ident(o) for o in others]}")

    def selected(selector):
        return [w for w in workloads if selects(selector, template_labels(w))]

    for s in of_kind(docs, "Service"):
        hits = selected(s["spec"].get("selector", {}))
        if len(hits) != 1:
            problems.append(f"{ident(s)}: selector {s['spec'].get('selector')} selects "
                            f"{len(hits)} workloads, not 1")
    for p in of_kind(docs, "PodDisruptionBudget"):
        hits = selected(p["spec"].get("selector", {}).get("matchLabels", {}))
        if len(hits) != 1:
            problems.append(f"{ident(p)}: selects {len(hits)} workloads, not 1")
    for h in of_kind(docs, "HorizontalPodAutoscaler"):
        ref = h["spec"]["scaleTargetRef"]
        target = find(docs, ref["kind"], ref["name"])
        if target is None:
            problems.append(f"{ident(h)}: scaleTargetRef {ref['kind']}/{ref['name']} is missing")
        elif "replicas" in target["spec"]:
            problems.append(f"{ident(h)}: {ident(target)} sets replicas, so every "
                            "kubectl apply resets what the autoscaler chose")
    for m in of_kind(docs, "ServiceMonitor"):
        match = m["spec"]["selector"].get("matchLabels", {})
        services = [s for s in of_kind(docs, "Service")
                    if selects(match, s["metadata"].get("labels", {}))]
        if not services:
            problems.append(f"{ident(m)}: selects no Service")
        for endpoint in m["spec"]["endpoints"]:
            for s in services:
                if endpoint["port"] not in {p.get("name") for p in s["spec"]["ports"]}:
                    problems.append(f"{ident(m)}: {ident(s)} has no port named {endpoint['port']}")
    return problems


def check_ports(docs):
    problems = []
    workloads = of_kind(docs, *WORKLOAD_KINDS)
    for w in workloads:
        for c in containers(w):
            names = [p.get("name") for p in c.get("ports", [])]
            if None in names:
                problems.append(f"{ident(w)}/{c['name']}: a container port has no name")
            if len(set(names)) != len(names):
                problems.append(f"{ident(w)}/{c['name']}: port names repeat: {names}")
            ports = named_ports(c)
            for flag_name, port_name in (("listen", "grpc"), ("metrics_listen", "metrics"),
                                         ("advertise", "grpc")):
                value = flag(c, flag_name)
                if value is None:
                    continue
                if port_name not in ports:
                    problems.append(f"{ident(w)}/{c['name']}: --{flag_name} but no container "
                                    f"port named {port_name}")
                elif port_of(value) != ports[port_name]:
                    problems.append(f"{ident(w)}/{c['name']}: --{flag_name}={value} but port "
                                    f"{port_name} is {ports[port_name]}")
    for s in of_kind(docs, "Service"):
        hits = [w for w in workloads if selects(s["spec"].get("selector", {}), template_labels(w))]
        available = {name for w in hits for c in containers(w) for name in named_ports(c)}
        for p in s["spec"]["ports"]:
            if "name" not in p:
                problems.append(f"{ident(s)}: port {p['port']} has no name")
            target = p.get("targetPort")
            if not isinstance(target, str):
                problems.append(f"{ident(s)}: port {p.get('name')} targetPort {target!r} is not "
                                "a container port name")
            elif target not in available:
                problems.append(f"{ident(s)}: targetPort {target} is no container port of "
                                f"{[ident(w) for w in hits]}")
    return problems


def check_flags(docs):
    problems = []
    services = {s["metadata"]["name"]: {p["port"] for p in s["spec"]["ports"]}
                for s in of_kind(docs, "Service")}
    for w in of_kind(docs, "Deployment", "StatefulSet", "Job"):
        for c in containers(w):
            where = f"{ident(w)}/{c['name']}"
            command = c.get("command") or []
            binary = binary_of(c)
            if (len(command) != 1 or binary not in BINARY_SOURCES
                    or not command[0].startswith(BIN_DIR)):
                problems.append(f"{where}: command {command} is not one of "
                                f"{BIN_DIR}{{{','.join(sorted(BINARY_SOURCES))}}}")
                continue
            known = defined_flags(binary)
            env = env_of(c)
            for name, value in parse_args(c):
                if name is None:
                    if binary != "grpoctl":
                        problems.append(f"{where}: {value!r} is not a --flag")
                    continue
                if name not in known:
                    problems.append(f"{where}: --{name} is not a flag of {binary} "
                                    f"({BINARY_SOURCES[binary]}, {SECURITY_FLAGS_SOURCE})")
                for var in re.findall(r"\$\((\w+)\)", value or ""):
                    if var not in env:
                        problems.append(f"{where}: --{name} uses $({var}), not in its env")
                if name in ADDRESS_FLAGS and value is not None:
                    host, _, port = value.rpartition(":")
                    if host not in services or int(port) not in services[host]:
                        problems.append(f"{where}: --{name}={value} is no Service port")
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("resourceFieldRef")
                if ref and ref.get("containerName", c["name"]) != c["name"]:
                    problems.append(f"{where}: env {e['name']} reads the resources of "
                                    f"container {ref['containerName']}")
    return problems


def check_probes(docs):
    problems = []
    for w in of_kind(docs, *WORKLOAD_KINDS):
        for c in pod_spec(w)["containers"]:
            where = f"{ident(w)}/{c['name']}"
            ports = named_ports(c)
            for kind in ("readinessProbe", "livenessProbe"):
                if kind not in c:
                    problems.append(f"{where}: no {kind}")
            for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
                probe = c.get(kind)
                if probe is None:
                    continue
                if "grpc" in probe:
                    # Kubernetes takes no port name here: the number must be the grpc port's.
                    if probe["grpc"]["port"] != ports.get("grpc"):
                        problems.append(f"{where}: {kind} gRPC port {probe['grpc']['port']} is "
                                        f"not the grpc container port {ports.get('grpc')}")
                elif "httpGet" in probe:
                    port = probe["httpGet"]["port"]
                    if port not in ("metrics", ports.get("metrics")) or "metrics" not in ports:
                        problems.append(f"{where}: {kind} httpGet port {port} is not the "
                                        "metrics port")
                    if probe["httpGet"].get("path") != "/metrics":
                        problems.append(f"{where}: {kind} httpGet path is not /metrics")
                elif "tcpSocket" in probe:
                    port = probe["tcpSocket"]["port"]
                    if port not in ports and port not in ports.values():
                        problems.append(f"{where}: {kind} tcpSocket port {port} is no "
                                        "container port")
                else:
                    problems.append(f"{where}: {kind} is neither grpc, httpGet nor tcpSocket "
                                    "(the image has no probe tools)")
    return problems


def check_prometheus(docs):
    problems = []
    for w in of_kind(docs, *WORKLOAD_KINDS):
        notes = w["spec"]["template"].get("metadata", {}).get("annotations", {}) or {}
        metrics = [named_ports(c)["metrics"] for c in pod_spec(w)["containers"]
                   if "metrics" in named_ports(c)]
        if notes.get("prometheus.io/scrape") != "true":
            problems.append(f"{ident(w)}: pods lack prometheus.io/scrape: \"true\"")
        if notes.get("prometheus.io/path") != "/metrics":
            problems.append(f"{ident(w)}: pods lack prometheus.io/path: /metrics")
        if len(metrics) != 1 or notes.get("prometheus.io/port") != str(metrics[0]):
            problems.append(f"{ident(w)}: prometheus.io/port {notes.get('prometheus.io/port')} "
                            f"is not the metrics port {metrics}")
    return problems


def check_env(docs):
    problems = []
    for w in of_kind(docs, "Deployment", "StatefulSet", "Job"):
        for c in containers(w):
            if env_of(c).get("OMP_WAIT_POLICY", {}).get("value") != "PASSIVE":
                problems.append(f"{ident(w)}/{c['name']}: env lacks OMP_WAIT_POLICY=PASSIVE")
    return problems


def check_mounts(docs):
    problems = []
    for w in of_kind(docs, "Deployment", "StatefulSet", "Job"):
        volumes = {v["name"] for v in pod_spec(w).get("volumes", [])}
        volumes |= {t["metadata"]["name"] for t in w["spec"].get("volumeClaimTemplates", [])}
        for c in containers(w):
            where = f"{ident(w)}/{c['name']}"
            mounts = c.get("volumeMounts", [])
            paths = [m["mountPath"].rstrip("/") for m in mounts]
            for m in mounts:
                if m["name"] not in volumes:
                    problems.append(f"{where}: mounts {m['name']}, which is no volume")
            for a in paths:
                for b in paths:
                    if a != b and b.startswith(a + "/"):
                        problems.append(f"{where}: {b} is mounted inside {a}")
            for name in PATH_FLAGS:
                value = flag(c, name)
                if value is not None and not any(value == p or value.startswith(p + "/")
                                                 for p in paths):
                    problems.append(f"{where}: --{name}={value} is on no mounted volume")
    return problems


def check_learner(docs):
    problems = []
    learners = [w for w in of_kind(docs, "StatefulSet") if role(w) == "learner"]
    if len(learners) != 1:
        return [f"{len(learners)} learner StatefulSets, not 1"]
    sts = learners[0]
    name = sts["metadata"]["name"]
    replicas = sts["spec"].get("replicas", 1)
    service_name = sts["spec"].get("serviceName")
    service = find(docs, "Service", service_name)
    if service is None:
        problems.append(f"{ident(sts)}: serviceName {service_name} is no Service")
    else:
        if service["spec"].get("clusterIP") != "None":
            problems.append(f"{ident(service)}: not headless (clusterIP: None)")
        if not service["spec"].get("publishNotReadyAddresses"):
            problems.append(f"{ident(service)}: without publishNotReadyAddresses rank 0's "
                            "name does not resolve before it is ready")
    if sts["spec"].get("podManagementPolicy") != "Parallel":
        problems.append(f"{ident(sts)}: podManagementPolicy must be Parallel (rank 0 is ready "
                        "only after every rank joined)")
    (c,) = pod_spec(sts)["containers"]
    env = env_of(c)
    world = env.get("WORLD_SIZE", {}).get("value")
    if world != str(replicas):
        problems.append(f"{ident(sts)}: WORLD_SIZE {world} but replicas {replicas}")
    rank = env.get("RANK", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
    if rank != RANK_FIELD:
        problems.append(f"{ident(sts)}: RANK comes from {rank}, not {RANK_FIELD}")
    master = env.get("MASTER_ADDR", {}).get("value") or ""
    if not master.startswith(f"{name}-0.{service_name}"):
        problems.append(f"{ident(sts)}: MASTER_ADDR {master!r} is not {name}-0.{service_name}")
    master_port = env.get("MASTER_PORT", {}).get("value")
    if master_port != str(named_ports(c).get("c10d")):
        problems.append(f"{ident(sts)}: MASTER_PORT {master_port} is not the c10d container port")
    pod_name = env.get("POD_NAME", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
    advertise = flag(c, "advertise") or ""
    if pod_name != "metadata.name" or not advertise.startswith(f"$(POD_NAME).{service_name}:"):
        problems.append(f"{ident(sts)}: --advertise={advertise} is not rank 0's stable name "
                        f"$(POD_NAME).{service_name} with POD_NAME = metadata.name")
    if replicas > 1:
        # Followers load rank 0's checkpoints from the run directory on resume.
        run_root = flag(c, "run_root")
        mount = next((m for m in c.get("volumeMounts", []) if run_root and
                      (run_root + "/").startswith(m["mountPath"].rstrip("/") + "/")), None)
        volume = next((v for v in pod_spec(sts).get("volumes", [])
                       if mount and v["name"] == mount["name"]), None)
        claim = volume and volume.get("persistentVolumeClaim", {}).get("claimName")
        pvc = claim and find(docs, "PersistentVolumeClaim", claim)
        if not pvc or "ReadWriteMany" not in pvc["spec"].get("accessModes", []):
            problems.append(f"{ident(sts)}: {replicas} ranks but --run_root={run_root} is not "
                            "one ReadWriteMany volume (components/shared-runs)")
    return problems


def check_job_spec(docs):
    problems = []
    for cm in of_kind(docs, "ConfigMap"):
        if cm["metadata"]["name"] != "grpo-job-spec":
            continue
        for key, text in cm.get("data", {}).items():
            try:
                json.loads(text)
            except ValueError as e:
                problems.append(f"{ident(cm)}: {key} is not JSON: {e}")
    for job in of_kind(docs, "Job"):
        for c in containers(job):
            if binary_of(c) != "grpoctl":
                continue
            positional = [v for n, v in parse_args(c) if n is None]
            if len(positional) != 2 or positional[0] != "submit":
                problems.append(f"{ident(job)}: grpoctl args are not `submit SPEC_FILE`")
                continue
            spec_path = positional[1]
            found = False
            for m in c.get("volumeMounts", []):
                volume = next((v for v in pod_spec(job).get("volumes", [])
                               if v["name"] == m["name"]), {})
                cm_name = volume.get("configMap", {}).get("name")
                cm = cm_name and find(docs, "ConfigMap", cm_name)
                if not cm:
                    continue
                items = volume["configMap"].get("items") or [
                    {"key": k, "path": k} for k in cm.get("data", {})]
                for item in items:
                    if posixpath.join(m["mountPath"], item["path"]) == spec_path:
                        found = item["key"] in cm.get("data", {})
            if not found:
                problems.append(f"{ident(job)}: {spec_path} is no key of a mounted ConfigMap")
    return problems


def check_disruption(docs):
    """No voluntary eviction of the coordinator (one replica) or of any learner rank (a lost
    rank stops every rank's step)."""
    problems = []
    for w in of_kind(docs, "StatefulSet"):
        if role(w) not in ("coordinator", "learner"):
            continue
        replicas = w["spec"].get("replicas", 1)
        pdbs = [p for p in of_kind(docs, "PodDisruptionBudget")
                if selects(p["spec"]["selector"].get("matchLabels", {}), template_labels(w))]
        ok = [p for p in pdbs if p["spec"].get("maxUnavailable") in (0, "0%") or
              p["spec"].get("minAvailable") in ("100%", replicas)]
        if not ok:
            problems.append(f"{ident(w)}: no PodDisruptionBudget keeping all {replicas} pods")
    return problems


def image_user():
    """The numeric USER of deploy/Dockerfile's final stage, or None."""
    dockerfile = REPO / "deploy" / "Dockerfile"
    if not dockerfile.exists():
        return None
    users = re.findall(r"^USER\s+(\d+)\s*$", dockerfile.read_text(), re.M)
    return int(users[-1]) if users else None


def check_user(docs):
    """Pods run as the image's user (runAsNonRoot needs a number), and fsGroup lets that
    user write the volumes."""
    problems = []
    user = image_user()
    for w in of_kind(docs, "Deployment", "StatefulSet", "Job"):
        context = pod_spec(w).get("securityContext", {})
        if not context.get("runAsNonRoot"):
            problems.append(f"{ident(w)}: runAsNonRoot is not set")
        if user is not None and context.get("runAsUser") != user:
            problems.append(f"{ident(w)}: runAsUser {context.get('runAsUser')} is not the "
                            f"image's USER {user} (deploy/Dockerfile)")
        if "fsGroup" not in context:
            problems.append(f"{ident(w)}: no fsGroup, so its volumes may not be writable")
    return problems


def check_all(docs):
    return (check_selectors(docs) + check_ports(docs) + check_flags(docs) +
            check_probes(docs) + check_prometheus(docs) + check_env(docs) +
            check_mounts(docs) + check_learner(docs) + check_job_spec(docs) +
            check_disruption(docs) + check_user(docs))


def readme_learner_patch():
    """The patch deploy/README.md gives for two learner ranks, taken from the README itself
    so that what it tells users to write is what gets rendered and checked here."""
    readme = (REPO / "deploy" / "README.md").read_text()
    for block in re.findall(r"```yaml\n(.*?)```", readme, re.S):
        fragment = yaml.safe_load(block)
        for patch in fragment.get("patches", []):
            if "WORLD_SIZE" in patch.get("patch", ""):
                return patch["patch"]
    raise AssertionError("deploy/README.md has no learner scaling patch")


def gpu_limits(docs, component):
    return [c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu")
            for _, c in workload_containers(docs, component)]


# ---------------------------------------------------------------------------------------
# Tests


class FilesTest(unittest.TestCase):
    def test_every_yaml_file_parses_and_names_its_objects(self):
        files = yaml_files()
        self.assertGreater(len(files), 5)
        for path in files:
            with self.subTest(file=str(path.relative_to(REPO))):
                docs = load_file(path)
                self.assertTrue(docs)
                for d in docs:
                    self.assertIn("apiVersion", d)
                    self.assertIn("kind", d)
                    if d["kind"] not in ("Kustomization", "Component"):
                        self.assertTrue(d.get("metadata", {}).get("name"))

    def test_every_file_is_used_by_a_kustomization(self):
        used = set()
        for k in K8S.rglob("kustomization.yaml"):
            spec = load_file(k)[0]
            entries = spec.get("resources", []) + [p.get("path") for p in spec.get("patches", [])]
            for entry in entries:
                if entry:
                    used.add((k.parent / entry).resolve())
        for path in yaml_files():
            if path.name != "kustomization.yaml":
                self.assertIn(path.resolve(), used, f"{path} is in no kustomization")

    def test_flags_are_read_from_the_sources(self):
        # The flag check is only as good as this parse: make sure it finds real flags.
        self.assertTrue({"rank", "world_size", "advertise", "run_root", "tls_cert",
                         "auth_token_file"} <= defined_flags("grpo_learner"))
        self.assertIn("state_dir", defined_flags("grpo_coordinator"))
        self.assertNotIn("state_dir", defined_flags("grpo_rollout_worker"))

    def test_base_files_hold_the_invariants(self):
        self.assertEqual([], check_all(base_docs()))

    def test_job_spec_is_the_example(self):
        cm = find(base_docs(), "ConfigMap", "grpo-job-spec")
        example = json.loads((REPO / "examples" / "arithmetic_outcome.json").read_text())
        self.assertEqual(example, json.loads(cm["data"]["job.json"]))


@unittest.skipIf(KUBECTL is None, NO_KUBECTL)
class RenderTest(unittest.TestCase):
    def assertHolds(self, docs):
        self.assertEqual([], check_all(docs))

    def assertRoles(self, docs):
        for component in ("coordinator", "reward-server", "rollout-worker", "learner"):
            self.assertEqual(1, len(workload_containers(docs, component)), component)
        for d in docs:
            labels = d["metadata"].get("labels", {})
            self.assertEqual("grpo", labels.get("app.kubernetes.io/part-of"), ident(d))
            self.assertEqual("grpo", labels.get("app.kubernetes.io/name"), ident(d))

    def assertProbeKinds(self, docs, servers_probe):
        for component, handler in (("coordinator", servers_probe),
                                   ("reward-server", servers_probe),
                                   ("rollout-worker", "httpGet"), ("learner", "httpGet")):
            for _, c in workload_containers(docs, component):
                for kind in ("readinessProbe", "livenessProbe"):
                    self.assertIn(handler, c[kind], f"{component} {kind}")

    def test_base(self):
        docs = kustomize(K8S / "base")
        self.assertHolds(docs)
        self.assertRoles(docs)
        images = {c["image"] for w in of_kind(docs, "Deployment", "StatefulSet", "Job")
                  for c in containers(w)}
        self.assertEqual({"grpo:latest"}, images)

    def test_cpu_overlay(self):
        docs = kustomize(K8S / "overlays" / "cpu")
        self.assertHolds(docs)
        self.assertRoles(docs)
        self.assertProbeKinds(docs, "grpc")
        self.assertNotIn("nvidia.com/gpu", yaml.safe_dump_all(docs))
        for w in of_kind(docs, "Deployment", "StatefulSet", "Job"):
            for c in containers(w):
                self.assertEqual("grpo:cpu", c["image"])
                self.assertIn("cpu", c["resources"]["limits"], ident(w))
                self.assertIn("memory", c["resources"]["limits"], ident(w))

    def test_gpu_overlay(self):
        docs = kustomize(K8S / "overlays" / "gpu")
        self.assertHolds(docs)
        self.assertRoles(docs)
        self.assertProbeKinds(docs, "grpc")
        self.assertEqual([1], gpu_limits(docs, "learner"))
        self.assertEqual([1], gpu_limits(docs, "rollout-worker"))
        self.assertEqual([None], gpu_limits(docs, "coordinator"))
        for w in of_kind(docs, "Deployment", "StatefulSet", "Job"):
            for c in containers(w):
                self.assertEqual("grpo:cuda", c["image"])
        # The learner and the workers use the GPU they are given; base's args stay.
        for component in ("learner", "rollout-worker"):
            [args] = [pod_spec(w)["containers"][0]["args"]
                      for w in of_kind(docs, "Deployment", "StatefulSet")
                      if w["metadata"]["labels"]["app.kubernetes.io/component"] == component]
            self.assertIn("--device=cuda", args, component)
            self.assertTrue(any(a.startswith("--coordinator=") for a in args), component)
        cpu = kustomize(K8S / "overlays" / "cpu")
        self.assertNotIn("--device=cuda", yaml.safe_dump_all(cpu))

    def test_components(self):
        # What deploy/README.md describes: monitoring, TLS + token, and two learner ranks
        # on a shared run directory (replicas and WORLD_SIZE changed together).
        scale = {"patch": readme_learner_patch()}
        for overlay in ("overlays/cpu", "overlays/gpu"):
            with self.subTest(overlay=overlay):
                docs = kustomize_combined(
                    [overlay], ["components/monitoring", "components/security",
                                "components/shared-runs"], [scale])
                self.assertHolds(docs)
                self.assertRoles(docs)
                self.assertProbeKinds(docs, "tcpSocket")
                sts = find(docs, "StatefulSet", "grpo-learner")
                self.assertEqual(2, sts["spec"]["replicas"])
                self.assertNotIn("volumeClaimTemplates", sts["spec"])
                (monitor,) = of_kind(docs, "ServiceMonitor")
                self.assertEqual(4, len([s for s in of_kind(docs, "Service") if selects(
                    monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])]))
                for w in of_kind(docs, "Deployment", "StatefulSet", "Job"):
                    secrets = {v["name"]: v["secret"]["secretName"]
                               for v in pod_spec(w)["volumes"] if "secret" in v}
                    for c in containers(w):
                        mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
                        tls = mounts[next(n for n, s in secrets.items() if s == "grpo-tls")]
                        auth = mounts[next(n for n, s in secrets.items() if s == "grpo-auth")]
                        self.assertEqual(f"{tls}/tls.crt", flag(c, "tls_cert"), ident(w))
                        self.assertEqual(f"{tls}/tls.key", flag(c, "tls_key"), ident(w))
                        self.assertEqual(f"{tls}/ca.crt", flag(c, "tls_ca"), ident(w))
                        self.assertEqual(f"{auth}/token", flag(c, "auth_token_file"), ident(w))
                        self.assertIn(("tls_client_auth", None), parse_args(c), ident(w))


class NegativeTest(unittest.TestCase):
    """Each check must catch the breakage it is there for."""

    @classmethod
    def setUpClass(cls):
        cls.docs = kustomize(K8S / "overlays" / "cpu") if KUBECTL else base_docs()

    def setUp(self):
        self.assertEqual([], check_all(self.docs))

    def broken(self, kind, name):
        docs = copy.deepcopy(self.docs)
        return docs, find(docs, kind, name)

    def assertCaught(self, check, docs, fragment):
        problems = check(docs)
        self.assertTrue(any(fragment in p for p in problems), problems)

    def test_service_selector_that_selects_nothing(self):
        docs, svc = self.broken("Service", "grpo-reward-server")
        svc["spec"]["selector"][COMPONENT] = "reward"
        self.assertCaught(check_selectors, docs, "Service/grpo-reward-server")

    def test_hpa_pointing_at_a_missing_deployment(self):
        docs, hpa = self.broken("HorizontalPodAutoscaler", "grpo-rollout-worker")
        hpa["spec"]["scaleTargetRef"]["name"] = "grpo-worker"
        self.assertCaught(check_selectors, docs, "grpo-worker is missing")

    def test_renamed_flag(self):
        docs, dep = self.broken("Deployment", "grpo-rollout-worker")
        args = pod_spec(dep)["containers"][0]["args"]
        i = args.index("--reward_server=grpo-reward-server:50051")
        args[i] = "--reward=grpo-reward-server:50051"
        self.assertCaught(check_flags, docs, "--reward is not a flag of grpo_rollout_worker")

    def test_listen_port_that_is_not_the_container_port(self):
        docs, sts = self.broken("StatefulSet", "grpo-coordinator")
        args = pod_spec(sts)["containers"][0]["args"]
        args[args.index("--metrics_listen=0.0.0.0:9401")] = "--metrics_listen=0.0.0.0:9409"
        self.assertCaught(check_ports, docs, "--metrics_listen=0.0.0.0:9409")

    def test_grpc_probe_on_the_wrong_port(self):
        docs, sts = self.broken("StatefulSet", "grpo-coordinator")
        pod_spec(sts)["containers"][0]["livenessProbe"]["grpc"]["port"] = 9401
        self.assertCaught(check_probes, docs, "livenessProbe gRPC port 9401")

    def test_world_size_not_following_replicas(self):
        docs, sts = self.broken("StatefulSet", "grpo-learner")
        sts["spec"]["replicas"] = 3
        self.assertCaught(check_learner, docs, "WORLD_SIZE 1 but replicas 3")

    def test_several_ranks_on_per_rank_volumes(self):
        docs, sts = self.broken("StatefulSet", "grpo-learner")
        sts["spec"]["replicas"] = 2
        env_of(pod_spec(sts)["containers"][0])["WORLD_SIZE"]["value"] = "2"
        self.assertCaught(check_learner, docs, "not one ReadWriteMany volume")

    def test_metrics_annotation_on_the_wrong_port(self):
        docs, dep = self.broken("Deployment", "grpo-reward-server")
        dep["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] = "9401"
        self.assertCaught(check_prometheus, docs, "Deployment/grpo-reward-server")

    def test_missing_omp_wait_policy(self):
        docs, job = self.broken("Job", "grpo-submit")
        c = pod_spec(job)["containers"][0]
        c["env"] = [e for e in c["env"] if e["name"] != "OMP_WAIT_POLICY"]
        self.assertCaught(check_env, docs, "Job/grpo-submit/grpoctl")

    def test_state_dir_on_no_volume(self):
        docs, sts = self.broken("StatefulSet", "grpo-coordinator")
        args = pod_spec(sts)["containers"][0]["args"]
        args[args.index("--state_dir=/var/lib/grpo/coordinator")] = "--state_dir=/var/lib/grpo"
        self.assertCaught(check_mounts, docs, "--state_dir=/var/lib/grpo is on no mounted volume")

    def test_service_monitor_on_a_port_name_a_service_lacks(self):
        monitor = load_file(K8S / "components" / "monitoring" / "servicemonitor.yaml")[0]
        docs = copy.deepcopy(self.docs) + [monitor]
        self.assertEqual([], check_selectors(docs))
        svc = find(docs, "Service", "grpo-learner")
        next(p for p in svc["spec"]["ports"] if p["name"] == "metrics")["name"] = "prom"
        self.assertCaught(check_selectors, docs, "Service/grpo-learner has no port named metrics")

    def test_learner_disruption_budget_that_allows_an_eviction(self):
        docs, pdb = self.broken("PodDisruptionBudget", "grpo-learner")
        pdb["spec"]["minAvailable"] = "50%"
        self.assertCaught(check_disruption, docs, "StatefulSet/grpo-learner")

    def test_job_spec_mounted_elsewhere(self):
        docs, job = self.broken("Job", "grpo-submit")
        for m in pod_spec(job)["containers"][0]["volumeMounts"]:
            if m["name"] == "job-spec":
                m["mountPath"] = "/etc/spec"
        self.assertCaught(check_job_spec, docs, "is no key of a mounted ConfigMap")


if __name__ == "__main__":
    unittest.main()
