"""Issue #11: a SIGINT during `gpuprov ci`'s CMD left the remote command running; on `cloud: existing`
(nothing is torn down) it ran on. The existing machine here is a real local sandbox host."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from gpuprov.infra.clouds.local.sandbox import LocalSandbox
from tests.conftest import existing_config, need_sandbox


def test_sigint_during_cmd_stops_it_on_the_host(tmp_path: Path, gpuprov_home: Path):
    need_sandbox()
    box = LocalSandbox(f"nc-{uuid.uuid4().hex[:6]}", root=tmp_path / "machine")
    box.create()
    # In /tmp: CMD runs as nobody, who can write there (and not under the test's own 0700 folders).
    marker, began = Path(f"/tmp/gpuprov-sigint-{uuid.uuid4().hex}"), Path(f"/tmp/gpuprov-began-{uuid.uuid4().hex}")
    try:
        config = tmp_path / "existing.yaml"
        config.write_text(existing_config(box))
        cmd = f"touch {began}; echo started; sleep 6; touch {marker}"
        proc = subprocess.Popen([sys.executable, "-m", "gpuprov", "ci", "--config", str(config), "--no-deploy",
                                 "--", "sh", "-c", cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=dict(os.environ))
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "started"
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 130, err
        assert "Traceback" not in err
        time.sleep(8)  # past the moment the command would have finished
        assert began.exists()  # CMD could write there: the marker's absence below means something
        assert not marker.exists(), "the command ran on after the SIGINT"
    finally:
        box.destroy()
        marker.unlink(missing_ok=True)
        began.unlink(missing_ok=True)
    assert box.leftovers() == []
