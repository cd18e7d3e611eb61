"""`python -m relay_local run | send FILE | status ORDER_ID | invoke FUNCTION EVENT_FILE | events`."""

import sys

from relay_local.cli import main

if __name__ == "__main__":
    sys.exit(main())
