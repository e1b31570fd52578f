DEFAULT_API_PORT = 8686
"""Where `stratoflow local up` serves the REST API and the console unless told (here, not
in `local.http`, so that the CLI's options need not import the server)."""
