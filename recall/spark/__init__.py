"""The Spark engine: ``recall run --engine spark`` (:func:`recall.spark.engine.run_spark`).

Importing this package (or :mod:`recall.spark.session`, :mod:`recall.spark.engine`)
does not import pyspark; the modules that build DataFrames import it, and
:func:`recall.spark.session.require_pyspark` turns a missing install into a
:class:`recall.errors.RecallError` naming the fix (``pip install '.[spark]'``, Java 17).
"""
