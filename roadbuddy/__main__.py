import sys

from roadbuddy.cli import main

sys.exit(main())
