"""Small command-line commands that have no package of their own (see toolrl/cli.py)."""
