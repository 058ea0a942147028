"""`python -m worker`: run one worker process with settings from REGIMETRY_* / REGIMETRY_SETTINGS."""

import worker.startup_clock  # noqa: F401  # first: the start-up clock starts here
from worker.blas_threads import pin_math_threads

pin_math_threads()  # before numpy is imported: see worker/blas_threads.py

from worker.app import main  # noqa: E402

raise SystemExit(main())
