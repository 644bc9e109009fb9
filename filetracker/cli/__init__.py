"""Command-line tools: ``filetracker``, ``filetracker-cache-cleaner``, ``filetracker-migrate``."""
