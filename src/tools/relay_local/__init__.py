"""The relay on one machine, without AWS and without Docker: local AWS, API, queue consumer."""
