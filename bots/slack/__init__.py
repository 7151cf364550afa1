"""The Slack channel: the adapter (slack-bolt), the pure renderer and the staff desk."""
