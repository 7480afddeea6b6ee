"""Store edge agent: takes orders, keeps them safe, prints them, reconciles, alerts."""

__version__ = "0.1.0"
