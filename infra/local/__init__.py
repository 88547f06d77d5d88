"""The local stack: embedded AWS, the HTTP gateway and the Smartsheet emulator, all on loopback."""
