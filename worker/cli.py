"""`regimetry worker`: run the live worker. Options map onto REGIMETRY_* settings; anything not given here
comes from the environment or REGIMETRY_SETTINGS. Nothing heavy is imported until the command runs."""

from __future__ import annotations

import os

import typer


def worker_cmd(
    bundle: str | None = typer.Option(None, help="Bundle folder or models root with a CURRENT pointer."),
    broker: str | None = typer.Option(None, help="Kafka bootstrap, e.g. kafka://127.0.0.1:9092."),
    redis: str | None = typer.Option(None, help="Redis URL, e.g. redis://127.0.0.1:6379/0."),
    metrics_port: int | None = typer.Option(None, help="Port of the Prometheus /metrics endpoint."),
    batch_size: int | None = typer.Option(None, help="Bars per micro-batch at most."),
    ort_threads: int | None = typer.Option(None, help="ONNX Runtime intra-op threads for this process."),
) -> None:
    """Consume bars from Kafka and emit regime events (at-least-once, state in Redis)."""
    given = {
        "bundle": bundle,
        "broker_url": broker,
        "redis_url": redis,
        "metrics_port": metrics_port,
        "batch_size": batch_size,
        "ort_threads": ort_threads,
    }
    import worker.startup_clock  # noqa: F401  # the start-up clock starts here
    from worker.blas_threads import pin_math_threads

    pin_math_threads()  # takes effect only if numpy is not loaded yet; python -m worker always pins
    for name, value in given.items():
        if value is not None:
            os.environ[f"REGIMETRY_{name.upper()}"] = str(value)
    from worker.app import main

    raise typer.Exit(main())


def register(app: typer.Typer) -> None:
    from worker.predict import predict_cmd

    app.command("worker")(worker_cmd)
    app.command("predict")(predict_cmd)
