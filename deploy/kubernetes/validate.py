#!/usr/bin/env python3
"""Static checks of the Kubernetes manifests in deploy/kubernetes (and of the container build).

    python3 deploy/kubernetes/validate.py

No cluster needed. It reads kustomization.yaml, every resource it lists and the ConfigMaps and
Secrets its generators make, then checks that:

  - every manifest parses, has apiVersion/kind/metadata.name, and is listed in kustomization.yaml;
  - every ConfigMap and Secret a pod uses (volumes, env, envFrom) exists, with the keys it names;
  - every STATSCACHE_* variable a pod sets is a real configuration key (shared/src/default.toml,
    STATSCACHE_A__B_C -> a.b-c), and every key of the mounted statscache.toml is one too, with
    the type of its default; STATSCACHE_CONFIG names a file that is mounted;
  - pods disable service links (Kubernetes would inject STATSCACHE_<SERVICE>_* variables, which
    the configuration loader rejects as unknown keys), run as the Containerfile's non-root uid;
  - each Deployment has liveness/readiness probes on /health/livez and /health/readyz at the
    port its role listens on (from the effective configuration), CPU and memory requests and
    limits (requests <= limits), a restrictive securityContext, topology spread or anti-affinity,
    a PodDisruptionBudget that does not block drains, and a selector matching its pods;
  - each Deployment's terminationGracePeriodSeconds exceeds service.shutdown-timeout (a role
    exits by itself before Kubernetes kills it);
  - Services select pods and target declared ports; HPAs target Deployments that leave
    "replicas" to them and request CPU; the statscache-migrate Job runs "statscache-worker migrate";
  - the Containerfile builds the three binaries with --locked and runs as a numeric non-root user;
    Containerfile.dockerignore keeps target/, .local/ and .git/ out of the context.

When available it also renders the kustomization with `kubectl kustomize` and loads each pod's
configuration with the real loader (`statscache-worker plugins`, from $STATSCACHE_BIN_DIR,
target/debug or target/release); these are skipped, and said so, when the tool is missing.

Prints one line per failure and ends with "N passed, M failed"; exits 1 if anything failed, 2 if
it could not run at all.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

try:
    import yaml
except ImportError:  # pragma: no cover - environment problem, not a manifest problem
    print("validate.py needs PyYAML: python3 -m pip install pyyaml", file=sys.stderr)
    sys.exit(2)
try:
    import tomllib
except ImportError:  # Python < 3.11
    try:
        import tomli as tomllib  # type: ignore[no-redef]
    except ImportError:
        print("validate.py needs Python >= 3.11 (tomllib) or the tomli package", file=sys.stderr)
        sys.exit(2)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DEFAULT_TOML = ROOT / "shared" / "src" / "default.toml"
CONTAINERFILE = ROOT / "deploy" / "container" / "Containerfile"
DOCKERIGNORE = ROOT / "deploy" / "container" / "Containerfile.dockerignore"

BINARIES = ("statscache-ingestor", "statscache-worker", "statscache-api")
# Which configuration key holds the address each role's probes and metrics are served on.
LISTEN_KEY = {
    "statscache-ingestor": "ingestor.admin-listen",
    "statscache-worker": "worker.admin-listen",
    "statscache-api": "api.listen",
}
PROBES = {"livenessProbe": "/health/livez", "readinessProbe": "/health/readyz"}
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob")


class Checks:
    """Counts named checks; remembers the failures."""

    def __init__(self) -> None:
        self.passed = 0
        self.failed: list[str] = []
        self.skipped: list[str] = []

    def check(self, ok: bool, what: str, why: str = "") -> bool:
        if ok:
            self.passed += 1
        else:
            message = f"FAIL {what}" + (f": {why}" if why else "")
            self.failed.append(message)
            print(message)
        return ok

    def skip(self, what: str, why: str) -> None:
        self.skipped.append(f"{what} ({why})")


# ------------------------------------------------------------------------------ configuration


def flatten(table: dict, prefix: str = "") -> dict[str, object]:
    """{"a": {"b-c": 1}} -> {"a.b-c": 1}: the leaf keys of a TOML document."""
    out: dict[str, object] = {}
    for key, value in table.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out


def load_config_schema() -> tuple[dict[str, object], set[str]]:
    """The configuration keys with their defaults, and the keys of a [[worker.plugins]] entry
    (taken from the commented example in default.toml, where they are documented)."""
    text = DEFAULT_TOML.read_text()
    defaults = flatten(tomllib.loads(text))
    plugin_keys: set[str] = set()
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if line.strip() == "# [[worker.plugins]]":
            example = []
            for follower in lines[index + 1 :]:
                if not follower.startswith("# "):
                    break
                example.append(follower[2:])
            plugin_keys = set(tomllib.loads("\n".join(example)))
            break
    return defaults, plugin_keys


def env_to_key(name: str) -> str:
    """STATSCACHE_A__B_C -> a.b-c, exactly as shared/src/config.rs maps variables."""
    return name[len("STATSCACHE_") :].lower().replace("__", ".").replace("_", "-")


def same_type(default: object, value: object) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, (int, float)):
        return isinstance(value, (int, float))
    return type(default) is type(value)


DURATION_UNITS = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """The humantime durations the configuration uses: "500ms", "60s", "5m", "1h 30m", "30d"."""
    total, rest = 0.0, text.replace(" ", "")
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)([a-z]+)", rest):
        if unit not in DURATION_UNITS:
            raise ValueError(f"unknown duration unit {unit!r} in {text!r}")
        total += float(number) * DURATION_UNITS[unit]
    if not re.fullmatch(r"(\d+(?:\.\d+)?[a-z]+)+", rest):
        raise ValueError(f"not a duration: {text!r}")
    return total


def parse_quantity(text: object) -> float:
    """Kubernetes resource quantities: "250m", "1", "512Mi", "1Gi", "1e3"."""
    raw = str(text)
    suffixes = {
        "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
        "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
    }
    match = re.fullmatch(r"([0-9.]+(?:e[0-9]+)?)([A-Za-z]*)", raw)
    if not match or match.group(2) not in ("", *suffixes):
        raise ValueError(f"not a quantity: {raw!r}")
    return float(match.group(1)) * suffixes.get(match.group(2), 1)


# ------------------------------------------------------------------------------ manifests


def label_match(selector: dict | None, labels: dict | None) -> bool:
    """A matchLabels selector (or a Service's plain selector) against a set of labels."""
    if not selector:
        return False
    return all((labels or {}).get(k) == v for k, v in selector.items())


def pod_spec_of(obj: dict) -> tuple[dict, dict] | None:
    """(pod template metadata, pod spec) of a workload."""
    spec = obj.get("spec") or {}
    if obj.get("kind") == "CronJob":
        spec = (spec.get("jobTemplate") or {}).get("spec") or {}
    template = spec.get("template")
    if not isinstance(template, dict):
        return None
    return template.get("metadata") or {}, template.get("spec") or {}


def generated_objects(kustomization: dict, checks: Checks) -> list[dict]:
    """The ConfigMaps and Secrets kustomize's generators make (by their unhashed names)."""
    out = []
    for kind, field in (("ConfigMap", "configMapGenerator"), ("Secret", "secretGenerator")):
        for generator in kustomization.get(field) or []:
            name = generator.get("name", "?")
            data: dict[str, str] = {}
            for entry in generator.get("files") or []:
                key, _, path = entry.rpartition("=") if "=" in entry else ("", "", entry)
                key = key or Path(path).name
                source = HERE / path
                if checks.check(source.is_file(), f"{field} {name}", f"file {path} exists"):
                    data[key] = source.read_text()
            for literal in generator.get("literals") or []:
                key, _, value = literal.partition("=")
                data[key] = value
            for env_file in generator.get("envs") or []:
                source = HERE / env_file
                if checks.check(source.is_file(), f"{field} {name}", f"env file {env_file} exists"):
                    for line in source.read_text().splitlines():
                        if line.strip() and not line.lstrip().startswith("#"):
                            key, _, value = line.partition("=")
                            data[key.strip()] = value
            out.append({"apiVersion": "v1", "kind": kind, "metadata": {"name": name}, "data": data,
                        "_source": "kustomization.yaml"})
    return out


def object_data(obj: dict) -> dict[str, str]:
    """A ConfigMap's or Secret's keys and (decoded) values."""
    data = {k: str(v) for k, v in (obj.get("data") or {}).items()}
    if obj.get("kind") == "Secret":
        decoded = {}
        for key, value in data.items():
            try:
                decoded[key] = base64.b64decode(value).decode()
            except Exception:  # noqa: BLE001 - kept as is; kubectl would reject it anyway
                decoded[key] = value
        data = decoded
        data.update({k: str(v) for k, v in (obj.get("stringData") or {}).items()})
    data.update({k: "" for k in (obj.get("binaryData") or {})})
    return data


def load_manifests(checks: Checks) -> tuple[dict, list[dict]]:
    kustomization_path = HERE / "kustomization.yaml"
    if not kustomization_path.is_file():
        print(f"FAIL {kustomization_path} is missing")
        sys.exit(1)
    kustomization = yaml.safe_load(kustomization_path.read_text()) or {}
    resources = kustomization.get("resources") or []
    objects: list[dict] = []
    for resource in resources:
        path = HERE / resource
        if not checks.check(path.is_file(), f"kustomization.yaml resource {resource}",
                            "is a file in deploy/kubernetes (directories and URLs are not checked)"):
            continue
        try:
            docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        except yaml.YAMLError as error:
            checks.check(False, f"{resource} parses as YAML", str(error))
            continue
        checks.check(bool(docs), f"{resource} holds at least one object")
        for doc in docs:
            ident = f"{resource}: {doc.get('kind', '?')}/{(doc.get('metadata') or {}).get('name', '?')}"
            ok = all(doc.get(f) for f in ("apiVersion", "kind")) and (doc.get("metadata") or {}).get("name")
            if checks.check(bool(ok), ident, "has apiVersion, kind and metadata.name"):
                doc["_source"] = resource
                objects.append(doc)
    listed = {Path(r).name for r in resources}
    for path in sorted(HERE.glob("*.y*ml")):
        if path.name != "kustomization.yaml":
            checks.check(path.name in listed, f"{path.name}", "is listed in kustomization.yaml resources")
    objects.extend(generated_objects(kustomization, checks))
    seen: set[tuple[str, str]] = set()
    for obj in objects:
        key = (obj["kind"], obj["metadata"]["name"])
        checks.check(key not in seen, f"{key[0]}/{key[1]}", "is defined once")
        seen.add(key)
    return kustomization, objects


# ------------------------------------------------------------------------------ checks


def check_namespace(kustomization: dict, objects: list[dict], checks: Checks) -> None:
    namespace = kustomization.get("namespace")
    checks.check(namespace == "statscache", "kustomization.yaml", "sets namespace: statscache")
    names = [o["metadata"]["name"] for o in objects if o["kind"] == "Namespace"]
    checks.check(names == [namespace], "Namespace", f"exactly one, named {namespace!r} (found {names})")
    for obj in objects:
        explicit = obj["metadata"].get("namespace")
        if explicit is not None:
            checks.check(explicit == namespace, f"{obj['kind']}/{obj['metadata']['name']}",
                         f"namespace {explicit!r} differs from the kustomization's {namespace!r}")


def check_config_files(objects: list[dict], defaults: dict, plugin_keys: set[str],
                       checks: Checks) -> dict[str, dict]:
    """Every *.toml in a ConfigMap is a valid statscache configuration; returns them parsed."""
    parsed: dict[str, dict] = {}
    for obj in objects:
        if obj["kind"] != "ConfigMap":
            continue
        for key, text in object_data(obj).items():
            if not key.endswith(".toml"):
                continue
            where = f"ConfigMap/{obj['metadata']['name']} {key}"
            try:
                document = tomllib.loads(text)
            except tomllib.TOMLDecodeError as error:
                checks.check(False, where, f"is not valid TOML: {error}")
                continue
            parsed[f"{obj['metadata']['name']}/{key}"] = document
            for path, value in flatten(document).items():
                if not checks.check(path in defaults, where, f"key {path!r} is a configuration key"):
                    continue
                checks.check(same_type(defaults[path], value), where,
                             f"{path} = {value!r} has the type of its default {defaults[path]!r}")
                if path == "worker.plugins":
                    for entry in value:
                        unknown = set(entry) - plugin_keys
                        checks.check(not unknown, where, f"[[worker.plugins]] keys {sorted(unknown)} are known")
                if isinstance(value, str) and re.fullmatch(r"\d+(ms|s|m|h|d)", str(defaults[path])):
                    try:
                        parse_duration(value)
                        checks.check(True, where)
                    except ValueError as error:
                        checks.check(False, where, f"{path}: {error}")
    return parsed


def resolve_port(container: dict, port: object) -> int | None:
    if isinstance(port, int):
        return port
    for declared in container.get("ports") or []:
        if declared.get("name") == port:
            return declared.get("containerPort")
    return None


def containerfile_uid() -> int | None:
    if not CONTAINERFILE.is_file():
        return None
    users = re.findall(r"^USER\s+(\S+)", CONTAINERFILE.read_text(), re.M)
    if not users:
        return None
    uid = users[-1].split(":")[0]
    return int(uid) if uid.isdigit() else None


def effective_config(defaults: dict, files: dict[str, dict], file_key: str | None,
                     env: dict[str, str]) -> dict[str, object]:
    """Defaults, then the mounted file, then literal STATSCACHE_* values: as the loader layers them."""
    config = dict(defaults)
    if file_key and file_key in files:
        config.update(flatten(files[file_key]))
    for name, value in env.items():
        if name.startswith("STATSCACHE_") and name != "STATSCACHE_CONFIG":
            config[env_to_key(name)] = value
    return config


def check_workloads(objects: list[dict], defaults: dict, config_files: dict[str, dict],
                    checks: Checks) -> list[dict]:
    """Per pod template: references, configuration, security, probes, resources. Returns, per
    container, what the optional real-loader check needs."""
    by_kind_name = {(o["kind"], o["metadata"]["name"]): o for o in objects}
    uid = containerfile_uid()
    runs: list[dict] = []
    for obj in objects:
        if obj["kind"] not in WORKLOADS:
            continue
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        pod = pod_spec_of(obj)
        if not checks.check(pod is not None, name, "has a pod template"):
            continue
        pod_meta, spec = pod
        is_service = obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet")
        pod_security = spec.get("securityContext") or {}

        checks.check(spec.get("enableServiceLinks") is False, name,
                     "sets enableServiceLinks: false (service links inject STATSCACHE_<SERVICE>_* "
                     "variables, which the configuration loader rejects)")

        if is_service:
            selector = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels")
            checks.check(label_match(selector, pod_meta.get("labels")), name,
                         "spec.selector.matchLabels matches the pod template's labels")
            spread = spec.get("topologySpreadConstraints") or []
            anti = (spec.get("affinity") or {}).get("podAntiAffinity")
            checks.check(bool(spread or anti), name, "has topologySpreadConstraints or podAntiAffinity")
            for constraint in spread:
                checks.check(label_match((constraint.get("labelSelector") or {}).get("matchLabels"),
                                         pod_meta.get("labels")),
                             name, f"topology spread on {constraint.get('topologyKey')} selects its own pods")

        # Volumes: ConfigMaps and Secrets exist, with the items they name.
        volumes: dict[str, tuple[str, str]] = {}
        for volume in spec.get("volumes") or []:
            for kind, field, ref in (("ConfigMap", "configMap", "name"), ("Secret", "secret", "secretName")):
                source = volume.get(field)
                if source is None:
                    continue
                target = by_kind_name.get((kind, source.get(ref)))
                if source.get("optional") is not True:
                    checks.check(target is not None, name, f"volume {volume.get('name')}: {kind} {source.get(ref)!r} exists")
                if target is not None:
                    volumes[volume.get("name")] = (kind, source.get(ref))
                    for item in source.get("items") or []:
                        checks.check(item.get("key") in object_data(target), name,
                                     f"volume {volume.get('name')}: {kind} {source.get(ref)} has key {item.get('key')!r}")

        containers = (spec.get("initContainers") or []) + (spec.get("containers") or [])
        for container in containers:
            where = f"{name} container {container.get('name')}"
            command = (container.get("command") or []) + (container.get("args") or [])
            binary = command[0] if command else None
            checks.check(binary in BINARIES, where, f"runs one of {', '.join(BINARIES)} (command {command})")

            # Environment: references exist; STATSCACHE_* names are configuration keys.
            literal_env: dict[str, str] = {}
            loader_env: dict[str, str] = {}
            for variable in container.get("env") or []:
                var = variable.get("name", "")
                if var.startswith("STATSCACHE_") and var != "STATSCACHE_CONFIG":
                    key = env_to_key(var)
                    checks.check(key in defaults, where,
                                 f"env {var} maps to configuration key {key!r}, which does not exist")
                if "value" in variable:
                    literal_env[var] = str(variable["value"])
                    loader_env[var] = str(variable["value"])
                for kind, field in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")):
                    ref = (variable.get("valueFrom") or {}).get(field)
                    if ref is None:
                        continue
                    target = by_kind_name.get((kind, ref.get("name")))
                    if ref.get("optional") is True and target is None:
                        continue
                    if checks.check(target is not None, where, f"env {var}: {kind} {ref.get('name')!r} exists"):
                        data = object_data(target)
                        if checks.check(ref.get("key") in data, where,
                                        f"env {var}: {kind} {ref.get('name')} has key {ref.get('key')!r}"):
                            loader_env[var] = data[ref.get("key")]
            for source in container.get("envFrom") or []:
                for kind, field in (("Secret", "secretRef"), ("ConfigMap", "configMapRef")):
                    ref = source.get(field)
                    if ref is None:
                        continue
                    target = by_kind_name.get((kind, ref.get("name")))
                    if checks.check(target is not None or ref.get("optional") is True, where,
                                    f"envFrom {kind} {ref.get('name')!r} exists") and target is not None:
                        for var in object_data(target):
                            full = (source.get("prefix") or "") + var
                            if full.startswith("STATSCACHE_") and full != "STATSCACHE_CONFIG":
                                checks.check(env_to_key(full) in defaults, where,
                                             f"envFrom variable {full} maps to a configuration key")
                            loader_env[full] = object_data(target)[var]

            # STATSCACHE_CONFIG names a mounted ConfigMap/Secret file.
            file_key = None
            config_path = literal_env.get("STATSCACHE_CONFIG")
            if checks.check(config_path is not None, where, "sets STATSCACHE_CONFIG"):
                mounted = False
                for mount in container.get("volumeMounts") or []:
                    base = mount.get("mountPath", "").rstrip("/") + "/"
                    if config_path.startswith(base) and mount.get("name") in volumes:
                        kind, ref = volumes[mount["name"]]
                        rel = mount.get("subPath") or config_path[len(base):]
                        if rel in object_data(by_kind_name[(kind, ref)]):
                            mounted = True
                            file_key = f"{ref}/{rel}" if kind == "ConfigMap" else None
                checks.check(mounted, where, f"STATSCACHE_CONFIG={config_path} is a file of a mounted ConfigMap or Secret")
            config = effective_config(defaults, config_files, file_key, literal_env)

            # Volume mounts name volumes.
            declared_volumes = {v.get("name") for v in spec.get("volumes") or []}
            for mount in container.get("volumeMounts") or []:
                checks.check(mount.get("name") in declared_volumes, where, f"volumeMount {mount.get('name')} names a volume")

            # Security.
            security = container.get("securityContext") or {}
            non_root = security.get("runAsNonRoot", pod_security.get("runAsNonRoot"))
            checks.check(non_root is True, where, "securityContext.runAsNonRoot: true")
            checks.check(security.get("readOnlyRootFilesystem") is True, where, "securityContext.readOnlyRootFilesystem: true")
            checks.check(security.get("allowPrivilegeEscalation") is False, where, "securityContext.allowPrivilegeEscalation: false")
            checks.check("ALL" in ((security.get("capabilities") or {}).get("drop") or []), where,
                         "securityContext.capabilities.drop includes ALL")
            checks.check(security.get("privileged") is not True, where, "is not privileged")
            run_as = security.get("runAsUser", pod_security.get("runAsUser"))
            if uid is not None:
                checks.check(run_as == uid, where, f"runAsUser {run_as} is the Containerfile's USER {uid}")
            checks.check(run_as is None or run_as != 0, where, "runAsUser is not 0")

            # Resources.
            resources = container.get("resources") or {}
            for bound in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    checks.check(resource in (resources.get(bound) or {}), where, f"resources.{bound}.{resource} is set")
            for resource in ("cpu", "memory"):
                request = (resources.get("requests") or {}).get(resource)
                limit = (resources.get("limits") or {}).get(resource)
                if request is not None and limit is not None:
                    try:
                        ok = parse_quantity(request) <= parse_quantity(limit)
                        checks.check(ok, where, f"{resource} request {request} <= limit {limit}")
                    except ValueError as error:
                        checks.check(False, where, str(error))

            # Probes, on the port the role listens on according to its configuration.
            if is_service and binary in LISTEN_KEY:
                listen = str(config.get(LISTEN_KEY[binary], ""))
                port = int(listen.rsplit(":", 1)[1]) if ":" in listen else None
                for probe, path in PROBES.items():
                    get = (container.get(probe) or {}).get("httpGet") or {}
                    if not checks.check(bool(get), where, f"has a {probe} (httpGet)"):
                        continue
                    checks.check(get.get("path") == path, where, f"{probe} path is {path} (got {get.get('path')})")
                    resolved = resolve_port(container, get.get("port"))
                    checks.check(resolved == port, where,
                                 f"{probe} port {get.get('port')} -> {resolved} is where {binary} listens "
                                 f"({LISTEN_KEY[binary]} = {listen})")

            # Every role exits by itself (service.shutdown-timeout) before Kubernetes kills it.
            if obj["kind"] == "Deployment":
                grace = spec.get("terminationGracePeriodSeconds", 30)
                try:
                    timeout = parse_duration(str(config["service.shutdown-timeout"]))
                    checks.check(grace > timeout, where,
                                 f"terminationGracePeriodSeconds {grace} > service.shutdown-timeout {timeout:g}s")
                except ValueError as error:
                    checks.check(False, where, f"service.shutdown-timeout: {error}")

            runs.append({"where": where, "env": loader_env, "volumes": volumes, "container": container})
    return runs


def effective_replicas(deployment: dict, hpas: list[dict]) -> int:
    name = deployment["metadata"]["name"]
    for hpa in hpas:
        target = (hpa.get("spec") or {}).get("scaleTargetRef") or {}
        if target.get("kind") == "Deployment" and target.get("name") == name:
            return int(hpa["spec"].get("minReplicas", 1))
    return int((deployment.get("spec") or {}).get("replicas", 1))


def check_services_pdbs_hpas(objects: list[dict], checks: Checks) -> None:
    deployments = [o for o in objects if o["kind"] == "Deployment"]
    pods = [(o, *pod_spec_of(o)) for o in objects if o["kind"] in WORKLOADS and pod_spec_of(o)]
    hpas = [o for o in objects if o["kind"] == "HorizontalPodAutoscaler"]
    pdbs = [o for o in objects if o["kind"] == "PodDisruptionBudget"]

    for service in (o for o in objects if o["kind"] == "Service"):
        name = f"Service/{service['metadata']['name']}"
        spec = service.get("spec") or {}
        matched = [(o, meta, spec_) for o, meta, spec_ in pods
                   if o["kind"] != "Job" and label_match(spec.get("selector"), meta.get("labels"))]
        if not checks.check(bool(matched), name, "selector matches a workload's pods"):
            continue
        for port in spec.get("ports") or []:
            target = port.get("targetPort", port.get("port"))
            found = any(resolve_port(c, target) is not None if isinstance(target, str) else True
                        for _, _, pod_spec in matched for c in pod_spec.get("containers") or [])
            checks.check(found, name, f"targetPort {target!r} is a declared container port")
        annotations = service["metadata"].get("annotations") or {}
        if annotations.get("prometheus.io/scrape") == "true":
            ports = {str(p.get("port")) for p in spec.get("ports") or []}
            checks.check(annotations.get("prometheus.io/port") in ports, name,
                         "prometheus.io/port is one of the Service's ports")

    for deployment in deployments:
        name = f"Deployment/{deployment['metadata']['name']}"
        labels = ((deployment["spec"].get("template") or {}).get("metadata") or {}).get("labels")
        covering = [p for p in pdbs if label_match(((p.get("spec") or {}).get("selector") or {}).get("matchLabels"), labels)]
        if not checks.check(len(covering) == 1, name, f"is covered by exactly one PodDisruptionBudget (found {len(covering)})"):
            continue
        replicas = effective_replicas(deployment, hpas)
        minimum = covering[0]["spec"].get("minAvailable")
        if isinstance(minimum, int):
            checks.check(minimum < replicas, name,
                         f"PodDisruptionBudget minAvailable {minimum} < replicas {replicas}, so drains can evict")

    for hpa in hpas:
        name = f"HorizontalPodAutoscaler/{hpa['metadata']['name']}"
        spec = hpa.get("spec") or {}
        target_ref = spec.get("scaleTargetRef") or {}
        target = next((d for d in deployments if target_ref.get("kind") == "Deployment"
                       and d["metadata"]["name"] == target_ref.get("name")), None)
        if not checks.check(target is not None, name, f"scaleTargetRef {target_ref} is a Deployment here"):
            continue
        checks.check(1 <= spec.get("minReplicas", 1) <= spec.get("maxReplicas", 0), name,
                     "1 <= minReplicas <= maxReplicas")
        checks.check("replicas" not in target["spec"], name,
                     f"{target_ref.get('name')} leaves replicas to the autoscaler (kubectl apply would reset it)")
        uses_cpu = any((m.get("resource") or {}).get("name") == "cpu" for m in spec.get("metrics") or [])
        if uses_cpu:
            containers = target["spec"]["template"]["spec"].get("containers") or []
            checks.check(all(((c.get("resources") or {}).get("requests") or {}).get("cpu") for c in containers),
                         name, "CPU utilization target: every container of the target requests CPU")


def check_roles(objects: list[dict], checks: Checks) -> None:
    """The three roles and the bootstrap Job are all there."""
    commands = {}
    for obj in objects:
        if obj["kind"] in WORKLOADS and pod_spec_of(obj):
            for container in pod_spec_of(obj)[1].get("containers") or []:
                commands[(obj["kind"], obj["metadata"]["name"])] = (container.get("command") or []) + (container.get("args") or [])
    for binary in BINARIES:
        checks.check(any(k[0] == "Deployment" and c[:1] == [binary] for k, c in commands.items()),
                     f"role {binary}", "has a Deployment")
    checks.check(commands.get(("Job", "statscache-migrate")) == ["statscache-worker", "migrate"],
                 "Job/statscache-migrate", "runs statscache-worker migrate")


def check_container_build(checks: Checks) -> None:
    if not checks.check(CONTAINERFILE.is_file(), "deploy/container/Containerfile", "exists"):
        return
    text = CONTAINERFILE.read_text()
    checks.check(bool(re.search(r"^FROM\s+\S*rust:1-bookworm\s+AS\s+\w+", text, re.M | re.I)),
                 "Containerfile", "builds in rust:1-bookworm")
    checks.check(bool(re.search(r"^FROM\s+\S*debian:bookworm-slim", text, re.M)),
                 "Containerfile", "runs on debian:bookworm-slim")
    checks.check("cargo build --release --locked --bins" in text, "Containerfile",
                 "runs cargo build --release --locked --bins")
    for binary in BINARIES:
        checks.check(f"target/release/{binary}" in text, "Containerfile", f"ships {binary}")
    checks.check("ca-certificates" in text, "Containerfile", "installs ca-certificates")
    uid = containerfile_uid()
    checks.check(uid is not None and uid != 0, "Containerfile", "ends with a numeric, non-root USER")
    if checks.check(DOCKERIGNORE.is_file(), "deploy/container/Containerfile.dockerignore", "exists"):
        entries = {line.strip().rstrip("/") for line in DOCKERIGNORE.read_text().splitlines()}
        for entry in ("target", ".local", ".git"):
            checks.check(entry in entries, "Containerfile.dockerignore", f"excludes {entry}/")


# ------------------------------------------------------------------------------ optional tools


def check_kustomize_render(checks: Checks) -> None:
    kubectl = shutil.which("kubectl")
    kustomize = shutil.which("kustomize")
    if kubectl:
        command = [kubectl, "kustomize", str(HERE)]
    elif kustomize:
        command = [kustomize, "build", str(HERE)]
    else:
        checks.skip("kustomize render", "neither kubectl nor kustomize on PATH")
        return
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        checks.check(False, "kustomize render", "timed out")
        return
    if not checks.check(result.returncode == 0, "kustomize render", result.stderr.strip()):
        return
    rendered = [d for d in yaml.safe_load_all(result.stdout) if d]
    config_maps = {d["metadata"]["name"] for d in rendered if d["kind"] == "ConfigMap"}
    for doc in rendered:
        pod = pod_spec_of(doc) if doc["kind"] in WORKLOADS else None
        if not pod:
            continue
        for volume in pod[1].get("volumes") or []:
            if "configMap" in volume:
                checks.check(volume["configMap"]["name"] in config_maps,
                             f"rendered {doc['kind']}/{doc['metadata']['name']}",
                             f"ConfigMap {volume['configMap']['name']} is in the rendered output")
        checks.check(doc["metadata"].get("namespace") == "statscache",
                     f"rendered {doc['kind']}/{doc['metadata']['name']}", "is in namespace statscache")


def find_worker_binary() -> Path | None:
    candidates = []
    if os.environ.get("STATSCACHE_BIN_DIR"):
        candidates.append(Path(os.environ["STATSCACHE_BIN_DIR"]) / "statscache-worker")
    candidates += [ROOT / "target" / "debug" / "statscache-worker", ROOT / "target" / "release" / "statscache-worker"]
    return next((c for c in candidates if c.is_file() and os.access(c, os.X_OK)), None)


def check_real_loader(objects: list[dict], runs: list[dict], checks: Checks) -> None:
    """Loads each pod's configuration (mounted files, environment) with the real loader."""
    binary = find_worker_binary()
    if binary is None:
        checks.skip("configuration loads in statscache-worker", "no built statscache-worker")
        return
    by_kind_name = {(o["kind"], o["metadata"]["name"]): o for o in objects}
    for run in runs:
        with tempfile.TemporaryDirectory(prefix="statscache-validate-") as tmp:
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
            env.update(run["env"])
            config_path = env.get("STATSCACHE_CONFIG")
            for mount in run["container"].get("volumeMounts") or []:
                if mount.get("name") not in run["volumes"]:
                    continue
                kind, ref = run["volumes"][mount["name"]]
                base = mount["mountPath"].rstrip("/") + "/"
                if config_path and config_path.startswith(base):
                    rel = config_path[len(base):]
                    data = object_data(by_kind_name[(kind, ref)])
                    if rel in data:
                        local = Path(tmp) / rel
                        local.write_text(data[rel])
                        env["STATSCACHE_CONFIG"] = str(local)
            try:
                result = subprocess.run([str(binary), "plugins"], env=env, capture_output=True,
                                        text=True, timeout=30, cwd=tmp)
            except subprocess.TimeoutExpired:
                checks.check(False, run["where"], "statscache-worker plugins timed out")
                continue
            error = (result.stderr.strip().splitlines() or [""])[0]
            checks.check(result.returncode == 0, run["where"],
                         f"its configuration loads in {binary} ({error})")


# ------------------------------------------------------------------------------ main


def main() -> int:
    checks = Checks()
    if not DEFAULT_TOML.is_file():
        print(f"FAIL {DEFAULT_TOML} is missing: cannot tell the configuration keys")
        return 2
    defaults, plugin_keys = load_config_schema()
    checks.check(bool(plugin_keys), "shared/src/default.toml", "documents the [[worker.plugins]] keys")

    kustomization, objects = load_manifests(checks)
    check_namespace(kustomization, objects, checks)
    config_files = check_config_files(objects, defaults, plugin_keys, checks)
    checks.check(bool(config_files), "ConfigMaps", "one holds a statscache .toml configuration")
    runs = check_workloads(objects, defaults, config_files, checks)
    check_services_pdbs_hpas(objects, checks)
    check_roles(objects, checks)
    check_container_build(checks)
    check_kustomize_render(checks)
    check_real_loader(objects, runs, checks)

    kinds: dict[str, int] = {}
    for obj in objects:
        kinds[obj["kind"]] = kinds.get(obj["kind"], 0) + 1
    print("checked " + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())))
    for skipped in checks.skipped:
        print(f"skipped: {skipped}")
    if checks.failed:
        print(f"{len(checks.failed)} check(s) failed:", file=sys.stderr)
        for failure in checks.failed:
            print(f"  {failure}", file=sys.stderr)
    print(f"{checks.passed} passed, {len(checks.failed)} failed")
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
