"""lipt_cli: the `lipt` command, a thin Typer app over lipt_core."""
