"""Static checks of the deployment files: docker-compose.yml, deploy/Dockerfile, deploy/k8s/.

Nothing is built or run; each test reads a file and holds it to the contract the services
have (commands, ports, settings names, health endpoints).
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import AliasChoices

from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
K8S_DIR = ROOT / "deploy" / "k8s"

SERVICES = ("collector", "trainer", "forecaster", "api")
DOWNSTREAM = {
    "collector": "COLLECTOR_URL",
    "trainer": "TRAINER_URL",
    "forecaster": "FORECASTER_URL",
}
COMPONENT_LABEL = "app.kubernetes.io/component"


def setting_aliases() -> set[str]:
    """Every environment variable name `Settings` reads."""
    names: set[str] = set()
    for name, info in Settings.model_fields.items():
        alias = info.validation_alias
        assert isinstance(alias, AliasChoices), f"{name} has no AliasChoices"
        names.update(choice for choice in alias.choices if isinstance(choice, str))
    return names


@pytest.fixture
def defaults(monkeypatch: pytest.MonkeyPatch) -> Settings:
    """`Settings()` with the defaults, whatever the environment running the tests holds."""
    for name in setting_aliases():
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    return Settings()


# --------------------------------------------------------------------------- compose


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(document, dict)
    return document


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A compose service's environment, from either the mapping or the list form."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def as_argv(command: str | list[str]) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def effective_command(service: dict[str, Any], stages: dict[str, Stage]) -> list[str]:
    """The command a compose service runs: its own `command`, else its build target's CMD."""
    if "command" in service:
        return as_argv(service["command"])
    target = service["build"]["target"]
    return stages[target].cmd()


def test_compose_has_every_service(compose: dict[str, Any]) -> None:
    assert {"postgres", "migrate", *SERVICES} <= set(compose["services"])


def test_postgres_is_health_checked_and_keeps_its_data(compose: dict[str, Any]) -> None:
    postgres = compose["services"]["postgres"]
    assert postgres["image"].startswith("postgres:15")
    assert "pg_isready" in " ".join(as_argv(postgres["healthcheck"]["test"]))
    volumes = [str(volume).split(":") for volume in postgres["volumes"]]
    data = [source for source, target, *_ in volumes if target == "/var/lib/postgresql/data"]
    assert data, "postgres keeps /var/lib/postgresql/data nowhere"
    assert data[0] in (compose.get("volumes") or {}), f"{data[0]} is not a named volume"


def test_migrate_runs_once_postgres_is_healthy(compose: dict[str, Any]) -> None:
    migrate = compose["services"]["migrate"]
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert effective_command(migrate, parse_dockerfile()) == ["autofix-ml", "db", "upgrade"]
    assert str(migrate.get("restart", "no")) == "no"


@pytest.mark.parametrize("name", SERVICES)
def test_service_image_command_and_order(compose: dict[str, Any], name: str) -> None:
    service = compose["services"][name]
    build = service["build"]
    assert (build["context"], build["dockerfile"], build["target"]) == (
        ".",
        "deploy/Dockerfile",
        name,
    )
    assert effective_command(service, parse_dockerfile()) == ["autofix-ml", "serve", name]
    assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert service["restart"] in ("always", "unless-stopped", "on-failure")


@pytest.mark.parametrize("name", SERVICES)
def test_service_healthcheck_uses_python_on_its_port(
    compose: dict[str, Any], defaults: Settings, name: str
) -> None:
    test = as_argv(compose["services"][name]["healthcheck"]["test"])
    assert test[0] in ("CMD", "CMD-SHELL") and test[1].startswith("python")
    # Readiness: `depends_on: service_healthy` waits for a database that answers.
    assert f"127.0.0.1:{defaults.port(name)}/ready" in " ".join(test)


def test_gateway_routes_to_the_services(compose: dict[str, Any], defaults: Settings) -> None:
    api = compose["services"]["api"]
    env = environment(api)
    for name, variable in DOWNSTREAM.items():
        url = urlsplit(env[variable])
        assert (url.scheme, url.hostname, url.port) == ("http", name, defaults.port(name))
        assert api["depends_on"][name]["condition"] in ("service_healthy", "service_started")


def test_gateway_port_is_published(compose: dict[str, Any], defaults: Settings) -> None:
    port = defaults.port("api")
    published = [str(entry).rsplit(":", 2)[-2:] for entry in compose["services"]["api"]["ports"]]
    assert [str(port), str(port)] in published


def test_collector_scrapes_the_gateway(compose: dict[str, Any], defaults: Settings) -> None:
    url = urlsplit(environment(compose["services"]["collector"])["ML_SCRAPE_URL"])
    assert (url.hostname, url.port, url.path) == ("api", defaults.port("api"), "/metrics")


