"""Answer quality: one set of metrics, and `deskmate eval answers` through the brain."""
