"""The Telegram channel: customers chat with deskmate in Telegram.

With Redis down, webhook updates are refused (503) so Telegram redelivers them; in long
polling python-telegram-bot confirms updates as it fetches them, so a message that cannot
be queued gets an apology asking the customer to send it again.

Built on python-telegram-bot's `Application` (composed, not subclassed): long polling by
default, or webhook mode behind deskmate's web server when DESKMATE_TELEGRAM_WEBHOOK_URL
is set. Updates are translated by the pure `to_inbound` / `to_feedback`, deduplicated by
update id in Redis, and handed to `on_message` / `on_feedback`; `send` renders a `Reply`
with `bots.telegram.render`. Requests go through python-telegram-bot's `AIORateLimiter`,
which also waits out 429 `retry_after` and retries.

"typing..." is shown by the process that received a message until its reply is sent, by
whichever process sends it: the conversation's messages awaiting a reply are kept in Redis
(`telegram:typing:{conversation}`, by arrival time), sending a reply removes the oldest (a
conversation's replies go out in order), and the typing loop stops when none younger than
`typing_limit` is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import math
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, ClassVar, Final, NoReturn, Self
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from aiohttp import web
from redis.exceptions import RedisError
from telegram import (
    Bot,
    BotCommand,
    CallbackQuery,
    LinkPreviewOptions,
    MaybeInaccessibleMessage,
    Message,
    MessageEntity,
    Update,
)
from telegram import error as telegram_error
from telegram.constants import ChatAction, ChatType, ParseMode
from telegram.error import BadRequest, Forbidden, InvalidToken, TelegramError
from telegram.ext import AIORateLimiter, Application, ApplicationBuilder, TypeHandler
from telegram.request import HTTPXRequest

from bots.telegram.render import (
    OutgoingMessage,
    parse_choice,
    parse_feedback,
    parse_say,
    plain_message,
    render_reply,
)
from bots.web import parse_json
from brain.channel import DeliveryFailed, FeedbackHandler, Handler, NetworkError, RetryAfter
from brain.keys import SEEN_TTL_SECONDS, RedisKeys
from brain.pipeline import COMMANDS
from brain.settings import Settings, SettingsError
from brain.text import replace_surrogates
from brain.types import Feedback, Inbound, Reply

log = logging.getLogger(__name__)

ALLOWED_UPDATES: Final = ["message", "callback_query"]
SECRET_HEADER: Final = "X-Telegram-Bot-Api-Secret-Token"
APOLOGY: Final = "Sorry, something went wrong answering that. Please try again."
PARTIAL_CHARS: Final = 4000  # a partial answer shown is cut here (Telegram's limit: 4096)
# Message fields that carry something other than text, checked in this order (an
# animation also sets `document`), with the noun the customer is told about.
ATTACHMENTS: Final = (
    ("sticker", "sticker"),
    ("photo", "photo"),
    ("voice", "voice message"),
    ("video_note", "video message"),
    ("animation", "GIF"),
    ("video", "video"),
    ("audio", "audio file"),
    ("document", "file"),
    ("location", "location"),
    ("venue", "venue"),
    ("contact", "contact"),
    ("poll", "poll"),
    ("dice", "dice"),
)


class TelegramStartError(SettingsError):
    """The Telegram channel cannot start: no token, a rejected token or an unreachable API.
    The message names the setting to fix and never contains the token."""


def check_settings(settings: Settings) -> None:
    """Fail before anything starts if the Telegram settings cannot work."""
    if not settings.telegram_token:
        raise TelegramStartError(
            "DESKMATE_TELEGRAM_TOKEN is not set: create a bot with @BotFather and set its token"
        )
    if settings.telegram_webhook_url and not settings.telegram_webhook_secret:
        raise TelegramStartError(
            "DESKMATE_TELEGRAM_WEBHOOK_SECRET must be set in webhook mode "
            "(DESKMATE_TELEGRAM_WEBHOOK_URL is set)"
        )


def conversation_key(chat_id: int, thread_id: int | None = None) -> str:
    """The conversation id: the chat id, plus the topic for forum topics."""
    return f"{chat_id}:{thread_id}" if thread_id else str(chat_id)


def parse_conversation_key(conversation_id: str) -> tuple[int, int | None]:
    chat, _, thread = conversation_id.partition(":")
    return int(chat), int(thread) if thread else None


def _as_update(update: Update | Mapping[str, Any]) -> Update:
    return update if isinstance(update, Update) else Update.de_json(dict(update), None)


def _entity_texts(text: str, entities: Sequence[MessageEntity]) -> list[tuple[MessageEntity, str]]:
    """Each entity with the text it covers. Offsets count UTF-16 units; unlike
    python-telegram-bot's `parse_entities`, a lone surrogate in the text or an entity
    cutting a character in half reads as U+FFFD instead of raising."""
    encoded = replace_surrogates(text).encode("utf-16-le")
    return [
        (
            entity,
            encoded[2 * entity.offset : 2 * (entity.offset + entity.length)].decode(
                "utf-16-le", errors="replace"
            ),
        )
        for entity in entities
    ]


def _addressed_in_group(message: Message, bot_id: int, bot_username: str) -> bool:
    """A group message is for the bot if it mentions it, replies to it, or is a command
    not addressed to another bot."""
    username = bot_username.lower()
    if message.text:
        entities = _entity_texts(message.text, message.entities)
    elif message.caption:
        entities = _entity_texts(message.caption, message.caption_entities)
    else:
        entities = []
    for entity, value in entities:
        if entity.type == MessageEntity.MENTION and value[1:].lower() == username:
            return True
        if entity.type == MessageEntity.TEXT_MENTION and entity.user and entity.user.id == bot_id:
            return True
        if entity.type == MessageEntity.BOT_COMMAND and entity.offset == 0:
            target = value.partition("@")[2].lower()
            if target in ("", username):
                return True
    replied = message.reply_to_message
    # In forum topics every message "replies" to the topic's creation message; that's no reply.
    return bool(
        replied
        and replied.from_user
        and replied.from_user.id == bot_id
        and replied.forum_topic_created is None
    )


def to_inbound(
    update: Update | Mapping[str, Any], *, bot_id: int, bot_username: str
) -> Inbound | None:
    """Translate a Telegram update (object or its JSON) into an `Inbound`, or None for
    anything that is not a customer's message: edits, bot messages, channel posts, joins,
    pins. Group messages come back with `mentioned` False unless addressed to the bot;
    in private chats every message is addressed to it."""
    message = _as_update(update).message
    if message is None or message.from_user is None or message.from_user.is_bot:
        return None
    chat = message.chat
    if chat.type not in (ChatType.PRIVATE, ChatType.GROUP, ChatType.SUPERGROUP):
        return None
    text = message.text or message.caption or ""
    attachment = next((noun for name, noun in ATTACHMENTS if getattr(message, name)), "")
    if not text and not attachment:
        return None
    is_group = chat.type != ChatType.PRIVATE
    mentioned = not is_group or _addressed_in_group(message, bot_id, bot_username)
    if is_group and bot_username:
        name = re.escape(bot_username)
        text = re.sub(rf"(?i)^(/\w+)@{name}\b", r"\1", text)  # /help@bot -> /help
        text = re.sub(rf"(?i)(?<!\w)@{name}\b", " ", text)
        text = re.sub(r"[ \t]{2,}", " ", text).strip()
    thread = message.message_thread_id if message.is_topic_message else None
    return Inbound(
        channel="telegram",
        conversation_id=conversation_key(chat.id, thread),
        user_id=str(message.from_user.id),
        message_id=str(message.message_id),
        text=text,
        time=message.date.timestamp(),
        is_group=is_group,
        mentioned=mentioned,
        attachment=attachment,
    ).encodable()  # a cut emoji's lone surrogate cannot be queued


def _pressed(
    update: Update | Mapping[str, Any],
) -> tuple[CallbackQuery, MaybeInaccessibleMessage, str] | None:
    """A button press, the message it was pressed on (perhaps too old to read), and that
    message's conversation."""
    query = _as_update(update).callback_query
    if query is None or query.message is None:
        return None
    pressed = query.message
    thread = None
    if isinstance(pressed, Message) and pressed.is_topic_message:
        thread = pressed.message_thread_id
    return query, pressed, conversation_key(pressed.chat.id, thread)


