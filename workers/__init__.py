"""Worker targets and example workflows, written only against flowrt's public API."""
