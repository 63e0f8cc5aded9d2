"""Detectors of the detection engine, one idea per module, all behind :class:`actors.detectors.base.Detector`."""
