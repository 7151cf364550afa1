"""The dashboard's pages, rendered on the server (jinja2, autoescaped; charts as inline
SVG): nothing is fetched from the internet, so it works on a closed network.

Pages: overview (the report figures of the last 30 days, conversations and customer mood
per day), content gaps with their draft FAQ entries (edit and approve; approvals listed
with undo), a conversation viewer with personal data redacted (where staff label a
customer message's mood for the classifier), and handoffs (the queue now; outcomes,
reasons and CSAT). Everything but the login needs a session; every POST
needs the session's CSRF token.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import jinja2
import redis.asyncio as aioredis
from aiohttp import web
from markupsafe import escape

from bots.dashboard.approvals import Approvals
from bots.dashboard.auth import COOKIE, Session, Sessions, check_password
from brain import compute
from brain.handoff.machine import WAITING, Handoffs
from brain.insights.aggregates import Insights, day_of
from brain.insights.gaps import find_gaps
from brain.insights.report import Report, build_report
from brain.keys import RedisKeys
from brain.transcript_events import TRANSCRIPTS_MAXLEN, transcript_entry
from brain.types import NEUTRAL_MOOD
from training.redact import Redactor
from training.transcripts import conversations_from_events

OVERVIEW_DAYS = 30
HANDOFF_EVENTS = {
    "request": "Requested",
    "claim": "Claimed",
    "resolve": "Resolved",
    "cancel": "Cancelled",
    "timeout": "Timed out",
    "rate": "Rated",
}
GAP_QUESTIONS = 2_000  # newest gap questions clustered on the gaps page
LOGIN_COOKIE = "deskmate_login"
SESSION_KEY: web.RequestKey[Session] = web.RequestKey("session", Session)
FORM_KEY: web.RequestKey[Any] = web.RequestKey("form", object)

TEMPLATES = {
    "base.html": """<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>deskmate · {{ title }}</title><style>
