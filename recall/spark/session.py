"""The SparkSession factory: ``local[*]`` on one machine, any cluster through ``master``.

``pyspark`` is imported only inside :func:`spark_session` (and the engine modules
that need it), so importing :mod:`recall.spark.session` -- e.g. to validate a
config's ``[spark]`` section -- costs nothing and works without pyspark.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


from recall.sections import SparkSettings
from recall.errors import RecallError

# Startup messages go to the console before any setLogLevel call can silence them;
# a log4j2 configuration handed to the JVM at launch keeps them quiet from the start.
_LOG4J2 = """\
rootLogger.level = {level}
rootLogger.appenderRef.stderr.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{{yy/MM/dd HH:mm:ss}} %p %c{{1}}: %m%n
# PySpark's JVM counts as an interpreter: without a logger of its own for the class that
# starts logging, Spark resets the level to WARN and says so on stderr ("Setting default
# log level ..."), which cron would mail.
logger.gateway.name = org.apache.spark.api.python.PythonGatewayServer
logger.gateway.level = {level}
"""


def require_pyspark():
    """Import pyspark, or say how to install it; check that a Java runtime is there."""
    try:
        import pyspark
    except ImportError:
        raise RecallError("the Spark engine needs pyspark: pip install '.[spark]' in the recall checkout "
                          "(or 'recall[spark]'; PySpark 4.x, with a Java 17 or 21 runtime), or run with "
                          "--engine local") from None
    if not (os.environ.get("JAVA_HOME") or shutil.which("java")):
        raise RecallError("the Spark engine needs a Java runtime (17 or 21) and none was found: install Java 17 "
                          "(e.g. apt-get install openjdk-17-jre-headless) or set JAVA_HOME, or run with "
                          "--engine local")
    return pyspark


def java_available() -> bool:
    """Whether a Java runtime can be started (for skipping tests and friendly errors)."""
    java = Path(os.environ["JAVA_HOME"]) / "bin" / "java" if os.environ.get("JAVA_HOME") else shutil.which("java")
    if not java:
        return False
    try:
        return subprocess.run([str(java), "-version"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def spark_session(settings: SparkSettings | None = None, **overrides):
    """Get (or create) the SparkSession for ``settings``, with sane settings for a local run.

    Parameters
    ----------
    settings : SparkSettings, optional
        Connection and resources; the defaults run ``local[*]``.
    **overrides
        Fields of :class:`SparkSettings` to replace, e.g. ``master="spark://host:7077"``.

    Returns
    -------
    pyspark.sql.SparkSession
        A session with the UI and console progress bars off, UTC session time,
        no ``_SUCCESS`` or ``.crc`` files in written folders, and adaptive query
        execution on. A session that is already running is reused as it is
        (the JVM cannot change its memory once started).
    """
    settings = (settings or SparkSettings()).model_copy(update=overrides)
    require_pyspark()
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    local = settings.master.startswith("local")
    if local:
        # Binding to the loopback interface: no network lookups, no "SPARK_LOCAL_IP" warning.
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        # Python workers run this interpreter (the one with polars and recall), not whatever
        # `python3` is first on PATH.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    partitions = settings.shuffle_partitions or (4 * (os.cpu_count() or 1) if local else 200)
    text = _LOG4J2.format(level=settings.log_level.upper())
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]  # a changed template gets a new file
    log_config = Path(tempfile.gettempdir()) / f"recall-spark-log4j2-{digest}.properties"
    if not log_config.exists():
        partial = log_config.with_name(f"{log_config.name}.{os.getpid()}")
        partial.write_text(text)
        os.replace(partial, log_config)  # concurrent starts never see a half-written file
    java_options = " ".join(filter(None, [f"-Dlog4j2.configurationFile={log_config.as_uri()}",
                                          settings.java_options]))
    extra = dict(settings.conf)
    driver_options = " ".join(filter(None, [java_options, extra.pop("spark.driver.extraJavaOptions", "")]))
    executor_options = " ".join(filter(None, [java_options, extra.pop("spark.executor.extraJavaOptions", "")]))
    conf = {
        "spark.driver.memory": settings.driver_memory,
        "spark.sql.shuffle.partitions": str(partitions),
        "spark.default.parallelism": str(partitions),
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.adaptive.enabled": "true",
        "spark.driver.extraJavaOptions": driver_options,
        "spark.executor.extraJavaOptions": executor_options,
        # Plain folders of part files: no marker files, no checksum side files.
        "spark.hadoop.mapreduce.fileoutputcommitter.marksuccessfuljobs": "false",
        "spark.hadoop.fs.file.impl": "org.apache.hadoop.fs.RawLocalFileSystem",
        "spark.hadoop.fs.file.impl.disable.cache": "true",
        "spark.sql.parquet.compression.codec": "zstd",
    }
    conf.update(extra)
    builder = SparkSession.builder.master(settings.master).appName(settings.app_name)
    for key, value in conf.items():
        builder = builder.config(key, value)
    try:
        spark = builder.getOrCreate()
    except Exception as exc:  # py4j / JVM launch failures have many types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RecallError(f"cannot start Spark with master '{settings.master}' ({first}); check the master "
                          "URL, that Java 17/21 is installed, and spark.driver.memory") from None
    spark.sparkContext.setLogLevel(settings.log_level.upper())
    return spark


__all__ = ["SparkSettings", "java_available", "require_pyspark", "spark_session"]
