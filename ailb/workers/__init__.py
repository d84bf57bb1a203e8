"""Several worker processes under one supervising parent (``WORKERS`` > 1): see parent.py."""
