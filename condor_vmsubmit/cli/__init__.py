"""Thin click commands: parse options, call pure functions, print, map errors to exit codes."""
