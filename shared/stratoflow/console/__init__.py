"""The web console: static pages (HTML, JavaScript, CSS) shipped in the package and served
by the local API server (`stratoflow local up`) and by `stratoflow console`. The pages call
only the documented REST API; see `assets` for how a request path finds a file."""

DEFAULT_PORT = 8687
"""Where `stratoflow console` serves the console for a deployed stack unless told."""
