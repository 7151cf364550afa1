"""Fakes of the outside world (Telegram, Slack, an OpenAI server, a callback receiver),
speaking the real wire formats over HTTP."""
