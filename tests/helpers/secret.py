"""The webhook secret every test ingress accepts (its settings' `DESKLEDGER_SECRETS`)."""

TEST_SECRET = "test-secret-0123456789"
