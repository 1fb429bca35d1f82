"""fercli: lightweight facial expression recognition (LFER-LDL) as a command-line pipeline."""

__version__ = "0.1.0"
