"""``python -m voicecore``: the same as the ``voicecore`` command."""

import sys

from voicecore.server.cli import main

sys.exit(main())
