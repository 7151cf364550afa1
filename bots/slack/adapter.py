"""The Slack channel: employees ask deskmate in Slack, and staff run it from there.

Composes slack-bolt's `AsyncApp` (it is not subclassed). It receives in Socket Mode when
DESKMATE_SLACK_APP_TOKEN is set, otherwise over HTTP (Events API) through `web_routes()`
on deskmate's web server, where bolt verifies every request's signature with
DESKMATE_SLACK_SIGNING_SECRET (a bad or stale one is answered 401 and not processed).

Direct messages are all answered; in channels, messages that mention the bot, answered in
the thread of the question. The conversation id is the channel, plus the thread's ts when
there is a thread ("C123:1700000000.000100"), so follow-ups in a thread keep their context.

Bolt acknowledges every event at once; the answer comes after: a placeholder is posted
right away and `send` replaces it (chat.update) with the answer. The placeholder's ts is
kept in Redis, so whichever process ends up sending the reply can find it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self, TypeVar

import aiohttp
import redis.asyncio as aioredis
from aiohttp import web
from redis.exceptions import RedisError
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from bots.slack.errors import delivering
from bots.slack.render import (
    CHOICE_ACTION_PATTERN,
    FEEDBACK_ACTION_PATTERN,
    FEEDBACK_ACTIONS,
    PLACEHOLDER,
    QUICK_ACTION_PATTERN,
    acknowledge_choice,
    acknowledge_feedback,
    acknowledge_quick_reply,
    escape,
    plain_text,
    render_reply,
    to_mrkdwn,
)
from bots.slack.staff_desk import StaffDesk
from bots.staff import StaffCommands
from brain.channel import FeedbackHandler, Handler
from brain.keys import PLACEHOLDER_TTL_SECONDS, SEEN_TTL_SECONDS, RedisKeys
from brain.settings import Settings, SettingsError
from brain.types import Feedback, Inbound, Reply

log = logging.getLogger(__name__)
T = TypeVar("T")

SLASH_COMMAND = "/deskmate"
EVENTS_PATH = "/slack/events"
RATE_LIMIT_RETRIES = 3
MAX_IN_FLIGHT = 32  # messages handled at once; Slack is acked at once, the rest wait here
APOLOGY = "Sorry, something went wrong answering that. Please try again in a moment."
REFUSAL = (
    "Sorry, `/deskmate` commands are for the support team. "
    "Ask your question by mentioning me or in a direct message instead."
)


class SlackStartError(SettingsError):
    """Slack cannot be served with these settings; the message names the variable."""


def conversation_id(channel: str, thread_ts: str | None) -> str:
    """The conversation a Slack message belongs to: its channel, plus its thread if any."""
    return f"{channel}:{thread_ts}" if thread_ts else channel


def parse_conversation(conversation: str) -> tuple[str, str | None]:
    """(channel, thread ts or None) back from a conversation id."""
    channel, _, thread_ts = conversation.partition(":")
    return channel, thread_ts or None


def to_inbound(
    event: Mapping[str, Any], bot_user_id: str, staff_users: frozenset[str] = frozenset()
) -> Inbound | None:
    """An Events API `message` / `app_mention` event as an `Inbound`, or None for what
    deskmate does not answer: its own and other bots' messages, edits, deletions, joins
    and other subtypes, channel messages without a mention (those arrive as app_mention)."""
    kind = event.get("type")
    user, channel, ts = event.get("user"), event.get("channel"), event.get("ts")
    if kind not in ("message", "app_mention") or event.get("subtype"):
        return None
    if event.get("bot_id") or event.get("bot_profile"):
        return None
    if not (isinstance(user, str) and isinstance(channel, str) and isinstance(ts, str)):
        return None
    if not user or user == bot_user_id:
        return None
    thread_ts = event.get("thread_ts") if isinstance(event.get("thread_ts"), str) else None
    direct = kind == "message"
    if direct and event.get("channel_type") != "im":
        return None  # channel messages count only when they mention the bot
    if not direct and channel.startswith("D"):
        return None  # a mention in a DM also arrives as a plain message; answer that one
    text = event.get("text")
    try:
        sent = float(ts)
    except ValueError:
        return None
    return Inbound(
        channel="slack",
        conversation_id=conversation_id(channel, thread_ts if direct else thread_ts or ts),
        user_id=user,
        message_id=ts,
        text=plain_text(text if isinstance(text, str) else "", bot_user_id),
        time=sent,
        is_staff=user in staff_users,
        is_group=not direct,
        mentioned=not direct,
    ).encodable()  # a cut emoji's lone surrogate cannot be queued


@dataclass(frozen=True, slots=True)
class _Press:
    """A button press (block_actions) on one of deskmate's messages."""

    action: Mapping[str, Any]  # the first action: action_id, value, action_ts
    channel: str
    user: str
    ts: str  # the message the button is on
    thread_ts: str | None

    @classmethod
    def read(cls, body: Mapping[str, Any]) -> _Press | None:
        actions = body.get("actions") or [{}]
        message = body.get("message") or {}
        channel = (body.get("channel") or {}).get("id")
        user = (body.get("user") or {}).get("id")
        if not channel or not user or not message.get("ts"):
            return None
        return cls(actions[0], str(channel), str(user), message["ts"], message.get("thread_ts"))

    @property
    def action_id(self) -> str:
        return str(self.action.get("action_id", ""))

    def as_message(self, kind: str, text: str) -> Inbound:
        """The press as the customer sending `text` in the conversation it was made in."""
        direct = self.channel.startswith("D")
        return Inbound(
            channel="slack",
            conversation_id=conversation_id(self.channel, self.thread_ts),
            user_id=self.user,
            message_id=f"{kind}-{self.action.get('action_ts') or self.ts}",
            text=text,
            time=time.time(),
            is_group=not direct,
            mentioned=not direct,
        )


