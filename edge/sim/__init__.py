"""Simulated devices and services that behave like the real ones, for the demo and for tests."""

from edge.sim.central import CentralSim
from edge.sim.printer import SimPrinter, SimSerialPrinter, serve

__all__ = ["CentralSim", "SimPrinter", "SimSerialPrinter", "serve"]
