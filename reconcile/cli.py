"""Command line: placeholder until the wiring lands."""

def main(argv: list[str] | None = None) -> int:
    return 0
