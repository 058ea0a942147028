"""`python -m archive`: run the archiver with settings from REGIMETRY_* / REGIMETRY_SETTINGS."""

from archive.service import main

raise SystemExit(main())
