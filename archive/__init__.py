"""The bar archive: `regimetry archive` consumes the bars topic in its own consumer group and keeps every good
bar, exactly once, in a Parquet dataset partitioned by symbol and date (dataset.py), for training, evaluation
and refreshes to read back (`--data archive:DIR`).

It validates bars with the worker's own checks (worker/validate.py: one module, not a copy), so the archive
holds what the worker serves and nothing it refuses."""
