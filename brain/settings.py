"""Settings, read once from `DESKMATE_*` variables and an optional TOML file.

Environment variables win over the file (`DESKMATE_CONFIG` names it; its keys are the
variable names without the prefix, lower-case: `redis_url = "redis://..."`). A missing
or malformed value raises `SettingsError` naming the variable.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import date
from pathlib import Path
from typing import Any

from brain.answering.grounded import QUOTE_OVER_WORDS
from brain.answering.model_loading import DEFAULT_MODEL, starter_adapter
from brain.handoff.hours import BusinessHours, parse_holidays
from brain.keys import cluster_prefix
from brain.prompt import PASSAGES
from brain.redis_server import (
    CLUSTER_SCHEMES,
    SENTINEL_SCHEME,
    describe_url,
    is_cluster_url,
    parse_url,
)

PREFIX = "DESKMATE_"
SAMPLE_FAQ = Path(__file__).resolve().parent.parent / "bots" / "sample" / "faq.jsonl"
NO_ADAPTER = "none"
NO_REPEAT_NGRAM = 3  # see DESKMATE_NO_REPEAT_NGRAM


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


class Secret(str):
    """A string that never shows its value in repr/str formatting of settings."""

    def __repr__(self) -> str:
        return "Secret('***')" if self else "Secret('')"


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "deskmate"


def _positive_int(value: str) -> int:
    if not value.isdigit() or int(value) <= 0:
        raise ValueError("must be a positive integer")
    return int(value)


def _non_negative_int(value: str) -> int:
    if not value.isdigit():
        raise ValueError("must be a whole number, 0 or more")
    return int(value)


def _bool(value: str) -> bool:
    lowered = value.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false (1/0, yes/no, on/off)")


def _seconds(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = 0.0
    if not number > 0:
        raise ValueError("must be a positive number of seconds")
    return number


def _non_negative_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not number >= 0:
        raise ValueError("must be a number of seconds, 0 or more")
    return number


def _choice(*options: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return value

    return parse


def _host_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("must be host:port, e.g. 127.0.0.1:8080")
    return value


def _paths(value: str) -> tuple[Path, ...]:
    parts = [p.strip() for chunk in value.split(os.pathsep) for p in chunk.split(",")]
    paths = tuple(Path(p).expanduser() for p in parts if p)
    if not paths:
        raise ValueError("must name at least one FAQ file")
    return paths


def _fraction(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not 0.0 <= number <= 1.0:
        raise ValueError("must be a number between 0 and 1")
    return number


def _url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError("must be an http:// or https:// URL")
    return value.rstrip("/")


def _webhook_secret(value: str) -> Secret:
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", value):
        raise ValueError("must be 1-256 characters of A-Z, a-z, 0-9, _ and -")
    return Secret(value)


def _names(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _redis_url(value: str) -> str:
    scheme = value.partition("://")[0]
    if scheme in (*CLUSTER_SCHEMES, SENTINEL_SCHEME):
        parse_url(value)  # raises ValueError saying what is wrong
    elif not value.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(
            "must be a redis://, rediss://, unix://, redis+cluster:// or redis+sentinel:// URL"
        )
    return value


def _business_hours(value: str) -> str:
    BusinessHours.parse(value)  # raises ValueError saying what is wrong
    return value


def _holidays(value: str) -> tuple[date, ...]:
    return parse_holidays(value)


def _setting(
    help: str,
    parse: Callable[[str], Any] = str,
    default: Any = None,
    *,
    secret: bool = False,
    shown: Callable[[str], str] = str,
) -> Any:
    """A setting's field; `shown` is how a malformed value is quoted in the error."""
    return field(
        default=default,
        metadata={"help": help, "parse": parse, "secret": secret, "shown": shown},
    )