def to_feedback(body: Mapping[str, Any]) -> Feedback | None:
    """A 👍/👎 press (block_actions) on one of deskmate's answers as a `Feedback`."""
    press = _Press.read(body)
    rating = FEEDBACK_ACTIONS.get(press.action_id) if press else None
    if press is None or rating is None:
        return None
    return Feedback(
        channel="slack",
        conversation_id=conversation_id(press.channel, press.thread_ts),
        user_id=press.user,
        message_id=press.ts,
        rating="up" if rating == "up" else "down",
    )


def to_choice(body: Mapping[str, Any]) -> Inbound | None:
    """A press on a clarifying question's option (block_actions) as the customer's reply
    with its number, in the conversation the question was asked in."""
    press = _Press.read(body)
    picked = CHOICE_ACTION_PATTERN.match(press.action_id) if press else None
    if press is None or picked is None:
        return None
    return press.as_message("pick", picked[1])


def to_quick_reply(body: Mapping[str, Any]) -> Inbound | None:
    """A press on a quick reply ("Back to the bot", 👍 / 👎) as the customer sending its
    text, in the conversation the buttons were offered in."""
    press = _Press.read(body)
    if press is None or QUICK_ACTION_PATTERN.match(press.action_id) is None:
        return None
    said = press.action.get("value")
    if not isinstance(said, str) or not said:
        return None
    return press.as_message("say", said)


def check_settings(settings: Settings) -> None:
    """Fail before anything starts when Slack cannot be served with these settings."""
    if not settings.slack_bot_token:
        raise SlackStartError("DESKMATE_SLACK_BOT_TOKEN is not set (the bot token, xoxb-...)")
    if not settings.slack_app_token and not settings.slack_signing_secret:
        raise SlackStartError(
            "set DESKMATE_SLACK_APP_TOKEN for Socket Mode, or DESKMATE_SLACK_SIGNING_SECRET "
            "to receive Slack events over HTTP"
        )