body{font-family:system-ui,sans-serif;margin:0;color:#222}
nav{background:#1f3b57;padding:.6em 1em}nav a,nav button{color:#fff;margin-right:1.2em}
nav form{display:inline}nav button{background:none;border:0;cursor:pointer;font:inherit}
main{padding:1em 2em;max-width:70em}table{border-collapse:collapse}
td,th{border-bottom:1px solid #ddd;padding:.3em .8em;text-align:left}
.figure{display:inline-block;margin:0 1.5em 1em 0}.figure b{display:block;font-size:1.6em}
.gap{border:1px solid #ccc;border-radius:6px;padding:.8em;margin:1em 0}
textarea,input[type=text]{width:100%;box-sizing:border-box}.muted{color:#777}
.ok{color:#16713a}.bad{color:#a32020}</style></head><body>
{% if user %}<nav><a href="/dashboard/">Overview</a><a href="/dashboard/gaps">Content gaps</a>
<a href="/dashboard/conversations">Conversations</a>
<a href="/dashboard/handoffs">Handoffs</a>
<form method="post" action="/dashboard/logout"><input type="hidden" name="csrf"
 value="{{ csrf }}"><button id="logout">Log out {{ user }}</button></form></nav>{% endif %}
<main>{% block body %}{% endblock %}</main></body></html>""",
    "login.html": """{% extends "base.html" %}{% block body %}<h1>deskmate staff login</h1>
{% if error %}<p class="bad" id="error">{{ error }}</p>{% endif %}
<form method="post" action="/dashboard/login"><input type="hidden" name="csrf" value="{{ csrf }}">
<p><label>Name <input type="text" name="user" id="user" value="staff"></label></p>
<p><label>Password <input type="password" name="password" id="password"></label></p>
<button id="login">Log in</button></form>{% endblock %}""",
    "overview.html": """{% extends "base.html" %}{% block body %}
<h1>Overview <span class="muted">{{ r.since }} .. {{ r.until }}</span></h1>
<div id="figures">
<div class="figure">Conversations<b id="conversations">{{ r.conversations }}</b></div>
<div class="figure">Answered<b>{{ pct(r.answered_rate) }}</b></div>
<div class="figure">Clarified<b>{{ pct(r.clarified_rate) }}</b></div>
<div class="figure">Handed off<b>{{ pct(r.handed_off_rate) }}</b></div>
<div class="figure">Resolved by the bot<b id="resolved">{{ pct(r.resolved_by_bot_rate) }}</b></div>
<div class="figure">Ratings<b>👍 {{ r.ratings.get('up', 0) }}
 · 👎 {{ r.ratings.get('down', 0) }}</b></div>
<div class="figure">First reply (median)<b>{{ secs(r.median_first_reply_seconds) }}</b></div>
</div>
<h2>Conversations per day and channel</h2>{{ chart|safe }}
<h2>Handoffs</h2><p>{% for k, v in r.handoffs.items() %}{{ k }} {{ v }} · {% endfor %}
time to claim (median) {{ secs(r.median_time_to_claim_seconds) }} ·
time to resolve (median) {{ secs(r.median_time_to_resolve_seconds) }} ·
CSAT {% for k, v in r.csat.items() %}{{ k }}: {{ v }} {% else %}-{% endfor %}
· <a href="/dashboard/handoffs">queue and outcomes</a></p>
<h2>Customer mood</h2><div id="mood">
<div class="figure">Mean sentiment<b>{{ signed(r.mean_sentiment) }}</b></div>
<div class="figure">Messages that read angry<b>{{ pct(r.angry_message_rate) }}</b></div>
<div class="figure">Angry conversations<b>{{ pct(r.angry_conversation_rate) }}</b></div>
<div class="figure">Handed off for anger<b>{{ r.handoff_reasons.get('angry customer', 0) }}</b>
</div></div>{{ mood_chart|safe }}
<h2>Models</h2><p id="models">{% for k, v in r.models.items() %}{{ k }} ({{ v }} replies)
{% else %}-{% endfor %} · serving now: {{ model }}</p>
<p class="muted">Rendered in {{ '%.0f'|format(ms) }} ms.</p>{% endblock %}""",
    "gaps.html": """{% extends "base.html" %}{% block body %}<h1>Content gaps</h1>
{% if approved %}<div id="approved" class="ok"><p>Added <b>{{ approved.id }}</b> to the FAQ.
The gap's questions now:</p><ul>{% for q, hit in rerun %}<li>{{ q }} → {{ hit }}</li>
{% endfor %}</ul></div>{% endif %}
<p class="muted">{{ total }} unanswered or 👎 questions in {{ gaps|length }} topics,
biggest first.</p>
{% for gap in gaps %}<div class="gap" id="gap-{{ loop.index }}">
<h3>{{ gap.size }} × “{{ gap.central }}”</h3><details><summary>questions</summary><ul>
{% for q in gap.questions[:10] %}<li>{{ q.question }} <span class="muted">({{ q.why }})</span>
{% if q.agent_answer %}<br><i>agent:</i> {{ q.agent_answer }}{% endif %}</li>{% endfor %}
</ul></details>
<form method="post" action="/dashboard/gaps/approve">
<input type="hidden" name="csrf" value="{{ csrf }}">
<p><label>Question<input type="text" name="question" value="{{ gap.draft_question }}"></label></p>
<p><label>Alternates (one a line)<textarea name="alternates" rows="3">
{{- gap.draft_alternates|join('\n') }}</textarea></label></p>
<p><label>Answer<textarea name="answer" rows="3">{{ gap.draft_answer }}</textarea></label></p>
<button class="approve">Approve and publish</button></form></div>
{% else %}<p>No content gaps: every question was answered.</p>{% endfor %}
<h2>Approvals</h2><table id="approvals"><tr><th>when</th><th>who</th><th>what</th><th></th></tr>
{% for a in approvals %}<tr><td>{{ when(a.when) }}</td><td>{{ a.who }}</td>
<td>{{ a.action }} <b>{{ a.entry.id }}</b>: {{ a.entry.question }}</td><td>
{% if a.action == 'approve' and a.entry.id in live %}
<form method="post" action="/dashboard/faq/undo">
<input type="hidden" name="csrf" value="{{ csrf }}">
<input type="hidden" name="id" value="{{ a.entry.id }}">
<button class="undo">Undo</button></form>{% endif %}</td></tr>{% endfor %}</table>
{% endblock %}""",
    "conversations.html": """{% extends "base.html" %}{% block body %}<h1>Conversations</h1>
<p class="muted">Personal data (emails, phone numbers, cards, IBANs, names) is redacted.
Label a customer message's mood to teach the mood classifier
(<code>deskmate classifier examples</code>).</p>
{% if messages %}<h2>{{ selected }}</h2><table id="conversation">
{% for m in messages %}<tr><td class="muted">{{ when(m.time) }}</td><td>{{ m.role }}</td>
<td>{{ m.content }}</td><td class="muted">{{ m.action }} {{ m.rating }}</td>
<td class="muted">{% if m.mood -%}
{{ m.mood.label or 'neutral' }} ({{ 'anger %.2f'|format(m.mood.anger or 0) }}){% endif %}
{% if m.role == 'user' and m.message_id %}
<form method="post" action="/dashboard/conversations/mood" class="label">
<input type="hidden" name="csrf" value="{{ csrf }}">
<input type="hidden" name="c" value="{{ selected }}">
<input type="hidden" name="message_id" value="{{ m.message_id }}">
<select name="label">{% for label in labels %}<option{% if label == m.mood_label %}
 selected{% endif %}>{{ label }}</option>{% endfor %}</select>
<button>{{ 'Relabel' if m.mood_label else 'Label' }}</button>
{% if m.mood_label %}<b class="ok">staff: {{ m.mood_label }}</b>{% endif %}</form>
{% endif %}</td></tr>{% endfor %}
</table>{% endif %}<h2>Latest</h2><ul>{% for c in recent %}
<li><a href="/dashboard/conversations?c={{ c.id|urlencode }}">{{ c.id }}</a>
<span class="muted">{{ when(c.start) }}, {{ c.count }} messages</span></li>{% endfor %}</ul>
{% endblock %}""",
    "handoffs.html": """{% extends "base.html" %}{% block body %}<h1>Handoffs</h1>
<h2>Open now ({{ open|length }})</h2>{% if open %}<table id="queue">
<tr><th>place</th><th>conversation</th><th>state</th><th>waiting</th><th>agent</th>
<th>reason</th></tr>{% for e in open %}<tr><td>{{ e.place or '' }}</td>
<td><a href="/dashboard/conversations?c={{ e.member|urlencode }}">{{ e.member }}</a></td>
<td>{{ e.state }}</td><td>{{ duration(e.age) }}</td><td>{{ e.agent or '-' }}</td>
<td>{{ e.reason }}</td></tr>{% endfor %}</table>
{% else %}<p>Nobody is waiting for a person.</p>{% endif %}
<h2>Outcomes <span class="muted">{{ r.since }} .. {{ r.until }}</span></h2>
<div id="outcomes">{% for k in ['request', 'claim', 'resolve', 'cancel', 'timeout', 'rate'] %}
<div class="figure">{{ names[k] }}<b>{{ r.handoffs.get(k, 0) }}</b></div>{% endfor %}
<div class="figure">Time to claim (median)<b>{{ secs(r.median_time_to_claim_seconds) }}</b></div>
<div class="figure">Time to resolve (median)
<b>{{ secs(r.median_time_to_resolve_seconds) }}</b></div></div>
<h2>Why conversations were handed off</h2>{{ reasons_chart|safe }}
<h2>Customer satisfaction after a handoff</h2>{{ csat_chart|safe }}
{% endblock %}""",
}

_env = jinja2.Environment(loader=jinja2.DictLoader(TEMPLATES), autoescape=True)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def _when(value: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(float(value)))


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2f}"


def _duration(seconds: float) -> str:
    minutes = int(seconds // 60)
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min"


PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#7f7f7f"]


def chart_svg(report: Report) -> str:
    """Stacked bars of conversations per day, one colour per channel."""
    return stacked_bars(report.by_day, "chart", "No conversations yet.")


def stacked_bars(by_day: Mapping[str, Mapping[str, int]], chart_id: str, empty: str) -> str:
    """Stacked bars, one a day, one colour a series (biggest series first), as inline SVG."""
    palette = PALETTE
    totals: Counter[str] = Counter()
    for counts in by_day.values():
        totals.update(counts)
    channels = [name for name, _ in sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))]
    days = sorted(by_day)
    width, height, pad = 720, 200, 24
    if not days:
        return f'<p class="muted">{escape(empty)}</p>'
    most = max(sum(by_day[d].values()) for d in days) or 1
    bar = (width - pad) / len(days)
    parts = [f'<svg id="{chart_id}" width="{width}" height="{height + 40}" role="img">']
    for i, day in enumerate(days):
        y = float(height)
        for c, channel in enumerate(channels):
            n = by_day[day].get(channel, 0)
            h = n / most * (height - pad)
            y -= h
            parts.append(
                f'<rect x="{pad + i * bar:.1f}" y="{y:.1f}" width="{max(bar - 2, 1):.1f}" '
                f'height="{h:.1f}" fill="{palette[c % len(palette)]}">'
                f"<title>{day} {escape(channel)}: {n}</title></rect>"
            )
    parts.append(f'<text x="{pad}" y="{height + 16}" font-size="11">{days[0]}</text>')
    parts.append(
        f'<text x="{width - 70}" y="{height + 16}" font-size="11">{days[-1]}</text>'
        f'<text x="0" y="12" font-size="11">{most}</text>'
    )
    for c, channel in enumerate(channels):
        parts.append(
            f'<text x="{pad + c * 110}" y="{height + 34}" font-size="12" '
            f'fill="{palette[c % len(palette)]}">■ {escape(channel)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def bars(counts: Mapping[str, int], chart_id: str, empty: str) -> str:
    """Horizontal bars of a few counts, biggest first, as inline SVG."""
    items = sorted(((k, v) for k, v in counts.items() if v), key=lambda kv: (-kv[1], kv[0]))
    if not items:
        return f'<p class="muted">{escape(empty)}</p>'
    width, row, label = 720, 22, 220
    most = items[0][1]
    parts = [f'<svg id="{chart_id}" width="{width}" height="{row * len(items) + 4}" role="img">']
    for i, (name, n) in enumerate(items):
        w = n / most * (width - label - 60)
        y = i * row
        parts.append(
            f'<text x="0" y="{y + 15}" font-size="12">{escape(name)}</text>'
            f'<rect x="{label}" y="{y + 3}" width="{max(w, 1):.1f}" height="{row - 6}" '
            f'fill="{PALETTE[i % len(PALETTE)]}"><title>{escape(name)}: {n}</title></rect>'
            f'<text x="{label + w + 6:.1f}" y="{y + 15}" font-size="12">{n}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


@dataclass(slots=True)
class Dashboard:
    """The dashboard's handlers, wired by `make_dashboard`."""

    redis: aioredis.Redis
    prefix: str
    password_hash: str
    sessions: Sessions
    insights: Insights
    approvals: Approvals
    secure_cookies: bool = False

    def render(self, name: str, request: web.Request, **context: Any) -> web.Response:
        session = request.get(SESSION_KEY)
        html = _env.get_template(name).render(
            user=session.user if session else "",
            csrf=context.pop("csrf", session.csrf if session else ""),
            pct=_pct,
            secs=_secs,
            when=_when,
            signed=_signed,
            duration=_duration,
            **context,
        )
        response = web.Response(text=html, content_type="text/html")
        response.headers["Cache-Control"] = "no-store"
        response.headers["Content-Security-Policy"] = (
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'"
        )
        return response

    # -- login ------------------------------------------------------------------------

    async def login_page(self, request: web.Request, error: str = "") -> web.Response:
        token = secrets.token_urlsafe(24)
        response = self.render("login.html", request, csrf=token, error=error)
        response.set_cookie(
            LOGIN_COOKIE, token, httponly=True, samesite="Strict", secure=self.secure_cookies
        )
        return response

    async def login(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        expected = request.cookies.get(LOGIN_COOKIE, "")
        if not expected or not hmac.compare_digest(str(form.get("csrf", "")), expected):
            raise web.HTTPForbidden(text="stale login form: reload the page\n")
        user = str(form.get("user", "")).strip()[:40] or "staff"
        password = str(form.get("password", ""))
        if not await asyncio.to_thread(check_password, password, self.password_hash):
            await asyncio.sleep(0.5)  # slows guessing a little
            return await self.login_page(request, "Wrong password.")
        response = web.HTTPSeeOther("/dashboard/")
        response.set_cookie(
            COOKIE,
            self.sessions.issue(user),
            max_age=int(self.sessions.max_age),
            httponly=True,
            samesite="Strict",
            secure=self.secure_cookies,
            path="/dashboard",
        )
        response.del_cookie(LOGIN_COOKIE)
        raise response

    async def logout(self, request: web.Request) -> web.StreamResponse:
        response = web.HTTPSeeOther("/dashboard/login")
        response.del_cookie(COOKIE, path="/dashboard")
        raise response

    # -- pages ------------------------------------------------------------------------

    async def overview_report(self, now: float | None = None) -> Report:
        """The overview's figures: fold what is new, sum the last `OVERVIEW_DAYS` days."""
        now = time.time() if now is None else now
        await self.insights.update(now)
        first, last = day_of(now - (OVERVIEW_DAYS - 1) * 86400), day_of(now)
        return build_report(first, last, await self.insights.days(first, last))

    async def overview(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        report = await self.overview_report()
        model = await self.redis.get(RedisKeys(self.prefix).model_active)
        model_name = _text(model) if model else "the configured backend"
        return self.render(
            "overview.html",
            request,
            title="overview",
            r=report,
            chart=chart_svg(report),
            mood_chart=stacked_bars(
                report.moods_by_day, "mood-chart", "No customer moods read yet."
            ),
            model=model_name,
            ms=(time.perf_counter() - started) * 1000,
        )

    async def gaps(self, request: web.Request) -> web.Response:
        await self.insights.update()
        questions = await self.insights.gap_questions(GAP_QUESTIONS)
        redactor = Redactor()
        for item in questions:
            for name in ("question", "agent_answer", "bot_answer"):
                if item.get(name):
                    item[name] = redactor.redact(str(item[name]))
        live = {e["id"] for e in self.approvals.entries()}
        for entry in self.approvals.entries():  # questions an approved entry now covers
            covered = {entry["question"].lower(), *(a.lower() for a in entry["alternates"])}
            questions = [q for q in questions if str(q["question"]).lower() not in covered]
        embedder = self.approvals.retriever.embedder
        found = await compute.run_apart(find_gaps, questions, embedder)
        approved_id = request.query.get("approved", "")
        approved = next((e for e in self.approvals.entries() if e["id"] == approved_id), None)
        rerun: list[tuple[str, str]] = []
        if approved:
            for text in [approved["question"], *approved["alternates"]][:10]:
                hits = await compute.run(self.approvals.retriever.search, text, 1)
                rerun.append((text, f"{hits[0].id} ({hits[0].score:.2f})" if hits else "none"))
        return self.render(
            "gaps.html",
            request,
            title="content gaps",
            gaps=found[:50],
            total=len(questions),
            approvals=await self.approvals.history(),
            live=live,
            approved=approved,
            rerun=rerun,
        )

    async def approve(self, request: web.Request) -> web.StreamResponse:
        form = request[FORM_KEY]
        alternates = str(form.get("alternates", "")).splitlines()
        try:
            entry = await self.approvals.approve(
                request[SESSION_KEY].user,
                str(form.get("question", "")),
                alternates,
                str(form.get("answer", "")),
            )
        except ValueError as exc:
            raise web.HTTPBadRequest(text=f"{exc}\n") from exc
        raise web.HTTPSeeOther(f"/dashboard/gaps?approved={entry['id']}")

    async def undo(self, request: web.Request) -> web.StreamResponse:
        await self.approvals.undo(request[SESSION_KEY].user, str(request[FORM_KEY].get("id", "")))
        raise web.HTTPSeeOther("/dashboard/gaps")

    async def conversations(self, request: web.Request) -> web.Response:
        key = RedisKeys(self.prefix).transcripts
        raw = await self.redis.xrevrange(key, count=3000) or []
        events = []
        for entry_id, fields in reversed(raw):
            event = {_text(k): _text(v) for k, v in (fields or {}).items()}
            event["id"] = _text(entry_id)
            events.append(event)
        found = conversations_from_events(events)
        recent = [
            {"id": c.meta["id"], "start": c.meta.get("start", 0.0), "count": len(c.messages)}
            for c in reversed(found[-50:])
        ]
        selected = request.query.get("c", "")
        messages = []
        labels = {NEUTRAL_MOOD}
        for conversation in found:
            if conversation.meta["id"] == selected:
                redactor = Redactor()
                names = conversation.meta.get("names") or []
                for message in conversation.messages:
                    message.content = redactor.redact(message.content, names)
                    messages.append(message)
        for conversation in found:  # the labels the mood classifier has given
            for message in conversation.messages:
                if message.mood:
                    labels.update(str(k) for k in message.mood.get("scores") or {})
        return self.render(
            "conversations.html",
            request,
            title="conversations",
            recent=recent,
            selected=selected,
            messages=messages,
            labels=sorted(labels),
        )

    async def label_mood(self, request: web.Request) -> web.StreamResponse:
        """Staff say what mood a customer message has: a `mood_label` transcripts event,
        which `deskmate classifier examples` turns into a training line."""
        form = request[FORM_KEY]
        selected = str(form.get("c", ""))
        message_id = str(form.get("message_id", ""))
        label = str(form.get("label", "")).strip()
        channel, _, conversation_id = selected.partition(":")
        part = conversation_id.rpartition("#")
        if part[1] and part[2].isdigit():
            conversation_id = part[0]  # `#2`: the conversation's second session
        if not (channel and conversation_id and message_id) or not label or len(label) > 40:
            raise web.HTTPBadRequest(text="needs a conversation, a message id and a label\n")
        entry = transcript_entry(
            "mood_label",
            channel,
            conversation_id,
            f"staff:{request[SESSION_KEY].user}",
            {"message_id": message_id, "label": label, "by": request[SESSION_KEY].user},
        )
        keys = RedisKeys(self.prefix)
        await self.redis.xadd(keys.transcripts, entry, maxlen=TRANSCRIPTS_MAXLEN, approximate=True)
        raise web.HTTPSeeOther(f"/dashboard/conversations?c={quote(selected)}")

    async def handoffs(self, request: web.Request) -> web.Response:
        """The queue as it stands, and how handoffs went over the overview's days."""
        now = time.time()
        report = await self.overview_report(now)
        queue = await Handoffs(self.redis, self.prefix).open_handoffs(now)
        waiting = [e for e in queue if e.handoff.state in WAITING]
        places = {e.handoff.member: i for i, e in enumerate(waiting, start=1)}
        rows = [
            {
                "member": e.handoff.member,
                "state": e.handoff.state.value.replace("_", " "),
                "age": e.age_seconds,
                "agent": e.handoff.agent,
                "reason": e.handoff.reason,
                "place": places.get(e.handoff.member),
            }
            for e in queue
        ]
        return self.render(
            "handoffs.html",
            request,
            title="handoffs",
            open=rows,
            r=report,
            names=HANDOFF_EVENTS,
            reasons_chart=bars(report.handoff_reasons, "reasons", "No handoffs yet."),
            csat_chart=bars(report.csat, "csat", "No ratings after a handoff yet."),
        )

    # -- the guard --------------------------------------------------------------------

    @web.middleware
    async def guard(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        """No page without a session; no POST without the session's CSRF token."""
        if request.path == "/dashboard/login":
            return await handler(request)
        session = self.sessions.read(request.cookies.get(COOKIE))
        if session is None:
            if request.method == "GET":
                raise web.HTTPSeeOther("/dashboard/login")
            raise web.HTTPUnauthorized(text="log in first\n")
        request[SESSION_KEY] = session
        if request.method == "POST":
            form = await request.post()
            if not hmac.compare_digest(str(form.get("csrf", "")), session.csrf):
                raise web.HTTPForbidden(text="missing or wrong CSRF token\n")
            request[FORM_KEY] = form
        return await handler(request)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def dashboard_secret(redis: aioredis.Redis, prefix: str, configured: str) -> str:
    """The configured signing key, else one shared by every process through Redis."""
    if configured:
        return configured
    key = RedisKeys(prefix).dashboard_secret
    await redis.set(key, secrets.token_urlsafe(32), nx=True)
    return _text(await redis.get(key))


def make_dashboard(dashboard: Dashboard) -> web.Application:
    """The `/dashboard` sub-application."""
    app = web.Application(middlewares=[dashboard.guard])
    app.router.add_get("/", dashboard.overview)
    app.router.add_get("/login", dashboard.login_page)
    app.router.add_post("/login", dashboard.login)
    app.router.add_post("/logout", dashboard.logout)
    app.router.add_get("/gaps", dashboard.gaps)
    app.router.add_post("/gaps/approve", dashboard.approve)
    app.router.add_post("/faq/undo", dashboard.undo)
    app.router.add_get("/conversations", dashboard.conversations)
    app.router.add_post("/conversations/mood", dashboard.label_mood)
    app.router.add_get("/handoffs", dashboard.handoffs)
    return app
