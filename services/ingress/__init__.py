"""The HTTP edge: authenticates UseDesk webhooks, redacts their secrets and answers 200 only once
RabbitMQ confirmed a persistent copy."""
