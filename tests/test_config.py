"""Config: defaults, environment overrides, and one clear line for a bad value."""

from __future__ import annotations

import subprocess
import sys

import pytest

from server.config import DEFAULT_CONFIG_PATH, Config, ConfigError, build_config, load_config


def test_config_yaml_matches_defaults_and_is_valid():
    config = load_config(DEFAULT_CONFIG_PATH, environ={})
    assert config.server.port == 8080
    assert config.server.host == "127.0.0.1"
    assert config.cat_facts.url == "https://catfact.ninja/fact"
    assert config.internal.username == "admin"
    assert config.honeybadger.api_key == ""
    assert config.queue.embedded_worker is True
    # Relative paths are resolved against the config file's folder.
    assert config.database.path == str(DEFAULT_CONFIG_PATH.parent / "var" / "app.db")


def test_environment_overrides_config_file(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("server:\n  port: 9000\n")
    config = load_config(
        path,
        environ={
            "SERVER_PORT": "9100",
            "SERVER_HOST": "0.0.0.0",
            "DATABASE_PATH": "/tmp/x.db",
            "DATABASE_URL": "postgresql://app@db.internal:5432/app",
            "REDIS_URL": "redis://127.0.0.1:7000/1",
            "CAT_FACTS_URL": "http://127.0.0.1:5000/fact",
            "HONEYBADGER_API_KEY": "k",
            "HONEYBADGER_ENVIRONMENT": "staging",
            "HONEYBADGER_ENDPOINT": "http://127.0.0.1:5001",
            "INTERNAL_USERNAME": "ops",
            "INTERNAL_PASSWORD": "pw",
            "QUEUE_EMBEDDED_WORKER": "false",
        },
    )
    assert config.server.port == 9100
    assert config.server.host == "0.0.0.0"
    assert config.database.path == "/tmp/x.db"
    assert config.database.url == "postgresql://app@db.internal:5432/app"
    assert config.redis.url == "redis://127.0.0.1:7000/1"
    assert config.cat_facts.url == "http://127.0.0.1:5000/fact"
    assert config.honeybadger.api_key == "k"
    assert config.honeybadger.environment == "staging"
    assert config.honeybadger.endpoint == "http://127.0.0.1:5001"
    assert config.internal.username == "ops"
    assert config.internal.password == "pw"
    assert config.queue.embedded_worker is False


@pytest.mark.parametrize(
    ("yaml_text", "environ", "expected"),
    [
        ("server:\n  port: 70000\n", {}, "server.port: 70000 is greater than the maximum of 65535"),
        ("server:\n  port: eighty\n", {}, "server.port: 'eighty' is not of type 'integer'"),
        ("", {"SERVER_PORT": "abc"}, "server.port: 'abc' is not of type 'integer'"),
        ("server:\n  prot: 80\n", {}, "server: Additional properties are not allowed ('prot' was unexpected)"),
        ("nope: {}\n", {}, "Additional properties are not allowed ('nope' was unexpected)"),
        ("redis:\n  url: http://x\n", {}, "redis.url: 'http://x' does not match"),
        ("logging:\n  level: LOUD\n", {}, "logging.level: 'LOUD' is not one of"),
        ("", {"DATABASE_URL": "mysql://x/y"}, "database.url: 'mysql://x/y' does not match"),
        ("database:\n  pool_max_size: 0\n", {}, "database.pool_max_size: 0 is less than the minimum of 1"),
        ("database:\n  pool_min_size: 5\n  pool_max_size: 2\n", {}, "database.pool_min_size: must not be larger"),
        ("- a\n- b\n", {}, "<root>: must be a mapping"),
        ("server: [\n", {}, "not valid YAML"),
    ],
)
def test_bad_values_name_the_key(tmp_path, yaml_text, environ, expected):
    path = tmp_path / "config.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ=environ)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml", environ={})


def test_two_configs_live_in_one_process():
    a = build_config({"server": {"port": 1}})
    b = build_config({"server": {"port": 2}})
    assert (a.server.port, b.server.port) == (1, 2)
    assert isinstance(a, Config)
    with pytest.raises(AttributeError):
        a.server.port = 3  # frozen


def test_config_round_trips_through_plain_data():
    config = build_config({"queue": {"names": ["a", "b"]}})
    assert config.queue.names == ("a", "b")
    assert build_config(config.to_dict()) == config


