"""What Whapi's webhooks bring back: `routes` maps each event to what to do
with it (pure), `apply` does it in the database."""
