"""compose.yaml: the services exist and are wired as DESIGN.md's trust boundaries say."""

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def load():
    return yaml.safe_load((REPO / "compose.yaml").read_text())


def test_services_and_images_built_from_this_repo():
    services = load()["services"]
    assert set(services) == {"api", "worker", "redis", "postgres"}
    assert services["api"]["build"] == "." and (REPO / "Dockerfile").is_file()
    assert services["worker"]["image"] == services["api"]["image"] == "evalgate:latest"


def test_api_and_worker_share_broker_database_and_data_dir():
    services = load()["services"]
    for name in ("api", "worker"):
        env = services[name]["environment"]
        assert env["EVALGATE_BROKER_URL"].startswith("redis://redis:")
        assert "@postgres:5432/" in env["EVALGATE_DATABASE_URL"]
        assert f"{env['EVALGATE_DATA_DIR']}:{env['EVALGATE_DATA_DIR']}" in services[name]["volumes"]
        assert {"postgres", "redis"} <= set(services[name]["depends_on"])


def test_only_the_worker_holds_the_docker_socket():
    services = load()["services"]
    assert any("docker.sock" in v for v in services["worker"]["volumes"])
    for name in ("api", "redis", "postgres"):
        assert not any("docker.sock" in str(v) for v in services[name].get("volumes", []))


def test_no_password_is_baked_in():
    text = (REPO / "compose.yaml").read_text()
    assert "${EVALGATE_DB_PASSWORD:?" in text
    env = load()["services"]["postgres"]["environment"]
    assert env["POSTGRES_PASSWORD"].startswith("${")
