"""The worker's import graph and start-up path never touch TensorFlow or the trainer package."""

from __future__ import annotations

import subprocess
import sys
import textwrap

BLOCKER = textwrap.dedent("""
    import sys
    class Block:
        # A meta-path finder that makes TensorFlow, Keras and the trainer unimportable, as on a worker image.
        BLOCKED = ("tensorflow", "keras", "tf2onnx", "trainer", "sklearn", "joblib")
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in self.BLOCKED:
                raise ImportError(f"{name} is blocked in this test")
            return None
    sys.meta_path.insert(0, Block())
""")


def run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", BLOCKER + textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )


def test_worker_modules_import_without_tensorflow():
    r = run("""
        import worker.app, worker.pipeline, worker.redis_store, worker.validate, worker.events, worker.metrics
        import worker.drift, worker.settings, worker.client_security, worker.cli, worker.predict, devstack.stack
        import devstack.kafka_kit
        import faust, onnxruntime, redis
        bad = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "trainer"))
        assert not bad, bad
        print("ok")
    """)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr


def test_worker_runtime_builds_without_tensorflow(tiny_bundle):
    """Verify the bundle, open ONNX Runtime sessions and build the Faust app with TensorFlow blocked."""
    r = run(f"""
        from worker.settings import load_settings
        from worker.app import Runtime, create_app
        s = load_settings({{}}, bundle={str(tiny_bundle)!r})
        rt = Runtime(s)
        app = create_app(s, rt)
        import numpy as np
        z = rt.model.embed(np.zeros((2, rt.model.bundle.window_size, rt.model.bundle.spec.n_features), np.float32))
        assert z.shape[0] == 2
        bad = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "trainer"))
        assert not bad, bad
        print("ok")
    """)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr
