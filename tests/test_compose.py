"""compose.yaml: the services exist and are wired as DESIGN.md's trust boundaries say."""

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def load():
    return yaml.safe_load((REPO / "compose.yaml").read_text())


def test_services_and_images_built_from_this_repo():
    services = load()["services"]
    assert set(services) == {"api", "worker", "twin-worker", "redis", "postgres", "prometheus"}
    assert services["api"]["build"] == "." and (REPO / "Dockerfile").is_file()
    assert services["worker"]["image"] == services["twin-worker"]["image"] == services["api"]["image"]
    assert services["api"]["image"] == "evalgate:latest"


def test_twin_jobs_have_workers_of_their_own():
    """A twin job never waits behind a real one (service.jobs.dispatch): its own workers, its own queue."""
    services = load()["services"]
    assert "--twins" in services["twin-worker"]["command"] and "--twins" not in services["worker"]["command"]
    assert services["twin-worker"]["environment"] == services["worker"]["environment"]


def test_api_and_worker_share_broker_database_and_data_dir():
    services = load()["services"]
    for name in ("api", "worker", "twin-worker"):
        env = services[name]["environment"]
        assert env["EVALGATE_BROKER_URL"].startswith("redis://redis:")
        assert "@postgres:5432/" in env["EVALGATE_DATABASE_URL"]
        assert f"{env['EVALGATE_DATA_DIR']}:{env['EVALGATE_DATA_DIR']}" in services[name]["volumes"]
        assert {"postgres", "redis"} <= set(services[name]["depends_on"])


def test_only_the_workers_hold_the_docker_socket():
    services = load()["services"]
    assert all(any("docker.sock" in v for v in services[w]["volumes"]) for w in ("worker", "twin-worker"))
    for name in ("api", "redis", "postgres", "prometheus"):
        assert not any("docker.sock" in str(v) for v in services[name].get("volumes", []))


def test_no_password_is_baked_in():
    text = (REPO / "compose.yaml").read_text()
    assert "${EVALGATE_DB_PASSWORD:?" in text
    env = load()["services"]["postgres"]["environment"]
    assert env["POSTGRES_PASSWORD"].startswith("${")


def prometheus_config() -> dict:
    (mount,) = [
        v for v in load()["services"]["prometheus"]["volumes"] if v.endswith(":/etc/prometheus/prometheus.yml:ro")
    ]
    return yaml.safe_load((REPO / mount.split(":")[0]).read_text())


def test_prometheus_scrapes_the_api_as_an_operator_and_every_worker():
    services = load()["services"]
    jobs = {job["job_name"]: job for job in prometheus_config()["scrape_configs"]}
    api = jobs["evalgate-api"]
    assert api["static_configs"] == [{"targets": ["api:8000"]}] and api["metrics_path"] == "/metrics"
    # The API's /metrics is operator-only: the key is a compose secret read from a file, never inline.
    (secret,) = services["prometheus"]["secrets"]
    assert api["authorization"] == {"type": "Bearer", "credentials_file": f"/run/secrets/{secret}"}
    assert load()["secrets"][secret]["file"].startswith("${EVALGATE_METRICS_KEY_FILE:-")
    # Workers are found by DNS, so every replica of `--scale worker=N` is scraped, on the port they serve.
    worker = services["worker"]
    (sd,) = jobs["evalgate-worker"]["dns_sd_configs"]
    assert (
        sd["names"] == ["worker", "twin-worker"] and str(sd["port"]) == worker["environment"]["EVALGATE_METRICS_PORT"]
    )
    assert worker["environment"]["EVALGATE_METRICS_HOST"] == "0.0.0.0" and str(sd["port"]) in worker["expose"]


def test_metrics_are_published_to_this_host_only_and_workers_not_at_all():
    services = load()["services"]
    assert "ports" not in services["worker"] and "ports" not in services["twin-worker"]  # the compose network only
    assert all(p.startswith("127.0.0.1:") for p in services["prometheus"]["ports"])
    gitignored = (REPO / ".gitignore").read_text().splitlines()
    assert "deploy/prometheus/operator.key" in gitignored
