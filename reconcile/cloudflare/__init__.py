"""Everything that talks to Cloudflare: the one HTTP transport, the credentials, and the two backends behind
one seam (IP Access Rules, the account IP list with its WAF rule).
"""
