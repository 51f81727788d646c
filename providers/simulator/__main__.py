"""`python -m outbox.providers.simulator`: run the simulator."""

import sys

from outbox.providers.simulator.app import main

sys.exit(main())
