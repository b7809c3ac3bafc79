"""python -m roadbuddy.testing: tiny checkpoints and synthetic datasets (see checkpoints.py)."""
from roadbuddy.testing.checkpoints import main

if __name__ == "__main__":
    main()
