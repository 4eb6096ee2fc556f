"""The analysis wing: code that only reads finished runs (or re-scores them) and reports.

Nothing here can change a result: the spine (`harness/*.py`) trains and scores, and never
imports from this package; modules here import from the spine, not the other way round
(tests/test_layout.py checks it).
"""
