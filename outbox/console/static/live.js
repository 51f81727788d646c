/* Live updates: the server's event stream (GET /v1/events/stream, Server-Sent
 * Events, the session cookie) drives refetches through the public API: an
 * event names what changed (chat, message, channel), and the page asks /v1
 * for it again. The frames are `id`, `event: <type>`, `data: <JSON>` with
 * {id, type, occurred_at, channel_id, chat_id, message_id, payload}.
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

  let source = null;
  let pollTimer = null;
  let opsTimer = null;

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
    if (evt.type.startsWith("channel.") || evt.type === "message.sent" || evt.type === "message.failed") {
      soon("channels", () => Ops.refreshChannels());
    }
    if (evt.type === "message.failed" || evt.type === "message.queued") {
      soon("dead", () => Ops.refreshDeadLetters());
    }
  }

  function handle(message) {
    let evt;
    try { evt = JSON.parse(message.data); } catch (err) { return; }
    if (!evt || typeof evt.type !== "string") return;
    onInbox(evt);
    onOps(evt);
  }

  let stopped = false;  // stop() before the page was ready: never connect

  function connect() {
    if (stopped) return;
    if (!window.EventSource) { poll(); return; }
    source = new EventSource(STREAM);
    for (const type of [...MESSAGE_EVENTS, ...CHAT_EVENTS, ...CHANNEL_EVENTS]) {
      source.addEventListener(type, handle);
    }
    source.addEventListener("message", handle);  // frames without an event name
    source.addEventListener("open", () => { stopPolling(); setState("live"); });
    source.addEventListener("error", () => {
      // CONNECTING: the browser reconnects by itself (sending Last-Event-ID).
      // CLOSED: refused (no stream here, or signed out): poll instead.
      if (stopped) return;
      if (source.readyState === EventSource.CLOSED) { setState("refreshing every 5 s"); poll(); }
      else setState("reconnecting…");
    });
  }

  function stopPolling() {
    clearInterval(pollTimer);
    clearInterval(opsTimer);
    pollTimer = opsTimer = null;
  }

  function poll() {
    if (pollTimer) return;
    pollTimer = setInterval(() => {
      if (document.visibilityState !== "visible") return;
      if (typeof Inbox !== "undefined") {
        Inbox.refreshList();
        const open = Inbox.openChatId();
        if (open) {
          Inbox.loadNewer(open);
          for (const id of Inbox.unsettled()) Inbox.refreshMessage(id);
        }
      }
      if (typeof Ops !== "undefined") Ops.refreshChannels();
    }, POLL_MS);
  }

  document.addEventListener("DOMContentLoaded", () => {
    // After the page's own start (Console.start has the session by then).
    const wait = setInterval(() => {
      if (document.body.dataset.ready === "true") { clearInterval(wait); connect(); }
    }, 100);
  });

  /** No more updates: the stream closed, polling stopped (tests; a page being left). */
  function stop() {
    stopped = true;
    if (source) source.close();
    stopPolling();
    setState("");
  }

  return { handle, stop, polling: () => Boolean(pollTimer),
           connected: () => Boolean(source && source.readyState === EventSource.OPEN) };
})();
