"""Everything that talks to fail2ban: the one module that runs subprocesses (client), the parsers, the
restore and time-zone witnesses, and the database.
"""
