"""Performance measurement: throughput of encoders and of the training step, and the data engine's speed.
Imports the engine and everything below it, and the app layer's input checks.
"""
