"""Enrichment (DESIGN §10): the origin AS of each address about to be written, from one bulk whois query and
a cache.
"""
