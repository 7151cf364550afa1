"""The runnable app: platform adapters (console, Telegram, Slack), delivery and the CLI."""
