"""Judging a result: FSC and pose metrics, map alignment, backprojection, the report.

Above ``training`` (it reads particles with ``training.data``); never imports ``runs``.
"""
