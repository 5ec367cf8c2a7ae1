"""Synthesis-method plugins shipped with acbench (installed as `acbench_methods`)."""
