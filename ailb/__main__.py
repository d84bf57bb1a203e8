"""``python -m ailb`` (also the entry point of the single binary)."""

from ailb.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
