"""Third-party clients, raising errors that know nothing of HTTP answers."""
