"""The operator's tools beside the run: --check and --explain. Read-only, with either backend."""
