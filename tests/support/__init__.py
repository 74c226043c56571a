"""What the tests share: the Cloudflare emulator, a private fail2ban-server, the whois server, the run
harness, an in-memory backend, and the demo.
"""
