"""Behaviour tests of the Smartsheet emulator itself, over real HTTP on loopback."""
