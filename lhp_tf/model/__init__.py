"""Lite-HRNet and Lite-HRNet Plus as Keras layers, one block per module."""
