"""Analytics: KPIs computed from live values and rollups, and the project's storage jobs."""
