"""Connection settings shared by the worker and the operator tools: one environment configures both.

Neither side owns this package; it imports nothing from them (tests/test_import_graph.py)."""
