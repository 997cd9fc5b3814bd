"""What the notebooks stand on: their preamble (connect by the one rule, describe the server,
point %sql at it: preamble), running them headless with papermill (runs), and the team-shaped
data the tutorials and tests load (demo)."""

__all__ = ["demo", "preamble", "runs"]