@dataclass(frozen=True)
class Settings:
    """Every setting deskmate reads. Build with `Settings.load()`."""

    data_dir: Path = _setting(
        "index, model cache, registry and embedded Redis files", Path, _default_data_dir()
    )
    redis_url: str | None = _setting(
        "Redis server URL; unset = an embedded Redis started in the data directory",
        _redis_url,
        shown=describe_url,  # a URL may carry a password
    )
    redis_prefix: str = _setting(
        "prefix of every Redis key; on Redis Cluster it gets a hash tag ({dm}:) unless it has one",
        str,
        "dm:",
    )
    redis_wait_replicas: int | None = _setting(
        "replicas that must confirm each step of the message flow (Redis WAIT) so a "
        "failover loses none; unset = 1 with a redis+sentinel:// URL, else 0",
        _non_negative_int,
    )
    redis_max_connections: int = _setting(
        "most Redis connections one process opens (0 = sized from `deskmate serve`'s "
        "--workers and --senders: 2 per worker and sender + 32; 64 for other commands)",
        _non_negative_int,
        0,
    )
    redis_pool_timeout: float = _setting(
        "seconds a Redis command waits for a free connection when all are busy, before "
        "it fails as if Redis were down (the http channel then answers 503)",
        _seconds,
        5.0,
    )
    faq: tuple[Path, ...] | None = _setting(
        "FAQ files, folders and documents (JSONL/CSV/Markdown/HTML/PDF/docx/text), separated "
        "by commas; unset = the index last "
        "imported with `deskmate faq import`, or the bundled sample FAQ",
        _paths,
    )
    embedding_model: str = _setting(
        "sentence-transformers model id or path",
        str,
        "sentence-transformers/all-MiniLM-L6-v2",
    )
    faq_learn: bool = _setting(
        "fine-tune the embedding model on the FAQ's alternate phrasings when `deskmate faq "
        "import` builds the index (kept only if held-out phrasings are found better)",
        _bool,
        True,
    )
    model_backend: str = _setting(
        "answer backend: hf (in-process model, the default) | openai | quote",
        _choice("hf", "openai", "quote"),
        "hf",
    )
    model: str = _setting(
        "dialogue model: Hugging Face id or local path",
        str,
        DEFAULT_MODEL,
    )
    model_device: str = _setting(
        "where the hf model runs: auto (GPU if any) | cpu | cuda",
        _choice("auto", "cpu", "cuda"),
        "auto",
    )
    model_engine: str = _setting(
        "how the hf model decodes on CPU: auto | lean (continuous batching, Llama models) "
        "| generate (transformers' generate)",
        _choice("auto", "lean", "generate"),
        "auto",
    )
    model_int8: bool = _setting(
        "int8 dynamic quantisation of the hf model's linear layers on CPU", _bool, True
    )
    model_threads: int = _setting(
        "CPU threads for the hf model (0 = torch's default)", _non_negative_int, 0
    )
    model_adapter: Path | None = _setting(
        "LoRA adapter directory (peft format) merged into the hf model; unset = the bundled "
        f"starter adapter with the default DESKMATE_MODEL; `{NO_ADAPTER}` = no adapter",
        Path,
    )
    max_new_tokens: int = _setting("longest generated answer, in tokens", _positive_int, 96)
    no_repeat_ngram: int = _setting(
        "a generated answer never repeats a run of this many tokens of its own (0 = off)",
        _non_negative_int,
        NO_REPEAT_NGRAM,
    )
    context_tokens: int = _setting(
        "prompt budget in tokens (history, then passages give way)", _positive_int, 2048
    )
    batch_max: int = _setting(
        "most prompts in one batched generate call (lean engine: conversations decoding together)",
        _positive_int,
        16,
    )
    batch_window_ms: int = _setting(
        "milliseconds to gather concurrent prompts into one batch", _non_negative_int, 10
    )
    openai_url: str | None = _setting(
        "OpenAI-compatible server base URL (vLLM, TGI, llama.cpp server)", _url
    )
    openai_api_key: Secret = _setting(
        "API key for the OpenAI-compatible server", Secret, Secret(""), secret=True
    )
    openai_timeout: float = _setting(
        "seconds before a model server request is given up (then retried)", _seconds, 30.0
    )
    openai_attempts: int = _setting(
        "attempts per model server request (timeouts, 429, 5xx)", _positive_int, 3
    )
    top_k: int = _setting("FAQ entries retrieved per question", _positive_int, 5)
    answer_passages: int = _setting(
        "FAQ entries a generated answer is written from (the best of those retrieved)",
        _positive_int,
        PASSAGES,
    )
    quote_over_words: int = _setting(
        "a best entry that is a FAQ answer or document section longer than this many words "
        "is quoted whole, not reworded by the model (0 = the model rewords any)",
        _non_negative_int,
        QUOTE_OVER_WORDS,
    )
    answer_threshold: float | None = _setting(
        "override the calibrated answer threshold (0..1)", _fraction
    )
    clarify_threshold: float | None = _setting(
        "override the calibrated clarify threshold (0..1)", _fraction
    )
    history_turns: int = _setting("turns of history kept per conversation", _positive_int, 20)
    conversation_ttl: int = _setting(
        "seconds an idle conversation is remembered", _positive_int, 7 * 24 * 3600
    )
    retention_days: int = _setting(
        "days customers' messages are kept in the transcripts stream, undelivered replies "
        "and content gaps (deskmate serve trims hourly; histories also expire no later); "
        "0 = kept until the stream's cap of about 5,000,000 entries",
        _non_negative_int,
        365,
    )
    max_message_chars: int = _setting(
        "longer messages are answered on their first this-many characters", _positive_int, 4000
    )
    bot_name: str = _setting("name the bot introduces itself with", str, "deskmate")
    http_addr: str = _setting("host:port of the web server", _host_port, "127.0.0.1:8080")
    http_callback_url: str | None = _setting(
        "http channel: replies are POSTed as JSON to this URL; set = the channel runs", _url
    )
    http_token: Secret = _setting(
        "http channel: bearer token required on POST /v1/messages and sent on callbacks",
        Secret,
        Secret(""),
        secret=True,
    )
    metrics_token: Secret = _setting(
        "bearer token /metrics requires (unset = /metrics is open, bind it privately)",
        Secret,
        Secret(""),
        secret=True,
    )
    dashboard_password_hash: Secret = _setting(
        "staff dashboard: the password's hash from `deskmate dashboard-password` "
        "(unset = /dashboard is off)",
        Secret,
        Secret(""),
        secret=True,
    )
    dashboard_secret: Secret = _setting(
        "staff dashboard: key signing session cookies (unset = one kept in Redis)",
        Secret,
        Secret(""),
        secret=True,
    )
    dashboard_session: float = _setting(
        "staff dashboard: seconds a login lasts", _seconds, 8 * 3600.0
    )
    resolved_window: float = _setting(
        "report: seconds after an answer in which a handoff, a 👎 or the same question "
        "again means the bot did not resolve it",
        _seconds,
        600.0,
    )
    fold_seconds: float = _setting(
        "how often `deskmate serve` folds new transcripts into the report's day counters, so "
        "the dashboard never has a backlog to fold on a request (0 = only when a page or "
        "`deskmate report` asks)",
        _non_negative_float,
        60.0,
    )
    reclaim_idle: float = _setting(
        "seconds a message may sit with a silent worker or sender before another takes it",
        _seconds,
        60.0,
    )
    lock_timeout: float = _setting(
        "seconds a dead worker's conversation lock outlives it (renewed while alive)",
        _seconds,
        10.0,
    )
    stream_replies: bool = _setting(
        "show a generated answer while it is written (Telegram: a message edited as the "
        "words come; Slack: the placeholder updated), where the answer backend streams (hf "
        "on the lean engine); the final reply replaces it",
        _bool,
        True,
    )
    answer_delay: float = _setting(
        "testing aid: seconds added to every generated answer (simulates a slow model)",
        _non_negative_float,
        0.0,
    )
    telegram_token: Secret = _setting("Telegram bot token", Secret, Secret(""), secret=True)
    telegram_api_url: str = _setting("Telegram Bot API base URL", _url, "https://api.telegram.org")
    telegram_webhook_url: str | None = _setting(
        "public HTTPS URL Telegram posts updates to (webhook mode, served on the web "
        "server at this URL's path); unset = long polling",
        _url,
    )
    telegram_webhook_secret: Secret = _setting(
        "secret Telegram sends with every webhook update (1-256 of A-Z a-z 0-9 _ -); "
        "required in webhook mode",
        _webhook_secret,
        Secret(""),
        secret=True,
    )
    slack_bot_token: Secret = _setting("Slack bot token (xoxb-)", Secret, Secret(""), secret=True)
    slack_app_token: Secret = _setting(
        "Slack app-level token (xapp-) for Socket Mode", Secret, Secret(""), secret=True
    )
    slack_signing_secret: Secret = _setting(
        "Slack signing secret (HTTP mode)", Secret, Secret(""), secret=True
    )
    slack_api_url: str = _setting("Slack Web API base URL", _url, "https://slack.com/api")
    slack_staff_users: tuple[str, ...] = _setting(
        "Slack user ids allowed to run /deskmate staff commands, separated by commas", _names, ()
    )
    slack_staff_group: str = _setting(
        "Slack user-group id whose members may run /deskmate staff commands", str, ""
    )
    slack_staff_channel: str = _setting(
        "Slack channel id where handoffs are posted for the support team (agents answer in "
        "the thread; needs DESKMATE_SLACK_BOT_TOKEN); unset = handoffs are not posted",
        str,
        "",
    )
    business_hours: str = _setting(
        "when the support team answers handoffs, e.g. `Mon-Fri 09:00-18:00 Europe/Berlin` "
        "(several spans: `Mon-Fri 09:00-17:00; Sat 10:00-14:00 Europe/Paris`); outside them "
        "customers are told when the team is back; unset = always open",
        _business_hours,
        "",
    )
    holidays: tuple[date, ...] = _setting(
        "dates the support team is away all day, in the business hours' time zone, "
        "separated by commas (`2026-12-25,2026-12-26`)",
        _holidays,
        (),
    )
    handoff_oncall_group: str = _setting(
        "Slack user-group id mentioned when an escalation stays unclaimed "
        "(DESKMATE_HANDOFF_ONCALL_SECONDS); unset = the reminder mentions @here",
        str,
        "",
    )
    handoff_oncall_seconds: float = _setting(
        "seconds an escalation may stay unclaimed within business hours before it is "
        "re-posted for the on-call group (0 = never)",
        _non_negative_float,
        900.0,
    )
    handoff_idle_seconds: float = _setting(
        "seconds a claimed conversation may go without a message from either side before "
        "it returns to the bot, which tells the customer (0 = never)",
        _non_negative_float,
        4 * 3600.0,
    )
    faq_watch_seconds: float = _setting(
        "how often a running process checks whether `faq reload` published a new FAQ index",
        _seconds,
        5.0,
    )
    sync_seconds: float = _setting(
        "how often `deskmate serve` re-reads the imported folders, documents and web pages "
        "(unchanged pages are not re-embedded; 0 = only on `deskmate faq sync`)",
        _non_negative_float,
        3600.0,
    )
    document_max_mb: float = _setting(
        "largest document or web page imported, in MB (bigger ones are skipped and reported)",
        _seconds,
        50.0,
    )
    web_delay: float = _setting(
        "seconds between two requests to the same web host when importing pages (robots.txt "
        "Crawl-delay wins if longer)",
        _non_negative_float,
        1.0,
    )
    web_timeout: float = _setting(
        "seconds before fetching a web page is given up (it is reported, its last import kept)",
        _seconds,
        20.0,
    )
    model_watch_seconds: float = _setting(
        "how often a running process checks which model version to serve",
        _seconds,
        1.0,
    )
    log_level: str = _setting(
        "DEBUG | INFO | WARNING | ERROR", _choice("DEBUG", "INFO", "WARNING", "ERROR"), "WARNING"
    )

    def __post_init__(self) -> None:
        if self.slack_staff_channel and not self.slack_bot_token:
            raise SettingsError(
                "DESKMATE_SLACK_STAFF_CHANNEL is set but DESKMATE_SLACK_BOT_TOKEN is not: "
                "handoffs are posted to Slack with the bot token"
            )
        if is_cluster_url(self.redis_url):
            # One hash tag for every key: the flow's atomic steps span several keys.
            try:
                object.__setattr__(self, "redis_prefix", cluster_prefix(self.redis_prefix))
            except ValueError as exc:
                raise SettingsError(
                    f"{PREFIX}REDIS_PREFIX {exc} (got {self.redis_prefix!r})"
                ) from None
            if self.redis_wait_replicas:
                raise SettingsError(
                    f"{PREFIX}REDIS_WAIT_REPLICAS is not supported with a redis+cluster:// "
                    f"{PREFIX}REDIS_URL"
                )

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the TOML file named by DESKMATE_CONFIG (if any), then the environment."""
        environ = os.environ if environ is None else environ
        raw: dict[str, tuple[str, str]] = {}  # field -> (where, text)
        config = environ.get(PREFIX + "CONFIG", "").strip()
        if config:
            raw.update(_read_toml(Path(config)))
        for spec in fields(cls):
            name = PREFIX + spec.name.upper()
            if name in environ and environ[name].strip() != "":
                raw[spec.name] = (name, environ[name].strip())
        values: dict[str, Any] = {}
        for spec in fields(cls):
            if spec.name not in raw:
                continue
            where, text = raw[spec.name]
            try:
                values[spec.name] = spec.metadata["parse"](text)
            except ValueError as exc:
                shown = "***" if spec.metadata["secret"] else repr(spec.metadata["shown"](text))
                raise SettingsError(f"{where} {exc} (got {shown})") from None
        return cls(**values)

    def secrets(self) -> list[str]:
        return [str(getattr(self, f.name)) for f in fields(self) if f.metadata["secret"]]

    def describe(self) -> list[tuple[str, str, str]]:
        """(variable, effective value with secrets masked, help) for every setting."""
        rows = []
        for spec in fields(self):
            value = getattr(self, spec.name)
            if spec.metadata["secret"]:
                shown = "*** (set)" if value else "(unset)"
            elif value is None:
                shown = "(unset)"
            elif isinstance(value, tuple):
                shown = ",".join(str(v) for v in value)
            else:
                shown = _without_credentials(str(value))
            rows.append((PREFIX + spec.name.upper(), shown, spec.metadata["help"]))
        return rows

    @property
    def history_ttl(self) -> int:
        """Seconds an idle history is kept: DESKMATE_CONVERSATION_TTL, never longer than
        DESKMATE_RETENTION_DAYS."""
        if not self.retention_days:
            return self.conversation_ttl
        return min(self.conversation_ttl, self.retention_days * 24 * 3600)

    @property
    def opening_hours(self) -> BusinessHours | None:
        """DESKMATE_BUSINESS_HOURS with DESKMATE_HOLIDAYS; None: always open."""
        if not self.business_hours:
            return None  # holidays alone change nothing: always open
        hours = BusinessHours.parse(self.business_hours)
        return replace(hours, holidays=frozenset(self.holidays))

    @property
    def index_dir(self) -> Path:
        return self.data_dir / "index"

    @property
    def adapter(self) -> Path | None:
        """The adapter the hf backend serves as the `base` version (None: the bare model)."""
        if self.model_adapter is None:
            return starter_adapter() if self.model == DEFAULT_MODEL else None
        return None if str(self.model_adapter).lower() == NO_ADAPTER else self.model_adapter

    @property
    def registry_dir(self) -> Path:
        """Where fine-tuned model versions are registered (see brain.answering.registry)."""
        return self.data_dir / "registry"

    @property
    def classifier_registry_dir(self) -> Path:
        """Where trained mood classifier versions are registered (see brain.mood)."""
        return self.data_dir / "classifiers"

    @property
    def retriever_registry_dir(self) -> Path:
        """Where embedders fine-tuned on the FAQ are registered (see bots.retrieval_models)."""
        return self.data_dir / "retrievers"

    @property
    def learn_cache_dir(self) -> Path:
        """Embedders learned from FAQ files, by content (retrieval.learning), for reuse."""
        return self.data_dir / "learned-embedders"


def _read_toml(path: Path) -> dict[str, tuple[str, str]]:
    where = f"{PREFIX}CONFIG file {path}"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SettingsError(f"{where}: cannot read ({exc.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{where}: not valid TOML ({exc})") from None
    known = {spec.name for spec in fields(Settings)}
    out = {}
    for key, value in data.items():
        if key not in known:
            raise SettingsError(f"{where}: unknown key {key!r} (known: {', '.join(sorted(known))})")
        if isinstance(value, list):
            value = ",".join(str(v) for v in value)
        out[key] = (f"{path}: key {key!r}", str(value))
    return out


def _without_credentials(value: str) -> str:
    """A URL's `user:password@` masked (a Redis or callback URL may carry a password);
    anything else unchanged."""
    scheme, sep, rest = value.partition("://")
    authority, slash, path = rest.partition("/")
    if not sep or "@" not in authority:
        return value
    return f"{scheme}://***@{authority.rpartition('@')[2]}{slash}{path}"