def to_feedback(update: Update | Mapping[str, Any]) -> Feedback | None:
    """A 👍/👎 button press as `Feedback` on the message it was pressed on, or None."""
    press = _pressed(update)
    rating = parse_feedback(press[0].data) if press else None
    if press is None or rating is None:
        return None
    query, rated, conversation = press
    return Feedback(
        channel="telegram",
        conversation_id=conversation,
        user_id=str(query.from_user.id),
        message_id=str(rated.message_id),
        rating=rating,
    )


def to_choice(update: Update | Mapping[str, Any]) -> Inbound | None:
    """A press on a clarifying question's option (as the reply with its number) or on a
    quick reply such as "Back to the bot" or a rating (as the text it sends), or None."""
    press = _pressed(update)
    number = parse_choice(press[0].data) if press else None
    said = parse_say(press[0].data) if press else None
    if press is None or (number is None and said is None):
        return None
    query, asked, conversation = press
    return Inbound(
        channel="telegram",
        conversation_id=conversation,
        user_id=str(query.from_user.id),
        message_id=f"choice-{query.id}",
        text=str(number) if said is None else said,
        time=time.time(),
        is_group=asked.chat.type != ChatType.PRIVATE,
        mentioned=True,
    )


@dataclass
class _Typing:
    """This process's typing indicator of one conversation."""

    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


