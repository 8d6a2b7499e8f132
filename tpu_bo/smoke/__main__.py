"""``python -m tpu_bo.smoke``."""

import sys

from tpu_bo.smoke.checks import main

sys.exit(main())