@pytest.mark.parametrize("name", ["migrate", *SERVICES])
def test_services_share_the_postgres_database(compose: dict[str, Any], name: str) -> None:
    postgres = environment(compose["services"]["postgres"])
    url = urlsplit(environment(compose["services"][name])["DATABASE_URL"])
    assert url.scheme == "postgresql+asyncpg"
    assert (url.hostname, url.port or 5432) == ("postgres", 5432)
    assert (url.username, url.password, url.path.lstrip("/")) == (
        postgres["POSTGRES_USER"],
        postgres["POSTGRES_PASSWORD"],
        postgres["POSTGRES_DB"],
    )


@pytest.mark.parametrize("name", SERVICES)
def test_services_listen_on_all_interfaces(compose: dict[str, Any], name: str) -> None:
    assert environment(compose["services"][name])["AUTOFIX_BIND_HOST"] == "0.0.0.0"


def test_compose_names_only_real_settings(compose: dict[str, Any]) -> None:
    known = setting_aliases()
    unknown = {
        f"{name}: {variable}"
        for name in ("migrate", *SERVICES)
        for variable in environment(compose["services"][name])
        if variable not in known
    }
    assert not unknown, f"not settings in shared/settings.py: {sorted(unknown)}"


# --------------------------------------------------------------------------- Dockerfile


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def last(self, keyword: str) -> str | None:
        values = [value for key, value in self.instructions if key == keyword]
        return values[-1] if values else None

    def cmd(self) -> list[str]:
        value = self.last("CMD")
        assert value is not None, f"stage {self.name} has no CMD"
        return json.loads(value) if value.startswith("[") else ["/bin/sh", "-c", value]


def dockerfile_lines(text: str) -> Iterator[str]:
    """Logical instructions: comments dropped, backslash continuations joined."""
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        yield pending + line
        pending = ""
    if pending:
        yield pending


def parse_dockerfile() -> dict[str, Stage]:
    stages: dict[str, Stage] = {}
    args: dict[str, str] = {}
    current: Stage | None = None
    for line in dockerfile_lines(DOCKERFILE.read_text()):
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "ARG" and current is None:
            name, _, default = rest.partition("=")
            args[name] = default
        elif keyword == "FROM":
            words = [word for word in rest.split() if not word.startswith("--")]
            base = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m[1] or m[2]], words[0])
            assert len(words) == 3 and words[1].upper() == "AS", f"unnamed stage: {line}"
            current = stages[words[2]] = Stage(name=words[2], base=base)
        else:
            assert current is not None, f"{keyword} before FROM"
            current.instructions.append((keyword, rest))
    return stages


def ancestry(stages: dict[str, Stage], name: str) -> list[Stage]:
    """The stage and the stages it is built on, nearest first."""
    chain = [stages[name]]
    while chain[-1].base in stages:
        chain.append(stages[chain[-1].base])
    return chain


def runs(chain: list[Stage]) -> str:
    return "\n".join(value for stage in chain for key, value in stage.instructions if key == "RUN")


def test_dockerfile_installs_the_project_with_the_lock() -> None:
    stages = parse_dockerfile()
    installs = [
        shlex.split(value)
        for stage in stages.values()
        for key, value in stage.instructions
        if key == "RUN" and "pip install" in value
    ]
    assert any(
        argv[-4:] == ["install", "-c", "constraints.txt", "."] and "pip" in argv[-5]
        for argv in installs
    ), "no `pip install -c constraints.txt .`"


