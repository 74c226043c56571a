"""reconcile: keep Cloudflare's edge in step with fail2ban."""

__version__ = "0.3.0"
