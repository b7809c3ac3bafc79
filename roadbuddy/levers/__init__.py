"""Test-time accuracy levers: choice permutations, the letter-prior correction."""