def test_dockerfile_copies_what_the_build_needs() -> None:
    """pyproject.toml, its readme, the lock and every package setuptools is told to include."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    needed = {"pyproject.toml", "constraints.txt", pyproject["project"]["readme"]}
    needed |= {
        pattern.rstrip("*")
        for pattern in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    copied: set[str] = set()
    for stage in parse_dockerfile().values():
        for key, value in stage.instructions:
            words = value.split()
            if key == "COPY" and not any(word.startswith("--from") for word in words):
                copied |= {word.rstrip("/") for word in words[:-1] if not word.startswith("--")}
    assert needed <= copied, f"not copied into the image: {sorted(needed - copied)}"
    ignored = sorted(path for path in copied if dockerignored(path))
    assert not ignored, f".dockerignore leaves out {ignored}"


@pytest.mark.parametrize("name", ["migrate", *SERVICES])
def test_dockerfile_stage_per_service_on_a_shared_slim_base(name: str) -> None:
    stages = parse_dockerfile()
    chain = ancestry(stages, name)
    assert chain[-1].base == "python:3.11-slim"
    bases = {ancestry(stages, other)[1].name for other in ("migrate", *SERVICES)}
    assert len(bases) == 1 and name not in bases, "the service stages do not share one base"
    assert "libgomp1" in runs(chain), "LightGBM needs libgomp1 at runtime"


@pytest.mark.parametrize("name", ["migrate", *SERVICES])
def test_dockerfile_runs_as_non_root(name: str) -> None:
    user = next(
        (stage.last("USER") for stage in ancestry(parse_dockerfile(), name) if stage.last("USER")),
        None,
    )
    assert user is not None and user.split(":")[0] not in ("root", "0")


@pytest.mark.parametrize("name", SERVICES)
def test_dockerfile_service_cmd_expose_and_healthcheck(defaults: Settings, name: str) -> None:
    stages = parse_dockerfile()
    stage = stages[name]
    port = defaults.port(name)
    assert stage.cmd() == ["autofix-ml", "serve", name]
    assert str(port) in (stage.last("EXPOSE") or "").split()
    healthcheck = stage.last("HEALTHCHECK") or ""
    assert "python" in healthcheck and "/health" in healthcheck and f"'{port}'" in healthcheck
    chain = ancestry(stages, name)
    bind = [value for stage in chain for key, value in stage.instructions if key == "ENV"]
    assert any("AUTOFIX_BIND_HOST=0.0.0.0" in value.split() for value in bind)


def test_migrate_stage_runs_the_migration() -> None:
    assert parse_dockerfile()["migrate"].cmd() == ["autofix-ml", "db", "upgrade"]


# --------------------------------------------------------------------------- .dockerignore


def dockerignored(path: str) -> bool:
    """Whether docker leaves `path` out of the build context (the patterns this repo uses)."""
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        if pattern.startswith("**/"):
            hit = any(fnmatch.fnmatchcase(part, pattern[3:]) for part in parts)
        else:
            hit = any(fnmatch.fnmatchcase(prefix, pattern) for prefix in prefixes)
        if hit:
            ignored = not negated
    return ignored


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        ".git/HEAD",
        "var/autofix-ml.db",
        "tests/test_deploy.py",
        "shared/__pycache__/settings.cpython-311.pyc",
        ".ruff_cache/CACHEDIR.TAG",
    ],
)
def test_dockerignore_keeps_local_state_out(path: str) -> None:
    assert dockerignored(path)


# --------------------------------------------------------------------------- Kubernetes


@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
    documents = [
        document
        for path in sorted(K8S_DIR.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for document in yaml.safe_load_all(path.read_text())
        if document is not None
    ]
    assert documents, "no manifests in deploy/k8s"
    return documents


def find(manifests: list[dict[str, Any]], kind: str, component: str) -> dict[str, Any]:
    matches = [
        document
        for document in manifests
        if document["kind"] == kind
        and document["metadata"].get("labels", {}).get(COMPONENT_LABEL) == component
    ]
    assert len(matches) == 1, f"{len(matches)} {kind} for {component}"
    return matches[0]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def workload_for(manifests: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return find(manifests, "DaemonSet" if name == "collector" else "Deployment", name)


def main_container(workload: dict[str, Any], name: str) -> dict[str, Any]:
    """The service's own container of a pod (the gateway's pod also has its app-metrics one)."""
    (container,) = [c for c in pod_spec(workload)["containers"] if c["name"] == name]
    return container


def test_manifests_are_namespace_less_and_named(manifests: list[dict[str, Any]]) -> None:
    for document in manifests:
        assert {"apiVersion", "kind", "metadata"} <= set(document)
        assert document["metadata"]["name"]
        assert "namespace" not in document["metadata"]


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    files = {path.name for path in K8S_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files


def test_collector_is_a_daemonset_tagged_with_the_node_name(
    manifests: list[dict[str, Any]],
) -> None:
    daemonset = find(manifests, "DaemonSet", "collector")
    (container,) = pod_spec(daemonset)["containers"]
    host = {entry["name"]: entry for entry in container["env"]}["AUTOFIX_HOST"]
    assert host["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"


def test_gateway_runs_two_replicas(manifests: list[dict[str, Any]]) -> None:
    assert find(manifests, "Deployment", "api")["spec"]["replicas"] == 2


@pytest.mark.parametrize("name", SERVICES)
def test_workload_probes_health_on_its_port(
    manifests: list[dict[str, Any]], defaults: Settings, name: str
) -> None:
    workload = workload_for(manifests, name)
    selector = workload["spec"]["selector"]["matchLabels"]
    assert selector.items() <= workload["spec"]["template"]["metadata"]["labels"].items()
    container = main_container(workload, name)
    assert container["command"] == ["autofix-ml", "serve", name]
    ports = {port.get("name"): port["containerPort"] for port in container["ports"]}
    assert defaults.port(name) in ports.values()
    paths = {"startupProbe": "/health", "readinessProbe": "/ready", "livenessProbe": "/health"}
    for probe, path in paths.items():
        http = container[probe]["httpGet"]
        assert http["path"] == path, probe
        assert ports.get(http["port"], http["port"]) == defaults.port(name), probe


@pytest.mark.parametrize("name", SERVICES)
def test_service_fronts_its_workload(
    manifests: list[dict[str, Any]], defaults: Settings, name: str
) -> None:
    service = find(manifests, "Service", name)
    workload = workload_for(manifests, name)
    assert service["spec"]["selector"] == workload["spec"]["selector"]["matchLabels"]
    (port,) = service["spec"]["ports"]
    container = main_container(workload, name)
    named = {entry.get("name"): entry["containerPort"] for entry in container["ports"]}
    assert port["port"] == defaults.port(name)
    assert named.get(port["targetPort"], port["targetPort"]) == defaults.port(name)


def test_migrate_job_runs_the_migration(manifests: list[dict[str, Any]]) -> None:
    job = find(manifests, "Job", "migrate")
    (container,) = pod_spec(job)["containers"]
    assert container["command"] == ["autofix-ml", "db", "upgrade"]
    assert pod_spec(job)["restartPolicy"] in ("Never", "OnFailure")


def containers(manifests: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for document in manifests:
        if document["kind"] in ("Deployment", "DaemonSet", "Job"):
            for container in pod_spec(document)["containers"]:
                yield document["metadata"]["name"], container


def test_every_container_is_bounded_and_reads_the_secret(
    manifests: list[dict[str, Any]],
) -> None:
    seen = 0
    for name, container in containers(manifests):
        seen += 1
        resources = container["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"]), name
        assert {"cpu", "memory"} <= set(resources["limits"]), name
        env = {entry["name"]: entry for entry in container.get("env", [])}
        assert "secretKeyRef" in env["DATABASE_URL"]["valueFrom"], name
    assert seen == len(SERVICES) + 2  # and the gateway pods' app-metrics collector


def test_pods_get_no_service_link_variables(manifests: list[dict[str, Any]]) -> None:
    """A Service named e.g. `autofix-api` would otherwise set AUTOFIX_API_PORT=tcp://..."""
    for document in manifests:
        if document["kind"] in ("Deployment", "DaemonSet", "Job"):
            assert pod_spec(document)["enableServiceLinks"] is False, document["metadata"]["name"]


