"""The worker: claims due rows, sends them, records what happened.

`dispatcher` runs the claim/send loop; `outcomes` decides what a provider's
answer means for the row; `backoff` says when to try again; `credentials`
holds the decrypted tokens; `runtime` wires a dispatcher to its database and
client; `daemon` runs it forever (`outbox run`) beside the maintenance jobs;
`progress` draws the bar of `dispatch --once`.
"""
