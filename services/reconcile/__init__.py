"""`deskledger reconcile`: heal what webhooks missed, from UseDesk's REST API (issue 15)."""
