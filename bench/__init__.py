"""edge-mtl bench: measuring tools beside the engine (latency, end-to-end FPS, machine and
provider reports). Imports the engine, never torch (the torch baseline row is handed in by the
CLI)."""
