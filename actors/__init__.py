"""The stream: Ray actors that own Kafka partitions and run stateful per-sensor detection.

Start with :mod:`actors.supervisor` (ownership and the entry points ``start_stream``,
``stream_status``, ``scale_stream``, ``stop_stream``); :mod:`actors.worker` holds the
processing loop, :mod:`actors.ownership` partition ownership and restore,
:mod:`actors.log_reset` lost-log detection, :mod:`actors.checkpoint` the ordered checkpoint, :mod:`actors.sinks`
the outputs and :mod:`actors.state` the per-partition state. See ``docs/stream.md``.
"""
