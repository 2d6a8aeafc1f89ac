"""Sessions, their checkpoints, the tests of each bridge and the verdicts drawn from them."""
