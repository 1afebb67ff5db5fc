"""Settings: precedence of CLI, environment and TOML file; one-line errors naming the value."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from vimkit.config import SettingsError, load_settings


def test_defaults() -> None:
    settings = load_settings()
    assert settings.host == "127.0.0.1" and settings.port == 8700 and settings.driver == "sim"
    assert settings.effective_database_url.startswith("sqlite:///")


def test_cli_beats_environment_beats_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "vimkit.toml"
    config.write_text('[vimkit]\nport = 9001\npage_size = 50\nlog_level = "debug"\n')
    monkeypatch.setenv("VIMKIT_PAGE_SIZE", "70")
    settings = load_settings(config=config, port=9100)
    assert settings.port == 9100 and settings.page_size == 70 and settings.log_level == "debug"


def test_config_from_environment_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "vimkit.toml"
    config.write_text("page-size = 7\n")
    monkeypatch.setenv("VIMKIT_CONFIG", str(config))
    assert load_settings().page_size == 7


@pytest.mark.parametrize(
    "overrides,env,name",
    [
        ({"port": 70000}, {}, "port"),
        ({}, {"VIMKIT_PAGE_SIZE": "lots"}, "page_size"),
        ({"driver": "vmware"}, {}, "driver"),
        ({"database_url": "mysql://x"}, {}, "database_url"),
    ],
)
def test_bad_values_name_the_setting(overrides, env, name, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SettingsError) as caught:
        load_settings(**overrides)
    message = str(caught.value)
    assert f"'{name}'" in message and "\n" not in message


def test_bad_config_files(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    with pytest.raises(SettingsError, match="'config'"):
        load_settings(config=missing)
    broken = tmp_path / "broken.toml"
    broken.write_text("port = \n")
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings(config=broken)
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("colour = 'red'\n")
    with pytest.raises(SettingsError, match="'colour'"):
        load_settings(config=unknown)


def test_serve_stops_with_one_line_on_a_bad_value(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "vimkit.cli.main", "serve", "--port", "0", "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "'port'" in lines[0], result.stderr


def test_fastapi_native_telemetry_is_off_unless_asked_for(tmp_path: Path) -> None:
    from fastapi import FastAPI

    from vimkit.app import _telemetry_options
    from vimkit.config import Settings

    if not _telemetry_options(Settings(data_dir=tmp_path)):
        pytest.skip("this FastAPI has no native telemetry")
    for wanted in (False, True):
        options = _telemetry_options(Settings(data_dir=tmp_path, otel_telemetry=wanted))
        config = FastAPI(**options)._telemetry  # type: ignore[attr-defined]
        assert (config["tracing"], config["metrics"], config["logs"]) == (wanted, wanted, wanted)
