"""Thin Typer commands: parse, call a workflow, render. Nothing else."""
