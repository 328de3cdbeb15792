"""Redis adapters of the ports, for deployments that already run Redis: the only package that imports the
``redis`` client. Import the module you need (``agex.adapters.redis.limiter``); none is loaded by this package."""
