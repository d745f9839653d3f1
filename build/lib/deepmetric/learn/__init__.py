"""Metric-learning core, on arrays alone: losses and miners (``losses``, ``mining``), the
projection head trained with them (``projector``), and per-clip pooling (``temporal``)."""
