"""The Telegram channel: the adapter (python-telegram-bot) and the pure renderer."""
