"""Operator tools around the live worker: feed replay, event tail, event reports, topic set-up, the demo.

They talk to Kafka with kafka-python using the worker's own REGIMETRY_* settings (broker, topics, SASL/TLS),
so a tool pointed at a cluster reaches it exactly the way the worker does. Nothing here imports TensorFlow.
"""
