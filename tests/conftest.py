"""Fixtures are split by what they need: a trained bundle (fixtures_bundle) and the embedded stack
(fixtures_stack: Tansu broker, Redis, worker processes)."""

pytest_plugins = ["fixtures_bundle", "fixtures_stack"]
