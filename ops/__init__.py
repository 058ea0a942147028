"""Operator tools around the live worker: feed replay, event tail, event reports, topic set-up, the demo.

They talk to Kafka with kafka-python using the REGIMETRY_* connection settings the worker reads too
(connect/settings.py: broker, topics, SASL/TLS), so a tool pointed at a cluster reaches it exactly the way
the worker does. They import neither the worker nor the trainer, and never TensorFlow.
"""
