/* Live updates: the server's event stream (GET /v1/events/stream, Server-Sent
 * Events, the session cookie) drives refetches through the public API: an
 * event names what changed (chat, message, channel), and the page asks /v1
 * for it again. The frames are `id`, `event: <type>`, `data: <JSON>` with
 * {id, type, occurred_at, channel_id, chat_id, message_id, payload}.
 *
 * No event is lost between a page's first loads and the stream: the stream
 * opens first (Console.start waits for Live.opened()), so the server has
 * subscribed before the page reads anything; events that arrive before the
 * page is ready (body[data-ready]) are held and replayed then (refetches are
 * idempotent). If the stream is slow to open, the page loads anyway and
 * catches up once it does.
 *
 * Where the stream can't be opened (a server without it, or a proxy that
 * drops it), the page polls instead, every POLL_MS, so it still moves, only
 * later. Kept in this one file: the pages expose refresh hooks (Inbox, Ops)
 * and know nothing of events. */
"use strict";

const Live = (() => {
  const STREAM = "/v1/events/stream";
  const POLL_MS = 5000;
  const MESSAGE_EVENTS = ["message.queued", "message.sent", "message.delivered", "message.read",
                          "message.played", "message.failed", "message.cancelled",
                          "message.received", "message.reaction", "message.edited",
                          "message.deleted"];
  const CHAT_EVENTS = ["chat.read", "chat.archived", "chat.reopened", "chat.assigned"];
  const CHANNEL_EVENTS = ["channel.paused", "channel.resumed", "channel.disabled"];

  // How long a page's first loads wait for the stream to open before going
  // ahead without it (they catch up when it opens).
  const OPEN_WAIT_MS = 3000;

  let source = null;
  let pollTimer = null;
  let ready = false;      // the page's first loads are done (body[data-ready])
  let held = [];          // events that came before that, replayed then
  let waitedOut = false;  // the page stopped waiting for the stream before it opened
  let catchUpOnReady = false;
  let settle = null;
  const openedPromise = new Promise((resolve) => { settle = resolve; });
  function settleOpened() { if (settle) { settle(); settle = null; } }

  function setState(text) {
    const node = document.getElementById("live-state");
    if (node) node.textContent = text;
  }

  // Several events about one chat in a burst refetch it once.
  const pending = new Map();
  function soon(key, fn) {
    if (pending.has(key)) return;
    pending.set(key, setTimeout(() => { pending.delete(key); fn(); }, 150));
  }

  function onInbox(evt) {
    if (typeof Inbox === "undefined") return;
    if (evt.chat_id) soon("chat:" + evt.chat_id, () => Inbox.refreshChat(evt.chat_id));
    if (evt.type === "message.received" || evt.type === "message.queued") {
      soon("newer:" + evt.chat_id, () => Inbox.loadNewer(evt.chat_id));
    } else if (evt.message_id && evt.type.startsWith("message.")) {
      soon("msg:" + evt.message_id, () => Inbox.refreshMessage(evt.message_id));
    }
  }

  function onOps(evt) {
    if (typeof Ops === "undefined") return;
    // Queue depth moves on each of these (the table's Queued and the chart).
    if (evt.type.startsWith("channel.") || ["message.queued", "message.sent", "message.failed",
                                            "message.cancelled"].includes(evt.type)) {
      soon("channels", () => Ops.refreshChannels());
    }
    if (["message.failed", "message.queued", "message.cancelled"].includes(evt.type)) {
      soon("dead", () => Ops.refreshDeadLetters());
    }
  }

  function dispatch(evt) {
    onInbox(evt);
    onOps(evt);
  }

  function handle(message) {
    let evt;
    try { evt = JSON.parse(message.data); } catch (err) { return; }
    if (!evt || typeof evt.type !== "string") return;
    if (ready) dispatch(evt); else held.push(evt);
  }

  let stopped = false;  // stop(): never connect, nothing more

  function connect() {
    if (stopped) return;
    if (!window.EventSource) { settleOpened(); poll(); return; }
    source = new EventSource(STREAM);
    for (const type of [...MESSAGE_EVENTS, ...CHAT_EVENTS, ...CHANNEL_EVENTS]) {
      source.addEventListener(type, handle);
    }
    source.addEventListener("message", handle);  // frames without an event name
    source.addEventListener("open", () => {
      stopPolling();
      setState("live");
      if (waitedOut) {
        // The page read before the server subscribed: what happened in
        // between is only in a full refetch.
        waitedOut = false;
        if (ready) refreshAll(); else catchUpOnReady = true;
      }
      settleOpened();
    });
    source.addEventListener("error", () => {
      // CONNECTING: the browser reconnects by itself (sending Last-Event-ID).
      // CLOSED: refused (no stream here, or signed out): poll instead.
      if (stopped) return;
      if (source.readyState === EventSource.CLOSED) {
        setState("refreshing every 5 s");
        settleOpened();
        poll();
      } else setState("reconnecting…");
    });
    setTimeout(() => { if (settle) { waitedOut = true; settleOpened(); } }, OPEN_WAIT_MS);
  }

  function onReady() {
    if (ready || document.body.dataset.ready !== "true") return;
    ready = true;
    const events = held;
    held = [];
    for (const evt of events) dispatch(evt);
    if (catchUpOnReady) { catchUpOnReady = false; refreshAll(); }
  }

  function stopPolling() {
    clearInterval(pollTimer);
    pollTimer = null;
  }

  /** Everything the page shows that can change, fetched again. */
  function refreshAll() {
    if (typeof Inbox !== "undefined") {
      Inbox.refreshList();
      const open = Inbox.openChatId();
      if (open) {
        Inbox.loadNewer(open);
        for (const id of Inbox.unsettled()) Inbox.refreshMessage(id);
      }
    }
    if (typeof Ops !== "undefined") { Ops.refreshChannels(); Ops.refreshDeadLetters(); }
  }

  function poll() {
    if (pollTimer) return;
    pollTimer = setInterval(() => {
      if (document.visibilityState === "visible") refreshAll();
    }, POLL_MS);
  }

  // Deferred scripts run before DOMContentLoaded, so the stream opens before
  // the page's own start reads anything.
  connect();
  new MutationObserver(onReady).observe(document.body, { attributes: true, attributeFilter: ["data-ready"] });
  onReady();

  /** No more updates: the stream closed, polling stopped (tests; a page being left). */
  function stop() {
    stopped = true;
    if (source) source.close();
    stopPolling();
    setState("");
    settleOpened();
  }

  return { handle, stop, opened: () => openedPromise, polling: () => Boolean(pollTimer),
           connected: () => Boolean(source && source.readyState === EventSource.OPEN) };
})();
