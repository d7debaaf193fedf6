"""`deskledger replay`: rebuild projections beside the live tables and swap them in; reprocess
rejected deliveries. `rebuild` explains why a swap neither misses nor doubles an event."""
