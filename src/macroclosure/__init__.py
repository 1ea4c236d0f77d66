"""macroclosure: macroscopic closure models learnt from partial microscopic forces."""

__version__ = "0.1.0"
