"""``python -m rehearsal.services KIND ...``: see ``rehearsal.services.processes``."""

import sys

from rehearsal.services.processes import main

sys.exit(main())
