"""Everything that is not Lambda code: the local stack (embedded AWS, gateway, Smartsheet emulator) and scripts."""
