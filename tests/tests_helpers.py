"""Small helpers shared by test modules (not fixtures)."""


def tiny_again(tmp_path):
    """Train the tiny profile a second time into tmp_path (same seed as the session fixture)."""
    from fixtures_bundle import tiny_config

    from trainer.pipeline import train

    return train(tiny_config(tmp_path))
