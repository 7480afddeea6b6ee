"""Simulated devices and services that behave like the real ones, for the demo and for tests."""

from edge.sim.printer import SimPrinter, serve

__all__ = ["SimPrinter", "serve"]