def test_bad_config_stops_the_cli_with_one_line(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("server:\n  port: -1\n")
    result = subprocess.run(
        [sys.executable, "-m", "server", "--config", str(path), "routes"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "server.port" in lines[0] and "minimum" in lines[0]


def test_importing_the_package_opens_nothing(tmp_path):
    code = (
        "import signal, sys, threading, server\n"
        "assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, 'SIGTERM handler replaced'\n"
        "assert threading.active_count() == 1, threading.enumerate()\n"
        "assert 'honeybadger' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert list(tmp_path.iterdir()) == []  # no database, log or pid file appeared


# --- secrets and the circus endpoint (the host's security model) -------------------------------


def test_circus_control_defaults_to_a_unix_socket_beside_the_config(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("{}\n")
    assert load_config(path, environ={}).circus.endpoint == f"ipc://{tmp_path}/var/circus/control.sock"
    assert load_config(DEFAULT_CONFIG_PATH, environ={}).circus.endpoint == (
        f"ipc://{DEFAULT_CONFIG_PATH.parent}/var/circus/control.sock"
    )
    config = load_config(path, environ={"CIRCUS_ENDPOINT": "tcp://127.0.0.1:5555"})
    assert config.circus.endpoint == "tcp://127.0.0.1:5555"


def test_passwords_come_from_files_the_environment_names(tmp_path):
    (tmp_path / "redis_pw").write_text("s3cret-redis\n")
    (tmp_path / "internal_pw").write_text("s3cret-internal\n")
    path = tmp_path / "config.yaml"
    path.write_text("redis:\n  url: redis://127.0.0.1:7000/0\n")
    config = load_config(path, environ={"REDIS_PASSWORD_FILE": "redis_pw", "INTERNAL_PASSWORD_FILE": "internal_pw"})
    assert config.redis.password == "s3cret-redis"
    assert config.redis.effective_password() == "s3cret-redis"
    assert config.internal.password == "s3cret-internal"
    # A value in the environment wins over the file, and a password in the URL over both.
    config = load_config(path, environ={"REDIS_PASSWORD": "direct", "REDIS_PASSWORD_FILE": "redis_pw"})
    assert config.redis.password == "direct"
    config = load_config(path, environ={"REDIS_URL": "redis://:in%40url@127.0.0.1:7000/0", "REDIS_PASSWORD": "x"})
    assert config.redis.effective_password() == "in@url"


def test_an_unreadable_password_file_is_one_clear_line(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("{}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={"REDIS_PASSWORD_FILE": "missing"})
    assert str(info.value) == f"{path}: redis.password_file: cannot read {tmp_path}/missing: No such file or directory"


def test_the_launcher_says_what_a_tcp_control_endpoint_exposes(tmp_path):
    from server.supervision import check_endpoint, pubsub_endpoint

    assert check_endpoint(f"ipc://{tmp_path}/control.sock") is None
    assert pubsub_endpoint(f"ipc://{tmp_path}/control.sock") == f"ipc://{tmp_path}/pubsub.sock"
    assert pubsub_endpoint("tcp://127.0.0.1:5555") == "tcp://127.0.0.1:5556"
    assert "every local user can control circus" in check_endpoint("tcp://127.0.0.1:5555")
    assert "reachable from other hosts" in check_endpoint("tcp://0.0.0.0:5555")
    with pytest.raises(ValueError, match="longer than a unix socket allows"):
        check_endpoint("ipc:///" + "x" * 120 + "/control.sock")


def test_every_circus_log_rotates_by_size():
    import configparser

    from server.config import PROJECT_ROOT

    ini = configparser.ConfigParser(interpolation=None)
    ini.read(PROJECT_ROOT / "circus.ini")
    watchers = [name for name in ini.sections() if name.startswith("watcher:")]
    assert watchers
    for name in watchers:
        for stream in ("stdout_stream", "stderr_stream"):
            assert ini[name][f"{stream}.class"] == "FileStream", name
            assert int(ini[name][f"{stream}.max_bytes"]) > 0 and int(ini[name][f"{stream}.backup_count"]) > 0, name
    assert ini["circus"]["umask"] == "077"
    assert ini["circus"]["multicast_endpoint"] == ""
