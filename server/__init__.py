"""An asyncio API server foundation on aiohttp. Importing this package opens nothing and imports nothing else."""
