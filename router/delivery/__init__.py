"""The code that loops, sleeps and retries (layout.md): delivery workers and their kin."""