def test_configmap_routes_the_gateway_and_binds_all_interfaces(
    manifests: list[dict[str, Any]], defaults: Settings
) -> None:
    (configmap,) = [document for document in manifests if document["kind"] == "ConfigMap"]
    data = configmap["data"]
    assert data["AUTOFIX_BIND_HOST"] == "0.0.0.0"
    assert "DATABASE_URL" not in data, "the database URL holds a password: keep it in the Secret"
    for name, variable in DOWNSTREAM.items():
        url = urlsplit(data[variable])
        service = find(manifests, "Service", name)
        assert (url.hostname, url.port) == (service["metadata"]["name"], defaults.port(name))
    # Never through the gateway's Service: each scrape would hit another replica.
    assert "ML_SCRAPE_URL" not in data
    for name, container in containers(manifests):
        refs = [source["configMapRef"]["name"] for source in container.get("envFrom", [])]
        if not name.endswith("migrate"):
            assert refs == [configmap["metadata"]["name"]], name


def test_application_metrics_are_scraped_once_per_gateway_pod_not_per_node(
    manifests: list[dict[str, Any]], defaults: Settings
) -> None:
    node_collector = main_container(workload_for(manifests, "collector"), "collector")
    env = {entry["name"]: entry for entry in node_collector["env"]}
    assert env["ML_SCRAPE_ENABLED"]["value"] == "false"
    gateway = workload_for(manifests, "api")
    sidecar = main_container(gateway, "app-metrics")
    assert sidecar["command"] == ["autofix-ml", "serve", "collector"]
    env = {entry["name"]: entry for entry in sidecar["env"]}
    scrape = urlsplit(env["ML_SCRAPE_URL"]["value"])
    assert (scrape.hostname, scrape.port, scrape.path) == (
        "127.0.0.1",
        defaults.port("api"),
        "/metrics",
    )
    assert env["AUTOFIX_HOST"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    for probe, path in {"readinessProbe": "/ready", "livenessProbe": "/health"}.items():
        assert sidecar[probe]["httpGet"]["path"] == path


def test_manifests_name_only_real_settings(manifests: list[dict[str, Any]]) -> None:
    known = setting_aliases()
    named = {
        key for document in manifests if document["kind"] == "ConfigMap" for key in document["data"]
    }
    named |= {
        entry["name"]
        for _, container in containers(manifests)
        for entry in container.get("env", [])
    }
    assert named and not named - known, f"not settings: {sorted(named - known)}"
