"""The full readiness test of one bridge: what is measured, against which limits."""
