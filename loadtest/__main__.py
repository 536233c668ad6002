"""``python -m loadtest``: the headless scenario (see loadtest/run.py)."""
import sys

from loadtest.run import main

sys.exit(main())
