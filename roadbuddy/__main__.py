import sys

from roadbuddy.predict.cli import main

sys.exit(main())
