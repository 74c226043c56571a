"""Tests that start a real server (a private fail2ban-server, the Cloudflare emulator or the whois
server, all on loopback) or run the installed command."""
