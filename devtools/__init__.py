"""What the tests and the demo use around the app, never shipped with it: a headless-browser driver, a local
redis-server, and the demo's smoke run."""
