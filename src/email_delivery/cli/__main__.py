"""``python -m email_delivery.cli``: the same as the ``email-delivery`` command."""

import sys

from email_delivery.cli import main

sys.exit(main())