class SlackAdapter:
    """The Slack channel (see the module docstring). Enter it to check the bot token
    (auth.test) and, in Socket Mode, to connect."""

    channel: ClassVar[str] = "slack"

    def __init__(
        self,
        settings: Settings,
        on_message: Handler,
        on_feedback: FeedbackHandler,
        *,
        redis: aioredis.Redis,
        staff: StaffCommands | None = None,
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        check_settings(settings)
        self.socket_mode = bool(settings.slack_app_token)
        self.settings = settings
        self.on_message = on_message
        self.on_feedback = on_feedback
        self.redis = redis
        self.prefix = settings.redis_prefix
        self.keys = RedisKeys(settings.redis_prefix)
        self.staff = staff
        self.staff_users = frozenset(settings.slack_staff_users)
        self.bot_user_id = ""
        self.client = AsyncWebClient(
            token=str(settings.slack_bot_token),
            base_url=settings.slack_api_url + "/",
            retry_handlers=[
                AsyncConnectionErrorRetryHandler(),
                AsyncRateLimitErrorRetryHandler(max_retry_count=RATE_LIMIT_RETRIES),
            ],
        )
        # Partial answers: no retries, a 429 skips showing (brain.flow.partials).
        self._partial_client = AsyncWebClient(
            token=str(settings.slack_bot_token),
            base_url=settings.slack_api_url + "/",
            retry_handlers=[],
            timeout=3,
        )
        self.app = AsyncApp(
            name="deskmate",
            client=self.client,
            signing_secret=str(settings.slack_signing_secret),
        )
        self.desk: StaffDesk | None = None
        if settings.slack_staff_channel:
            # Registered first: bolt runs the first matching listener, so messages in the
            # staff channel never reach `_on_event` (and are never answered as questions).
            self.desk = StaffDesk(settings, self.client, redis, on_message)
            self.desk.register(self.app)
        self.app.event("message")(self._on_event)
        self.app.event("app_mention")(self._on_event)
        self.app.action(FEEDBACK_ACTION_PATTERN)(self._on_feedback_action)
        self.app.action(CHOICE_ACTION_PATTERN)(self._on_choice_action)
        self.app.action(QUICK_ACTION_PATTERN)(self._on_quick_action)
        self.app.command(SLASH_COMMAND)(self._on_command)
        self._socket: AsyncSocketModeHandler | None = None
        # Bolt runs every acked event as its own task; a burst must not open one Redis
        # connection and one model call per message all at once.
        self._in_flight = asyncio.Semaphore(max_in_flight)

    # -- lifecycle ------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        try:
            auth = await self.client.auth_test()
        except SlackApiError as exc:
            raise SlackStartError(
                f"Slack rejected DESKMATE_SLACK_BOT_TOKEN ({exc.response.get('error')}); "
                "copy the Bot User OAuth Token (xoxb-...) from the app's OAuth & Permissions page"
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise SlackStartError(
                f"cannot reach Slack at DESKMATE_SLACK_API_URL={self.settings.slack_api_url}: {exc}"
            ) from None
        self.bot_user_id = str(auth["user_id"])
        if self.desk is not None:
            self.desk.bot_user_id = self.bot_user_id
        log.info("slack: signed in as %s (%s)", auth.get("user"), self.bot_user_id)
        if self.socket_mode:
            app_token = str(self.settings.slack_app_token)
            # The socket client retries a rejected token forever; ask once here to fail fast.
            try:
                opened = await self.client.apps_connections_open(app_token=app_token)
            except SlackApiError as exc:
                raise SlackStartError(
                    f"Slack rejected DESKMATE_SLACK_APP_TOKEN ({exc.response.get('error')}); "
                    "it is the app-level token (xapp-...) with the connections:write scope"
                ) from None
            self._socket = AsyncSocketModeHandler(self.app, app_token)
            self._socket.client.wss_uri = str(opened["url"])
            await self._socket.connect_async()  # type: ignore[no-untyped-call]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._socket is not None:
            await self._socket.close_async()  # type: ignore[no-untyped-call]
            self._socket = None

    def web_routes(self) -> list[web.RouteDef]:
        """The Events API endpoint (events, interactions and slash commands) in HTTP mode."""
        if self.socket_mode:
            return []
        return [web.post(EVENTS_PATH, self._http)]

    async def _http(self, request: web.Request) -> web.Response:
        # Bolt acknowledges an event before its listener queues it, so check first that
        # Redis can take it: if not, Slack gets a 503 and redelivers later.
        try:
            await self.redis.ping()
        except (RedisError, OSError) as exc:
            log.warning("slack: Redis unavailable, asking Slack to retry: %s", exc)
            return web.Response(status=503, headers={"Retry-After": "5"})
        try:
            # Bolt parses the body before it checks the signature: a body that is not
            # UTF-8, or JSON nested past the parser's recursion limit, would be a 500.
            bolt_request = await to_bolt_request(request)
        except (ValueError, RecursionError):
            return web.Response(status=400, text="not a Slack request")
        response = await self.app.async_dispatch(bolt_request)
        return await to_aiohttp_response(response)

    # -- inbound --------------------------------------------------------------------

    async def _on_event(self, body: dict[str, Any], event: dict[str, Any]) -> None:
        inbound = to_inbound(event, self.bot_user_id, self.staff_users)
        if inbound is None:
            return
        async with self._in_flight:
            await self._handle(inbound, body, event)

    async def _handle(self, inbound: Inbound, body: dict[str, Any], event: dict[str, Any]) -> None:
        event_id = str(body.get("event_id") or f"{event.get('channel')}:{inbound.message_id}")
        first = await self.redis.set(
            self.keys.slack_event_seen(event_id), 1, nx=True, ex=SEEN_TTL_SECONDS
        )
        if not first:
            log.info("slack: event %s delivered again; already handled", event_id)
            return
        await self._post_placeholder(inbound.conversation_id)
        try:
            await self.on_message(inbound)
        except Exception:
            # One error boundary per message: log, apologise, keep serving.
            log.exception("conversation %s: failed to answer", inbound.conversation_id)
            try:
                await self.send(inbound.conversation_id, Reply(APOLOGY, "none"))
            except Exception:
                log.exception("conversation %s: could not apologise", inbound.conversation_id)

    async def _post_placeholder(self, conversation: str) -> None:
        channel, thread_ts = parse_conversation(conversation)
        try:
            posted = await self.client.chat_postMessage(
                channel=channel, thread_ts=thread_ts, text=PLACEHOLDER
            )
        except SlackApiError as exc:
            log.warning("conversation %s: no placeholder (%s)", conversation, exc)
            return
        key = self.keys.slack_placeholder(conversation)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.rpush(key, str(posted["ts"]))
            pipe.expire(key, PLACEHOLDER_TTL_SECONDS)
            await pipe.execute()

    async def _on_feedback_action(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        feedback = to_feedback(body)
        if feedback is None:
            return
        await self.on_feedback(feedback)
        message = body.get("message") or {}
        channel, _ = parse_conversation(feedback.conversation_id)
        try:
            await self.client.chat_update(
                channel=channel,
                ts=feedback.message_id,
                text=str(message.get("text", "")),
                blocks=acknowledge_feedback(
                    list(message.get("blocks") or []), feedback.rating, feedback.user_id
                ),
            )
        except SlackApiError as exc:
            log.warning(
                "conversation %s: feedback recorded, message not updated (%s)",
                feedback.conversation_id,
                exc,
            )

    async def _on_choice_action(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        inbound = to_choice(body)
        if inbound is None:
            return
        message = body.get("message") or {}
        channel, _ = parse_conversation(inbound.conversation_id)
        try:  # one pick per question: the buttons go
            await self.client.chat_update(
                channel=channel,
                ts=str(message["ts"]),
                text=str(message.get("text", "")),
                blocks=acknowledge_choice(
                    list(message.get("blocks") or []), int(inbound.text), inbound.user_id
                ),
            )
        except SlackApiError as exc:
            log.warning("conversation %s: buttons not removed (%s)", inbound.conversation_id, exc)
        async with self._in_flight:
            await self._handle(inbound, {"event_id": inbound.message_id}, {})

    async def _on_quick_action(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        inbound = to_quick_reply(body)
        if inbound is None:
            return
        message = body.get("message") or {}
        action = (body.get("actions") or [{}])[0]
        label = str((action.get("text") or {}).get("text") or inbound.text)
        channel, _ = parse_conversation(inbound.conversation_id)
        try:  # one press per offer: the buttons go
            await self.client.chat_update(
                channel=channel,
                ts=str(message["ts"]),
                text=str(message.get("text", "")),
                blocks=acknowledge_quick_reply(
                    list(message.get("blocks") or []), label, inbound.user_id
                ),
            )
        except SlackApiError as exc:
            log.warning("conversation %s: buttons not removed (%s)", inbound.conversation_id, exc)
        async with self._in_flight:
            await self._handle(inbound, {"event_id": inbound.message_id}, {})

    async def _on_command(
        self, ack: AsyncAck, respond: AsyncRespond, command: dict[str, Any]
    ) -> None:
        user = str(command.get("user_id", ""))
        if self.staff is None or not await self.is_staff(user):
            await ack(text=REFUSAL)
            return
        await ack()
        result = await self.staff.run(str(command.get("text", "")))
        await respond(text=f"```{escape(result)}```", response_type="ephemeral")

    async def is_staff(self, user_id: str) -> bool:
        """Listed in DESKMATE_SLACK_STAFF_USERS, or a member of DESKMATE_SLACK_STAFF_GROUP."""
        if user_id in self.staff_users:
            return True
        group = self.settings.slack_staff_group
        if not group or not user_id:
            return False
        try:
            members = await self.client.usergroups_users_list(usergroup=group)
        except SlackApiError as exc:
            log.warning("slack: cannot read staff group %s (%s)", group, exc)
            return False
        return user_id in (members.get("users") or [])

    # -- outbound -------------------------------------------------------------------

    async def send(self, conversation_id: str, reply: Reply) -> str | None:
        """Deliver a reply: replace the conversation's oldest placeholder, else post anew;
        the `ts` of the message that shows it (the sender keeps it in the delivery
        record), or None when nothing was posted.

        A reply with nothing to say (a human holds the conversation) removes the
        placeholder. Rate limits are retried by the client, honouring Retry-After; what
        still fails is raised as the adapter's delivery errors for the sender to retry.
        """
        placeholders = self.keys.slack_placeholder(conversation_id)
        # Peek, deliver, then drop: a delivery retried after a failure still finds it.
        peeked = await self.redis.lindex(placeholders, 0)
        placeholder = peeked.decode() if isinstance(peeked, bytes) else peeked
        ts = await delivering(lambda: self._deliver(conversation_id, reply, placeholder))
        if placeholder:
            await self.redis.lrem(placeholders, 1, placeholder)
        return ts

    async def _deliver(
        self, conversation_id: str, reply: Reply, placeholder: str | None
    ) -> str | None:
        channel, thread_ts = parse_conversation(conversation_id)
        if reply.action == "none" and not reply.text:
            if placeholder:
                await self.client.chat_delete(channel=channel, ts=placeholder)
            return None
        text, blocks = render_reply(reply)
        if placeholder:
            try:
                updated = await self.client.chat_update(
                    channel=channel, ts=placeholder, text=text, blocks=blocks
                )
                return str(updated.get("ts") or placeholder)
            except SlackApiError as exc:
                if exc.response.get("error") not in ("message_not_found", "cant_update_message"):
                    raise
        posted = await self.client.chat_postMessage(
            channel=channel,
            thread_ts=thread_ts,
            text=text,
            blocks=blocks,
            unfurl_links=False,
            unfurl_media=False,
        )
        return str(posted["ts"])

    # -- partial answers (brain.flow.partials): best effort -------------------------

    async def show_partial(self, conversation_id: str, text: str, shown: str | None) -> str | None:
        """Show an answer's text so far in the placeholder ("thinking..."), marked
        unfinished ("…"); the reply replaces the same placeholder. Shown only while one
        message of the conversation awaits its reply: with more, the first placeholder
        belongs to an earlier reply. Returns the placeholder's ts (None: none to show in)."""
        placeholders = await self.redis.lrange(self.keys.slack_placeholder(conversation_id), 0, 1)
        if len(placeholders) != 1:
            return None
        placeholder = placeholders[0]
        ts = placeholder.decode() if isinstance(placeholder, bytes) else str(placeholder)
        channel, _ = parse_conversation(conversation_id)
        await delivering(
            lambda: self._partial_client.chat_update(
                channel=channel, ts=ts, text=f"{to_mrkdwn(text)} …"
            )
        )
        return ts
