"""The web console (``/console``): its sessions, and the page, style and script it serves."""
