"""CallbackFunction: GET /callback."""
