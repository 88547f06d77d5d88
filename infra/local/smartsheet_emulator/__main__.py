"""`python -m infra.local.smartsheet_emulator`: the emulator as a program of its own."""

import sys

from infra.local.smartsheet_emulator import main

sys.exit(main())
