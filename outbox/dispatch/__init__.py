"""The worker: claims due rows, sends them, records what happened.

`dispatcher` runs the claim/send loop (`Dispatcher`, with `DispatcherConfig`
from `config` and the `Summary` of `summary`); `completer` records what
happened, in batches; `gate` holds back a troubled channel's claimed rows
(pure); `outcomes` decides what a provider's answer means for the row;
`backoff` says when to try again (a message, or a lost database), and
`outage` waits a lost database out; `credentials` holds the decrypted
tokens; `runtime` wires a dispatcher to its database and client; `daemon`
runs it forever (`outbox run`) and schedules the maintenance services;
`progress` draws the bar of `dispatch --once`. Every statement the
dispatcher runs is in db/dispatch_store.py.
"""
