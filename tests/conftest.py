"""Fixtures are split by what they need: a trained bundle (fixtures_bundle) and the embedded stack
(fixtures_stack: Tansu broker, Redis, worker processes)."""

import os

pytest_plugins = ["fixtures_bundle", "fixtures_stack"]

# every worker process a test starts (they inherit this environment) checks each symbol state it takes from
# its cache against a Redis read and stops on a difference (worker/state_cache.py)
os.environ.setdefault("REGIMETRY_STATE_CACHE_VERIFY", "true")