def _raise_delivery_error(exc: TelegramError) -> NoReturn:
    """Raise the adapter's delivery error for a python-telegram-bot error (one choke
    point): RetryAfter (429, with its wait), NetworkError (the sender tries again) or
    DeliveryFailed (it does not; a BadRequest is a NetworkError subclass in PTB)."""
    if isinstance(exc, telegram_error.RetryAfter):
        wait = exc.retry_after
        seconds = wait.total_seconds() if isinstance(wait, timedelta) else float(wait)
        raise RetryAfter(seconds, str(exc)) from exc
    if isinstance(exc, telegram_error.NetworkError) and not isinstance(exc, BadRequest):
        raise NetworkError(str(exc)) from exc
    raise DeliveryFailed(str(exc)) from exc


@contextlib.contextmanager
def delivery_errors() -> Iterator[None]:
    """Map python-telegram-bot's errors inside the block (see `_raise_delivery_error`)."""
    try:
        yield
    except TelegramError as exc:
        _raise_delivery_error(exc)


class TelegramAdapter:
    """The Telegram channel. `async with` checks the token (getMe), registers the commands
    and starts receiving: long polling, or in webhook mode through `web_routes()`."""

    channel: ClassVar[str] = "telegram"

    def __init__(
        self,
        settings: Settings,
        on_message: Handler,
        on_feedback: FeedbackHandler,
        *,
        redis: aioredis.Redis,
        typing_interval: float = 4.0,
        typing_limit: float = 120.0,
        max_retries: int = 3,
    ) -> None:
        check_settings(settings)
        self.webhook_url = settings.telegram_webhook_url
        self._secret = str(settings.telegram_webhook_secret)
        self.api_url = settings.telegram_api_url
        self._on_message = on_message
        self._on_feedback = on_feedback
        self._redis = redis
        self._keys = RedisKeys(settings.redis_prefix)
        self.typing_interval = typing_interval
        self.typing_limit = typing_limit
        self._typing: dict[str, _Typing] = {}
        builder = (
            ApplicationBuilder()
            .token(str(settings.telegram_token))
            .base_url(f"{self.api_url}/bot")
            .base_file_url(f"{self.api_url}/file/bot")
            .rate_limiter(AIORateLimiter(max_retries=max_retries))
        )
        if self.webhook_url:
            builder = builder.updater(None)
        self._application: Application[Any, Any, Any, Any, Any, Any] = builder.build()
        self._application.add_handler(TypeHandler(Update, self._on_update))
        self._application.add_error_handler(self._on_error)
        self._token = str(settings.telegram_token)
        self._partial_bot: Bot | None = None
        self._partial_bot_lock = asyncio.Lock()

    @property
    def bot_username(self) -> str:
        return str(self._application.bot.username)

    async def __aenter__(self) -> Self:
        bot = self._application.bot
        try:
            await self._application.initialize()
        except InvalidToken:
            await bot.shutdown()
            raise TelegramStartError(
                "DESKMATE_TELEGRAM_TOKEN was rejected by Telegram (getMe: Unauthorized); "
                "check the token @BotFather gave you"
            ) from None
        except telegram_error.NetworkError as exc:
            await bot.shutdown()
            raise TelegramStartError(
                f"cannot reach the Telegram Bot API at {self.api_url} ({exc.message}); "
                "check your network or DESKMATE_TELEGRAM_API_URL"
            ) from None
        try:
            await bot.set_my_commands(
                [BotCommand(name.lstrip("/"), about) for name, about in COMMANDS.items()]
            )
            await self._application.start()
            if self.webhook_url:
                await bot.set_webhook(
                    self.webhook_url, secret_token=self._secret, allowed_updates=ALLOWED_UPDATES
                )
            else:
                assert self._application.updater is not None
                await self._application.updater.start_polling(allowed_updates=ALLOWED_UPDATES)
        except BaseException:
            await self.__aexit__()
            raise
        mode = "webhook" if self.webhook_url else "long polling"
        log.info("Telegram: @%s connected (%s)", self.bot_username, mode)
        return self

    async def __aexit__(self, *exc: object) -> None:
        updater = self._application.updater
        if updater is not None and updater.running:
            await updater.stop()
        if self._application.running:
            await self._application.stop()
        for typing in list(self._typing.values()):
            typing.stop.set()
        await asyncio.gather(*(t.task for t in self._typing.values() if t.task))
        self._typing.clear()
        await self._close_partial_bot()
        await self._application.shutdown()

    # Receiving

    def web_routes(self) -> list[web.RouteDef]:
        """In webhook mode, the route Telegram posts updates to (the webhook URL's path)."""
        if not self.webhook_url:
            return []
        return [web.post(urlsplit(self.webhook_url).path or "/telegram", self._webhook)]

    async def _webhook(self, request: web.Request) -> web.Response:
        given = request.headers.get(SECRET_HEADER, "")
        if not hmac.compare_digest(given.encode(), self._secret.encode()):
            log.warning("Telegram webhook: request without the right secret token refused")
            return web.Response(status=403, text="forbidden")
        try:
            data = parse_json(await request.read())
            update = Update.de_json(data, self._application.bot)
        except (ValueError, TypeError, KeyError, AttributeError):
            # Malformed JSON, JSON nested too deeply, or JSON that is not an update.
            return web.Response(status=400, text="not a Telegram update")
        # Telegram redelivers an update answered with an error: refuse it while Redis
        # cannot make it durable, rather than acknowledge it and lose it.
        try:
            await self._redis.ping()
        except (RedisError, OSError) as exc:
            log.warning("telegram: Redis unavailable, asking Telegram to retry: %s", exc)
            return web.Response(status=503, text="try again")
        # Answered (200) once handled: with a durable `on_message` nothing acknowledged is lost.
        await self._application.process_update(update)
        return web.Response(text="ok")

    async def _first_delivery(self, update_id: int) -> bool:
        """True the first time an update id is seen (within 24 h, across restarts)."""
        key = self._keys.telegram_update_seen(self._application.bot.id, update_id)
        return bool(await self._redis.set(key, "1", nx=True, ex=SEEN_TTL_SECONDS))

    async def _on_update(self, update: Update, _context: object) -> None:
        if update.callback_query is not None:
            await self._on_button(update)
            return
        bot = self._application.bot
        inbound = to_inbound(update, bot_id=bot.id, bot_username=bot.username)
        if inbound is None or not inbound.mentioned:
            return
        if not await self._first_delivery(update.update_id):
            log.info("Telegram update %s seen before; not answering twice", update.update_id)
            return
        await self._accept(inbound)

    async def _accept(self, inbound: Inbound) -> None:
        """Pass a customer's message on, typing meanwhile; apologise if that fails."""
        await self._start_typing(inbound.conversation_id, inbound.message_id)
        try:
            await self._on_message(inbound)
        except Exception:
            # One error boundary per message: log, apologise, keep receiving.
            log.exception("conversation %s: failed to accept the message", inbound.conversation_id)
            await self._stop_typing(inbound.conversation_id)
            with contextlib.suppress(TelegramError):
                await self._deliver(inbound.conversation_id, [plain_message(APOLOGY)])

    async def _on_button(self, update: Update) -> None:
        query = update.callback_query
        assert query is not None
        bot = self._application.bot
        choice = to_choice(update)
        if choice is not None and query.message is not None:
            await bot.answer_callback_query(query.id)
            if not await self._first_delivery(update.update_id):
                return
            # One pick per question: the options go once one is chosen.
            with contextlib.suppress(BadRequest):
                await bot.edit_message_reply_markup(
                    chat_id=query.message.chat.id,
                    message_id=query.message.message_id,
                    reply_markup=None,
                )
            await self._accept(choice)
            return
        feedback = to_feedback(update)
        if feedback is None:
            await bot.answer_callback_query(query.id)
            return
        if not await self._first_delivery(update.update_id):
            return
        await self._on_feedback(feedback)
        await bot.answer_callback_query(query.id, text="Thanks for the feedback!")
        chat_id, _ = parse_conversation_key(feedback.conversation_id)
        # The message may be too old to edit; the rating is recorded either way.
        with contextlib.suppress(BadRequest):
            await bot.edit_message_reply_markup(
                chat_id=chat_id, message_id=int(feedback.message_id), reply_markup=None
            )

    async def _on_error(self, update: object, context: Any) -> None:
        update_id = update.update_id if isinstance(update, Update) else "?"
        log.error("Telegram update %s failed", update_id, exc_info=context.error)

    # Typing indicator

    async def _start_typing(self, conversation_id: str, message_id: str) -> None:
        """A message of the conversation awaits its reply: note it, and show "typing..."
        here while it (or another message of the conversation) does."""
        key = self._keys.telegram_typing(conversation_id)
        now = time.time()
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.zremrangebyscore(key, "-inf", now - self.typing_limit)
                pipe.zadd(key, {message_id: now})
                pipe.expire(key, math.ceil(self.typing_limit))
                await pipe.execute()
        except (RedisError, OSError) as exc:
            log.debug("conversation %s: typing not noted: %s", conversation_id, exc)
        typing = self._typing.get(conversation_id)
        if typing is None or typing.stop.is_set():  # none, or one about to end
            typing = self._typing[conversation_id] = _Typing()
            typing.task = asyncio.create_task(self._keep_typing(conversation_id, typing))

    async def _stop_typing(self, conversation_id: str) -> None:
        """A message of the conversation is answered (by this process or another). When
        none awaits a reply any more, stop typing here and wait until no chat action is in
        flight, so none lands after the answer; other processes stop at their next beat."""
        key = self._keys.telegram_typing(conversation_id)
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.zpopmin(key)
                pipe.zcount(key, time.time() - self.typing_limit, "+inf")
                waiting = int((await pipe.execute())[-1])
        except (RedisError, OSError):
            waiting = 0  # rather stop than type on
        typing = self._typing.get(conversation_id)
        if waiting or typing is None:
            return
        typing.stop.set()
        if typing.task is not None:
            await typing.task

    async def _awaiting_reply(self, conversation_id: str) -> bool:
        """Whether a message of the conversation, younger than `typing_limit`, awaits its
        reply."""
        key = self._keys.telegram_typing(conversation_id)
        try:
            waiting = await self._redis.zcount(key, time.time() - self.typing_limit, "+inf")
        except (RedisError, OSError):
            return True  # Redis will tell again; until then, keep the customer informed
        return int(waiting) > 0

    async def _keep_typing(self, conversation_id: str, typing: _Typing) -> None:
        chat_id, thread_id = parse_conversation_key(conversation_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.typing_limit
        try:
            while not typing.stop.is_set() and loop.time() < deadline:
                # Answered elsewhere? (Checked right before each action: one that is
                # already on its way when another process answers is the most shown.)
                if not await self._awaiting_reply(conversation_id):
                    break
                try:
                    await self._application.bot.send_chat_action(
                        chat_id, ChatAction.TYPING, message_thread_id=thread_id
                    )
                except TelegramError as exc:
                    log.debug("conversation %s: typing indicator failed: %s", conversation_id, exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(typing.stop.wait(), self.typing_interval)
        finally:
            if self._typing.get(conversation_id) is typing:
                del self._typing[conversation_id]

    # Sending

    async def send(self, conversation_id: str, reply: Reply) -> str | None:
        """Render `reply` and deliver it (nothing for a silent reply); the `message_id`s
        Telegram gave the messages sent, comma-separated when a long reply was split (the
        sender keeps them in the delivery record), or None when nothing was sent. A chat
        that blocked the bot is logged and skipped; other failures become the adapter's
        delivery errors (RetryAfter, NetworkError: the sender retries; DeliveryFailed: it
        does not)."""
        await self._stop_typing(conversation_id)
        with delivery_errors():
            sent = await self._deliver(conversation_id, render_reply(reply))
        return ",".join(str(message_id) for message_id in sent) or None

    async def _deliver(self, conversation_id: str, messages: list[OutgoingMessage]) -> list[int]:
        """Send the messages in order; the `message_id`s of those sent (none past a chat
        that blocked the bot)."""
        chat_id, thread_id = parse_conversation_key(conversation_id)
        sent: list[int] = []
        for message in messages:
            try:
                posted = await self._application.bot.send_message(
                    chat_id,
                    message.html,
                    parse_mode=ParseMode.HTML,
                    reply_markup=message.reply_markup,
                    message_thread_id=thread_id,
                    link_preview_options=LinkPreviewOptions(is_disabled=True),
                )
            except Forbidden as exc:
                log.warning("conversation %s: cannot write to this chat (%s)", conversation_id, exc)
                break
            sent.append(posted.message_id)
        return sent

    # Partial answers (brain.flow.partials): best effort, never in the replies' way

    async def _partial_client(self) -> Bot:
        """A bot client without the rate limiter: a showing call that meets a 429 is
        skipped (the shower waits `retry_after` itself) rather than retried late, where
        it could land after the final reply."""
        async with self._partial_bot_lock:
            if self._partial_bot is None:
                request = HTTPXRequest(connection_pool_size=8, read_timeout=3.0)
                bot = Bot(self._token, base_url=f"{self.api_url}/bot", request=request)
                await bot.initialize()
                self._partial_bot = bot
            return self._partial_bot

    async def _close_partial_bot(self) -> None:
        if self._partial_bot is not None:
            with contextlib.suppress(TelegramError):
                await self._partial_bot.shutdown()
            self._partial_bot = None

    async def show_partial(self, conversation_id: str, text: str, shown: str | None) -> str | None:
        """Show an answer's text so far, marked unfinished ("…"): a new message first
        (`shown` None), then edits of it. Returns the message's id."""
        chat_id, thread_id = parse_conversation_key(conversation_id)
        text = f"{text[:PARTIAL_CHARS]} …"
        try:
            bot = await self._partial_client()
            if shown is None:
                message = await bot.send_message(
                    chat_id,
                    text,
                    message_thread_id=thread_id,
                    link_preview_options=LinkPreviewOptions(is_disabled=True),
                )
                return str(message.message_id)
            try:
                await bot.edit_message_text(
                    text,
                    chat_id=chat_id,
                    message_id=int(shown),
                    link_preview_options=LinkPreviewOptions(is_disabled=True),
                )
            except BadRequest as exc:
                if "not modified" not in exc.message:
                    raise
            return shown
        except TelegramError as exc:
            _raise_delivery_error(exc)

    async def send_over(self, conversation_id: str, reply: Reply, shown: str) -> str | None:
        """Deliver `reply` by editing the message `shown` (which shows its partial text)
        into its first part, buttons included; further parts are sent after it. If that
        message is gone or cannot be edited, the reply is sent as `send` does. Editing to
        the same text again (a redelivery) counts as delivered."""
        await self._stop_typing(conversation_id)
        chat_id, _thread = parse_conversation_key(conversation_id)
        messages = render_reply(reply)
        try:
            if not messages:  # nothing to say: the partial text goes
                with contextlib.suppress(BadRequest):
                    await self._application.bot.delete_message(chat_id, int(shown))
                return None
            first, rest = messages[0], messages[1:]
            try:
                await self._application.bot.edit_message_text(
                    first.html,
                    chat_id=chat_id,
                    message_id=int(shown),
                    parse_mode=ParseMode.HTML,
                    reply_markup=first.reply_markup,
                    link_preview_options=LinkPreviewOptions(is_disabled=True),
                )
            except BadRequest as exc:
                if "not modified" not in exc.message:
                    log.info(
                        "conversation %s: partial answer not replaced (%s); sending the reply",
                        conversation_id,
                        exc,
                    )
                    sent = await self._deliver(conversation_id, messages)
                    return ",".join(str(message_id) for message_id in sent) or None
            later = await self._deliver(conversation_id, rest)
            return ",".join([shown, *(str(message_id) for message_id in later)])
        except TelegramError as exc:
            _raise_delivery_error(exc)
