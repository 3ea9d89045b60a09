"""Execute compiled programs: engines, cache, scheduler, traces."""
