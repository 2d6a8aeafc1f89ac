"""Bad input at scale: the invariants every generated or fuzzed input must keep.

``*_oracle.py`` say what must hold for any input (the property tests and the fuzz harnesses
share them); ``fuzz_*.py`` are atheris harnesses run by ``tests/test_fuzz.py``.
"""
