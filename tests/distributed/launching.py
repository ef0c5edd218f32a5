"""Launching real process groups from tests: 2 ranks, gloo, CPU, loopback only."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
CONFIGS = HERE / "configs"
LAUNCH_TIMEOUT_S = 900  # a whole launch; normally 30-60 s, more on a loaded machine
WORKER_ENGINES = ("ddp", "zero2", "zero3")  # worker.py: DDP, DeepSpeed through deepspeed.initialize
ACCELERATE_ENGINES = ("accelerate-zero2", "accelerate-zero3", "accelerate-fsdp2")  # accelerate_worker.py


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the launcher binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def loopback_env() -> dict[str, str]:
    """Environment that keeps the rendezvous store and gloo's sockets on the loopback interface."""
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    # worker.py imports training_cases (here) and support (tests/), as the tests do.
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(HERE.parent), *filter(None, [os.environ.get("PYTHONPATH")])])
    if sys.platform.startswith("linux"):
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    return env


def torchrun_command(script: Path, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--nnodes=1",
        "--master_addr=127.0.0.1",
        f"--master_port={free_port()}",
        str(script),
        *args,
    ]


def accelerate_worker_command(engine: str, out: Path) -> list[str]:
    """``accelerate launch`` of accelerate_worker.py: DeepSpeed with ``configs/<engine>.json``
    (zero2, zero3), or FSDP2 with ``configs/accelerate_fsdp2.yaml``."""
    if engine == "fsdp2":
        config = ["--config_file", str(CONFIGS / "accelerate_fsdp2.yaml")]
    else:
        config = [
            "--use_deepspeed",
            "--deepspeed_config_file",
            str(CONFIGS / f"{engine}.json"),
            "--num_processes=2",
            "--num_machines=1",
            "--mixed_precision=no",
            "--dynamo_backend=no",
        ]
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        *config,
        f"--main_process_port={free_port()}",
        str(HERE / "accelerate_worker.py"),
        str(out),
        engine,
    ]


def launch(command: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a launcher to completion; a failure shows the end of its output."""
    result = subprocess.run(
        command, capture_output=True, text=True, env=loopback_env(), cwd=cwd, timeout=LAUNCH_TIMEOUT_S, check=False
    )
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    return result
