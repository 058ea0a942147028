"""`python -m worker`: run one worker process with settings from REGIMETRY_* / REGIMETRY_SETTINGS."""

from worker.app import main

raise SystemExit(main())
