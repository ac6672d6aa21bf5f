"""A real `think2seg serve` with the tiny models, run from the backend's venv (tests and screenshots)."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BACKEND_PYTHON = ROOT / ".venv" / "bin" / "python"
MODELS_CACHE = ROOT / ".pytest_cache" / "d" / "think2seg-models"
BUILD_MODELS = """
import json, sys
from pathlib import Path
from think2seg.testing.tiny_lvlm import TEST_ANSWERS, cached_tiny_lvlm
from think2seg.testing.tiny_sam import build_tiny_sam2
cache = Path(sys.argv[1])
lvlm = cached_tiny_lvlm(cache, TEST_ANSWERS)
sam = cache / "tiny-sam2"
if not (sam / "config.json").is_file():
    build_tiny_sam2(sam)
print(json.dumps({"lvlm": str(lvlm), "sam": str(sam)}))
"""


class Backend:
    def __init__(self, data_root: Path) -> None:
        if not BACKEND_PYTHON.exists():
            raise RuntimeError("the backend's virtual environment is missing: run `make setup` first")
        MODELS_CACHE.mkdir(parents=True, exist_ok=True)
        built = subprocess.run(
            [str(BACKEND_PYTHON), "-c", BUILD_MODELS, str(MODELS_CACHE)], capture_output=True, text=True, timeout=900
        )
        if built.returncode != 0:
            raise RuntimeError(f"building the tiny models failed:\n{built.stderr[-3000:]}")
        self.models = json.loads(built.stdout.strip().splitlines()[-1])
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_root, self.token_file = data_root, data_root / "token"
        self.log = (data_root / "backend.log").open("w")
        command = [
            str(ROOT / ".venv" / "bin" / "think2seg"),
            "serve",
            "--port",
            str(self.port),
            "--token-file",
            str(self.token_file),
            "--data-root",
            str(data_root),
            "--lvlm",
            self.models["lvlm"],
            "--segmenter",
            self.models["sam"],
            "--device",
            "cpu",
        ]
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the backend exited:\n{(data_root / 'backend.log').read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/v1/health", timeout=2) as reply:
                    if json.loads(reply.read())["status"] == "ready":
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError("the backend did not become ready within 300 s")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()
