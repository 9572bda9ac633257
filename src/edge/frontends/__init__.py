"""The two front doors: the only modules that know aiohttp's and grpc's server types."""
