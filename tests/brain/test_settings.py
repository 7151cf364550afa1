"""Settings: typed, from an injectable environ and TOML, errors that name the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from brain.settings import Settings, SettingsError


def test_defaults_need_no_configuration() -> None:
    settings = Settings.load({})
    assert settings.redis_url is None  # embedded Redis
    assert settings.model_backend in {"hf", "openai", "quote"}
    assert settings.http_addr == "127.0.0.1:8080"
    assert settings.redis_prefix == "dm:"


def test_environment_values_are_parsed(tmp_path: Path) -> None:
    settings = Settings.load(
        {
            "DESKMATE_DATA_DIR": str(tmp_path),
            "DESKMATE_REDIS_URL": "redis://localhost:6379/0",
            "DESKMATE_TOP_K": "7",
            "DESKMATE_FAQ": "a.jsonl,b.md",
            "DESKMATE_ANSWER_THRESHOLD": "0.6",
        }
    )
    assert settings.data_dir == tmp_path
    assert settings.top_k == 7
    assert settings.faq == (Path("a.jsonl"), Path("b.md"))
    assert settings.answer_threshold == 0.6


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("DESKMATE_TOP_K", "many", "DESKMATE_TOP_K must be a positive integer (got 'many')"),
        ("DESKMATE_TOP_K", "0", "DESKMATE_TOP_K must be a positive integer"),
        ("DESKMATE_MODEL_BACKEND", "gpt", "DESKMATE_MODEL_BACKEND must be one of hf, openai"),
        ("DESKMATE_REDIS_URL", "localhost:6379", "DESKMATE_REDIS_URL must be a redis://"),
        ("DESKMATE_REDIS_URL", "redis+cluster://h", "DESKMATE_REDIS_URL names 'h' where host"),
        ("DESKMATE_REDIS_URL", "redis+cluster://h:1/2", "DESKMATE_REDIS_URL names a database"),
        ("DESKMATE_REDIS_URL", "redis+sentinel://h:1", "DESKMATE_REDIS_URL must name the"),
        ("DESKMATE_REDIS_URL", "redis+sentinel://h:1/s/x", "DESKMATE_REDIS_URL must name the"),
        ("DESKMATE_HTTP_ADDR", "8080", "DESKMATE_HTTP_ADDR must be host:port"),
        ("DESKMATE_ANSWER_THRESHOLD", "1.5", "DESKMATE_ANSWER_THRESHOLD must be a number"),
        ("DESKMATE_TELEGRAM_API_URL", "api.telegram.org", "DESKMATE_TELEGRAM_API_URL must be"),
        ("DESKMATE_REDIS_MAX_CONNECTIONS", "-1", "DESKMATE_REDIS_MAX_CONNECTIONS must be"),
        ("DESKMATE_REDIS_POOL_TIMEOUT", "soon", "DESKMATE_REDIS_POOL_TIMEOUT must be"),
    ],
)
def test_malformed_values_name_the_variable(variable: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError) as error:
        Settings.load({variable: value})
    assert message in str(error.value)


def test_cluster_and_sentinel_urls() -> None:
    cluster = "redis+cluster://10.0.0.1:7000,10.0.0.2:7000"
    assert Settings.load({"DESKMATE_REDIS_URL": cluster}).redis_prefix == "{dm}:"
    with pytest.raises(SettingsError, match="DESKMATE_REDIS_PREFIX must be a name"):
        Settings.load({"DESKMATE_REDIS_URL": cluster, "DESKMATE_REDIS_PREFIX": ":"})
    with pytest.raises(SettingsError, match="DESKMATE_REDIS_WAIT_REPLICAS is not supported"):
        Settings.load({"DESKMATE_REDIS_URL": cluster, "DESKMATE_REDIS_WAIT_REPLICAS": "1"})
    sentinel = Settings.load({"DESKMATE_REDIS_URL": "redis+sentinel://h:26379,g:26379/main/2"})
    assert sentinel.redis_prefix == "dm:"  # standalone key shapes: Sentinel changes no key
    assert sentinel.redis_wait_replicas is None  # the client waits for one replica
    with pytest.raises(SettingsError) as error:
        Settings.load({"DESKMATE_REDIS_URL": "redis+sentinel://u:hunter2@h:1"})
    assert "hunter2" not in str(error.value)


def test_secrets_never_show(tmp_path: Path) -> None:
    token = "123456789:AAAbbbCCCdddEEEfffGGGhhhIIIjjjKKKlll"
    settings = Settings.load({"DESKMATE_TELEGRAM_TOKEN": token})
    assert settings.telegram_token == token
    assert token not in repr(settings)
    assert token not in str(settings.describe())
    assert token in settings.secrets()


def test_passwords_in_urls_never_show() -> None:
    settings = Settings.load(
        {
            "DESKMATE_REDIS_URL": "redis://default:hunter2@redis.internal:6379/0",
            "DESKMATE_HTTP_CALLBACK_URL": "https://bot:s3cret@example.test/hook?x=1",
        }
    )
    shown = dict((name, value) for name, value, _ in settings.describe())
    assert shown["DESKMATE_REDIS_URL"] == "redis://***@redis.internal:6379/0"
    assert shown["DESKMATE_HTTP_CALLBACK_URL"] == "https://***@example.test/hook?x=1"
    assert shown["DESKMATE_REDIS_PREFIX"] == "dm:"


def test_toml_file_with_environment_override(tmp_path: Path) -> None:
    config = tmp_path / "deskmate.toml"
    config.write_text('top_k = 3\nbot_name = "Northy"\nfaq = ["a.jsonl", "b.csv"]\n')
    settings = Settings.load({"DESKMATE_CONFIG": str(config), "DESKMATE_TOP_K": "9"})
    assert settings.top_k == 9  # the environment wins
    assert settings.bot_name == "Northy"
    assert settings.faq == (Path("a.jsonl"), Path("b.csv"))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("top_k = 'x'\n", "key 'top_k' must be a positive integer"),
        ("colour = 'blue'\n", "unknown key 'colour'"),
        ("top_k = \n", "not valid TOML"),
    ],
)
def test_broken_toml_names_file_and_key(tmp_path: Path, content: str, message: str) -> None:
    config = tmp_path / "deskmate.toml"
    config.write_text(content)
    with pytest.raises(SettingsError) as error:
        Settings.load({"DESKMATE_CONFIG": str(config)})
    assert str(config) in str(error.value)
    assert message in str(error.value)


def test_missing_toml_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"DESKMATE_CONFIG file .* cannot read"):
        Settings.load({"DESKMATE_CONFIG": str(tmp_path / "missing.toml")})


def test_the_adapter_setting_names_a_directory_none_or_the_starter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from brain.answering import model_loading

    assert Settings.load({"DESKMATE_MODEL_ADAPTER": str(tmp_path)}).adapter == tmp_path
    assert Settings.load({"DESKMATE_MODEL_ADAPTER": "none"}).adapter is None
    starter = tmp_path / "starter"
    starter.mkdir()
    monkeypatch.setattr(model_loading, "STARTER_ADAPTER", starter)
    assert Settings.load({}).adapter is None  # not an adapter: no adapter_config.json
    (starter / "adapter_config.json").write_text("{}")
    assert Settings.load({}).adapter == starter  # unset: the bundled starter adapter
    assert Settings.load({"DESKMATE_MODEL_ADAPTER": "NONE"}).adapter is None
    other_model = Settings.load({"DESKMATE_MODEL": "org/other-model"})
    assert other_model.adapter is None  # the starter was trained for the default model only
