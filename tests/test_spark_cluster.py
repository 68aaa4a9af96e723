"""A real Spark standalone cluster, not only ``local[*]``: master and worker as separate processes.

The installed pyspark's ``spark-class`` starts a standalone master and one worker on
loopback (free ports, their own work folder), ``recall run --engine spark --master
spark://127.0.0.1:PORT`` runs on the bundled sample, and its tables must equal the
local engine's. The executors are separate JVMs launched by the worker, so this
exercises what ``local[*]`` does not: serialised plans, broadcast tables and Parquet
written by executors into the shared output folder. Both processes are stopped in
``finally`` (their whole process group: the worker's executors with them).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from recall.channels import CHANNELS
from recall.config import load_config
from recall.pipeline import run
from tests.conftest import REPO
from tests.test_spark import QUICK_CONF, QUICK_JVM, assert_same_table, recall_command

pytestmark = pytest.mark.spark

ONLY = ("itemcf", "retarget")  # a counting channel through the i2i path, and a u2i one
START_SECONDS = 90


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(log: Path, text: str, process: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if text in log.read_text(errors="replace"):
            return
        if process.poll() is not None:
            break
        time.sleep(0.5)
    raise AssertionError(f"the {what} did not start ({text!r} not logged):\n{log.read_text(errors='replace')[-3000:]}")


def stop(process: subprocess.Popen) -> None:
    """Stop a process this test started, with the processes it started (one process group)."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


@contextlib.contextmanager
def standalone_cluster(folder: Path):
    """Yield the master URL of a standalone master with one registered worker (2 cores, 1 GiB)."""
    pyspark = pytest.importorskip("pyspark", reason="pyspark is not installed (pip install 'recall[spark]')")
    from recall.spark.session import java_available

    if not java_available():
        pytest.skip("no Java runtime (17 or 21) to start Spark; install one or set JAVA_HOME")
    home = Path(pyspark.__file__).parent
    spark_class = home / "bin" / "spark-class"
    folder.mkdir(parents=True)
    env = {**os.environ, "SPARK_HOME": str(home), "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable,
           "SPARK_WORKER_DIR": str(folder / "work"), "SPARK_DAEMON_MEMORY": "256m"}
    port = free_port()
    url = f"spark://127.0.0.1:{port}"
    processes = []
    try:
        master_log = folder / "master.log"
        with open(master_log, "wb") as out:
            master = subprocess.Popen(
                [str(spark_class), "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                 "--port", str(port), "--webui-port", str(free_port())],
                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        processes.append(master)
        wait_for(master_log, "I have been elected leader", master, "master")
        worker_log = folder / "worker.log"
        with open(worker_log, "wb") as out:
            worker = subprocess.Popen(
                [str(spark_class), "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1",
                 "--webui-port", str(free_port()), "--cores", "2", "--memory", "1g",
                 "--work-dir", str(folder / "work"), url],
                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        processes.append(worker)
        wait_for(worker_log, "Successfully registered with master", worker, "worker")
        yield url
    finally:
        for process in reversed(processes):
            stop(process)


def test_standalone_cluster_run_matches_the_local_engine(tmp_path):
    sample = REPO / "data" / "sample"
    overrides = [f"channels.{name}.enabled=false" for name in CHANNELS if name not in ONLY]
    local = run(load_config(REPO / "configs" / "default.toml",
                            [f'data.dir="{sample}"', f'output.root="{tmp_path / "local"}"', *overrides]))
    conf = {**QUICK_CONF, "spark.sql.shuffle.partitions": "4", "spark.executor.memory": "512m",
            "spark.executor.cores": "2", "spark.driver.extraJavaOptions": QUICK_JVM,
            "spark.executor.extraJavaOptions": QUICK_JVM, "spark.pyspark.python": sys.executable}
    with standalone_cluster(tmp_path / "cluster") as master:
        done = recall_command(
            "--quiet", "run", "-c", "configs/default.toml", *[a for o in overrides for a in ("--set", o)],
            "--data", str(sample), "--out", str(tmp_path / "spark"), "--engine", "spark", "--master", master,
            *[a for key, value in conf.items() for a in ("--spark-conf", f"{key}={value}")])
        assert done.returncode == 0, done.stderr[-5000:]
        executors = list((tmp_path / "cluster" / "work").glob("app-*/*"))
    assert executors, "no executor ran on the worker: the run did not use the cluster"
    published = tmp_path / "spark" / local["run_date"]
    local_dir = Path(local["published"])
    names = sorted(str(p.relative_to(local_dir)) for p in local_dir.rglob("*.parquet"))
    assert {"candidates.parquet", "i2i/itemcf.parquet", "channels/itemcf.parquet", "channels/retarget.parquet"} \
        <= set(names)
    for name in names:
        assert_same_table(pl.read_parquet(local_dir / name), pl.read_parquet(published / name), name)
    manifest = json.loads((published / "manifest.json").read_text())
    assert manifest["engine"]["name"] == "spark" and manifest["engine"]["master"] == master
    assert manifest["status"] == "complete"
