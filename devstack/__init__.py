"""The embedded development stack and the Kafka test kit: Tansu, Redis and Prometheus started as local
processes on free ports (stack.py), and seeded bar feeds and event collectors over kafka-python (kafka_kit.py).

Used by the tests, the benchmarks and `regimetry demo`; never by the worker or the trainer."""
