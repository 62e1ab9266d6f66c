"""Run folders: the commands behind the CLI, training runs with progress and resume, the demo.

The top layer: imports ``training`` and ``analysis``; nothing below imports it.
"""
