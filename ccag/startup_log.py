"""The start-up lines an operator needs whatever the log level.

Where the gateway listens, that it serves from the bundled simulator, a demo
key or admin password shown only once: an operator who turns the log level
down (``--log-level warning`` or ``error``) must still see these, so their
logger lets INFO and up through whatever level the rest of the logging has.
Records still go to the root logger's handlers, in the same format.
"""

from __future__ import annotations

import logging

STARTUP_LOGGER_NAME = "ccag.startup"

startup_logger = logging.getLogger(STARTUP_LOGGER_NAME)
startup_logger.setLevel(logging.INFO)
