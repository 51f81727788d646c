/* The team inbox: the chat list (search, filters in the URL, infinite scroll
 * by cursor), the thread (bubbles, ticks, retry, load older) and the
 * composer. Everything through /v1. live.js calls Inbox.refreshChat,
 * Inbox.refreshMessage and Inbox.loadNewer when events arrive. */
"use strict";

const Inbox = (() => {
  const { api, el, fmt } = Console;
  const PAGE = 30;
  const THREAD_PAGE = 50;
  const MAX_TEXT = 4096;
  const FINAL = new Set(["read", "played", "failed", "cancelled", "deleted"]);
  const TICKS = { pending: "…", sent: "✓", delivered: "✓✓", read: "✓✓", played: "✓✓",
                  failed: "!", cancelled: "×" };

  const state = {
    chats: new Map(),      // id -> chat summary
    nextCursor: null,
    loadingList: false,
    listToken: 0,          // a newer list load makes an older one's answer stale
    chat: null,            // the open chat (detail)
    users: new Map(),      // id -> email (admins only: GET /v1/users)
    messages: new Map(),   // id -> thread message of the open chat
    beforeCursor: null,
    afterCursor: null,
  };

  const $ = (id) => document.getElementById(id);

  // --- the chat list --------------------------------------------------------

  function filters() {
    const q = new URLSearchParams(location.search);
    return { q: q.get("q") || "", unread: q.get("unread") === "1", mine: q.get("mine") === "1",
             groups: q.get("groups") === "1", archived: q.get("archived") === "1" };
  }

  function setFilter(name, value) {
    const q = new URLSearchParams(location.search);
    if (value === true) q.set(name, "1");
    else if (value) q.set(name, value);
    else q.delete(name);
    const s = q.toString();
    history.replaceState(null, "", location.pathname + (s ? "?" + s : ""));
    showFilters();
    reloadList();
  }

  function showFilters() {
    const f = filters();
    for (const chip of document.querySelectorAll("[data-filter]")) {
      chip.setAttribute("aria-pressed", String(Boolean(f[chip.dataset.filter])));
    }
    if (document.activeElement !== $("search")) $("search").value = f.q;
  }

  function listParams(cursor) {
    const f = filters();
    return { q: f.q.trim(), unread: f.unread, archived: f.archived, is_group: f.groups ? "true" : null,
             assigned_to: f.mine ? "me" : null, limit: PAGE, cursor };
  }

  /** The list from its first page (new search or filters). The old rows stay
   * until the new ones arrive, so the list doesn't flash or drop the focus. */
  async function reloadList() {
    state.nextCursor = null;
    await loadMore(true);
  }

  async function loadMore(first) {
    if (state.loadingList && !first) return;
    if (!first && !state.nextCursor) return;
    const token = ++state.listToken;
    state.loadingList = true;
    try {
      let cursor = first ? null : state.nextCursor;
      // A broad search reads a bounded stretch of the list per call: a short
      // (even empty) page with a cursor means "keep going", so follow it a while.
      for (let calls = 0; ; calls++) {
        const page = await api.get("/v1/chats", listParams(cursor));
        if (token !== state.listToken) return;
        if (first && calls === 0) state.chats.clear();
        for (const c of page.chats) state.chats.set(c.id, c);
        state.nextCursor = cursor = page.next_cursor;
        renderList();
        if (!cursor || page.chats.length >= PAGE || calls >= 99) break;
      }
    } catch (err) {
      Console.showError(err);
    } finally {
      if (token === state.listToken) state.loadingList = false;
    }
  }

  function order(a, b) {
    const ta = a.last_message_at || a.created_at;
    const tb = b.last_message_at || b.created_at;
    return ta < tb ? 1 : ta > tb ? -1 : (a.id < b.id ? 1 : -1);
  }

  function renderList() {
    const list = $("chat-list");
    // A re-render must not take the keyboard focus away from a row.
    const focused = document.activeElement && document.activeElement.closest(".chat-row");
    const rows = [...state.chats.values()].sort(order).map(chatRow);
    list.replaceChildren(...rows);
    $("chat-list-empty").hidden = rows.length > 0;
    if (focused) {
      const again = list.querySelector(`.chat-row[data-chat-id="${focused.dataset.chatId}"] a`);
      if (again) again.focus({ preventScroll: true });
    }
  }

  function chatRow(c) {
    const open = state.chat && state.chat.id === c.id;
    const name = c.name || c.phone;
    return el("li", { class: "chat-row" + (open ? " open" : "") + (c.unread_count ? " unread" : ""),
                      dataset: { chatId: c.id } },
      el("a", { href: `/chats/${c.id}`, "aria-current": open ? "page" : null,
                onclick: (e) => { if (!e.ctrlKey && !e.metaKey) { e.preventDefault(); openChat(c.id, true); } } },
        el("span", { class: "avatar", "aria-hidden": "true" }, c.is_group ? "G" : initials(name)),
        el("span", { class: "chat-main" },
          el("span", { class: "chat-top" },
            el("span", { class: "chat-name" }, name),
            el("time", { class: "chat-time", datetime: c.last_message_at, title: fmt.full(c.last_message_at) },
               fmt.short(c.last_message_at))),
          el("span", { class: "chat-bottom" },
            el("span", { class: "preview" }, c.last_message_preview || ""),
            c.assigned_to ? el("span", { class: "tag", title: "Assigned" }, isMe(c.assigned_to) ? "me" : "assigned") : null,
            c.status === "archived" ? el("span", { class: "tag" }, "archived") : null,
            c.unread_count ? el("span", { class: "badge", "aria-label": `${c.unread_count} unread` },
                                String(c.unread_count)) : null))));
  }

  function initials(name) {
    const parts = String(name).replace(/^\+/, "").split(/\s+/).filter(Boolean);
    return (parts.length > 1 ? parts[0][0] + parts[1][0] : String(name).slice(0, 2)).toUpperCase();
  }

  function isMe(userId) {
    const s = Console.session();
    return s && s.user_id === userId;
  }

  /** One chat's row again (an event about it): to the top when it moved. */
  async function refreshChat(chatId) {
    try {
      const c = await api.get(`/v1/chats/${chatId}`);
      if (matchesFilters(c)) state.chats.set(c.id, c);
      else state.chats.delete(c.id);
      renderList();
      if (state.chat && state.chat.id === c.id) { state.chat = c; renderHead(); }
    } catch (err) {
      if (err.status === 404) { state.chats.delete(chatId); renderList(); }
    }
  }

  function matchesFilters(c) {
    const f = filters();
    if (f.archived !== (c.status === "archived")) return false;
    if (f.unread && !c.unread_count) return false;
    if (f.groups && !c.is_group) return false;
    if (f.mine && !isMe(c.assigned_to)) return false;
    if (f.q) {
      const q = f.q.trim().toLowerCase();
      const digits = q.replace(/\D/g, "");
      const byName = (c.name || "").toLowerCase().startsWith(q);
      const byPhone = digits && c.phone.replace(/\D/g, "").startsWith(digits);
      if (!byName && !byPhone) return false;
    }
    return true;
  }

  /** The first page again (new chats, new order), keeping what is loaded. */
  async function refreshList() {
    try {
      const page = await api.get("/v1/chats", listParams(null));
      for (const c of page.chats) state.chats.set(c.id, c);
      renderList();
    } catch (err) { /* the next refresh tries again */ }
  }

  // --- the thread -------------------------------------------------------------

  async function openChat(chatId, push) {
    if (push) history.pushState(null, "", `/chats/${chatId}` + location.search);
    document.body.classList.add("chat-open");
    $("thread-placeholder").hidden = true;
    $("thread").hidden = true;
    state.messages.clear();
    state.beforeCursor = state.afterCursor = null;
    $("bubbles").replaceChildren();
    let chat;
    try {
      chat = await api.get(`/v1/chats/${chatId}`);
    } catch (err) {
      state.chat = null;
      $("thread-placeholder").textContent = err.status === 404 || err.status === 422
        ? "Chat not found. It may belong to another workspace, or the link is wrong."
        : err.message;
      $("thread-placeholder").hidden = false;
      renderList();
      return;
    }
    state.chat = chat;
    renderHead();
    $("thread").hidden = false;
    renderList();
    try {
      const page = await api.get(`/v1/chats/${chatId}/messages`, { limit: THREAD_PAGE });
      if (!state.chat || state.chat.id !== chatId) return;
      page.messages.forEach((m) => state.messages.set(m.id, m));
      state.beforeCursor = page.before_cursor;
      state.afterCursor = page.after_cursor;
      renderThread(true);
    } catch (err) { Console.showError(err); }
    if (chat.unread_count > 0 && Console.can("chats")) markRead(chat);
    if (Console.can("send")) $("text").focus();
  }

  async function markRead(chat) {
    try {
      await api.post(`/v1/chats/${chat.id}/read`);
      const row = state.chats.get(chat.id);
      if (row) { row.unread_count = 0; renderList(); }
      chat.unread_count = 0;
    } catch (err) { Console.showError(err); }
  }

  function renderHead() {
    const c = state.chat;
    $("thread-name").textContent = c.name || c.phone;
    $("thread-phone").textContent = c.name ? c.phone : "";
    $("thread-assignee").textContent = !c.assigned_to ? ""
      : isMe(c.assigned_to) ? "Assigned to you"
      : `Assigned to ${state.users.get(c.assigned_to) || "someone else"}`;
    $("assign-to").hidden = state.users.size === 0;
    $("assign-to").value = "";
    const agent = Console.can("chats");
    $("thread-actions").hidden = !agent;
    $("assign-me").hidden = isMe(c.assigned_to);
    $("unassign").hidden = !c.assigned_to;
    $("archive").hidden = c.status === "archived";
    $("unarchive").hidden = c.status !== "archived";
    const sender = Console.can("send");
    $("composer-readonly").hidden = sender;
    for (const id of ["text", "send", "attach"]) $(id).disabled = !sender;
    document.querySelector(".compose-row").hidden = !sender;
    $("counter").hidden = !sender;
  }

  function sortedMessages() {
    return [...state.messages.values()].sort((a, b) =>
      (a.created_at < b.created_at ? -1 : a.created_at > b.created_at ? 1 : 0));
  }

  function renderThread(scrollToEnd) {
    const box = $("messages");
    const nearEnd = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
    const oldHeight = box.scrollHeight;
    const items = [];
    let day = null;
    for (const m of sortedMessages()) {
      const d = new Date(when(m)).toDateString();
      if (d !== day) {
        day = d;
        items.push(el("li", { class: "day", role: "separator" }, fmt.date(when(m))));
      }
      items.push(bubble(m));
    }
    $("bubbles").replaceChildren(...items);
    $("load-older").hidden = !state.beforeCursor;
    if (scrollToEnd === true || nearEnd) box.scrollTop = box.scrollHeight;
    else if (scrollToEnd === "keep") box.scrollTop = box.scrollHeight - oldHeight + box.scrollTop;
  }

  /** When it was written: an inbound message's WhatsApp time (it may
   * arrive late), an outbound one's queueing. */
  function when(m) {
    return (m.direction === "inbound" && m.sent_at) || m.created_at;
  }

  function mediaLink(m) {
    const p = m.payload || {};
    if (typeof p.media === "string" && /^https?:\/\//.test(p.media)) return p.media;
    const inner = p[m.type];
    if (inner && typeof inner === "object" && typeof inner.link === "string" && /^https?:\/\//.test(inner.link)) {
      return inner.link;
    }
    return null;
  }

  function bubble(m) {
    const out = m.direction === "outbound";
    const parts = [];
    if (m.deleted) {
      parts.push(el("p", { class: "body deleted" }, "This message was deleted"));
    } else {
      if (m.type !== "text" && m.type !== "read") {
        const link = mediaLink(m);
        parts.push(link ? el("a", { class: "media", href: link, target: "_blank", rel: "noopener noreferrer" },
                             `${m.type}: open`)
                        : el("span", { class: "media" }, m.type));
      }
      if (m.body) parts.push(el("p", { class: "body" }, m.body));
    }
    const reactions = Object.values(m.reactions || {}).map((r) => r && r.emoji).filter(Boolean);
    const meta = el("span", { class: "meta" },
      m.edited && !m.deleted ? el("span", { class: "edited" }, "edited") : null,
      el("time", { datetime: when(m), title: fmt.full(when(m)) }, fmt.time(when(m))),
      out ? el("span", { class: `tick ${m.status}`, title: m.status, "aria-label": m.status,
                         dataset: { status: m.status } }, TICKS[m.status] || "") : null);
    const failed = out && m.status === "failed";
    return el("li", { class: `bubble ${out ? "out" : "in"}${failed ? " failed" : ""}`,
                      dataset: { messageId: m.id, status: m.status } },
      ...parts,
      reactions.length ? el("span", { class: "reactions", "aria-label": "reactions" }, reactions.join(" ")) : null,
      failed ? el("p", { class: "error" }, `Not sent: ${m.error || "failed"}`,
                  Console.can("send") && !m.local
                    ? el("button", { type: "button", class: "retry", onclick: () => retry(m) }, "Retry") : null)
             : null,
      meta);
  }

  async function retry(m) {
    try {
      await api.post(`/v1/messages/${m.id}/retry`);
      m.status = "pending";
      m.error = null;
      renderThread();
    } catch (err) { Console.showError(err); }
  }

  async function loadOlder() {
    if (!state.chat || !state.beforeCursor) return;
    try {
      const page = await api.get(`/v1/chats/${state.chat.id}/messages`,
                                 { before: state.beforeCursor, limit: THREAD_PAGE });
      page.messages.forEach((m) => state.messages.set(m.id, m));
      state.beforeCursor = page.before_cursor;
      renderThread("keep");
    } catch (err) { Console.showError(err); }
  }

  /** Messages newer than the latest shown (an inbound one arrived). */
  async function loadNewer(chatId) {
    if (!state.chat || (chatId && state.chat.id !== chatId)) return;
    try {
      // No cursor yet (the thread was empty): its latest page.
      const params = state.afterCursor ? { after: state.afterCursor, limit: THREAD_PAGE }
                                       : { limit: THREAD_PAGE };
      const page = await api.get(`/v1/chats/${state.chat.id}/messages`, params);
      if (!page.messages.length) return;
      page.messages.forEach((m) => state.messages.set(m.id, m));
      if (page.after_cursor) state.afterCursor = page.after_cursor;
      renderThread();
      if (document.visibilityState === "visible" && Console.can("chats")
          && page.messages.some((m) => m.direction === "inbound")) {
        markRead(state.chat);
      }
    } catch (err) { /* the next event tries again */ }
  }

  /** One bubble again (a status, a reaction, an edit). */
  async function refreshMessage(messageId) {
    const known = state.messages.get(messageId);
    if (!known) return false;
    try {
      const d = await api.get(`/v1/messages/${messageId}`);
      Object.assign(known, {
        status: d.status, error: d.error, body: d.body, payload: d.payload,
        reactions: d.reactions, edited: Boolean(d.edited_at), edited_at: d.edited_at,
        deleted: Boolean(d.deleted_at), deleted_at: d.deleted_at,
        sent_at: d.sent_at, delivered_at: d.delivered_at, read_at: d.read_at,
      });
      renderThread();
    } catch (err) { /* gone or unreachable: leave it */ }
    return true;
  }

  /** The open chat's outbound bubbles that may still change. */
  function unsettled() {
    return [...state.messages.values()]
      .filter((m) => m.direction === "outbound" && !m.local && !FINAL.has(m.status))
      .map((m) => m.id);
  }

  // --- the composer -----------------------------------------------------------

  function updateCounter() {
    const n = $("text").value.length;
    $("counter").textContent = `${n}/${MAX_TEXT}`;
    $("counter").classList.toggle("over", n >= MAX_TEXT);
    const t = $("text");
    t.style.height = "auto";
    t.style.height = Math.min(t.scrollHeight, 160) + "px";
  }

  async function send() {
    if (!state.chat) return;
    const text = $("text").value;
    const withMedia = $("attach").getAttribute("aria-pressed") === "true";
    const mediaUrl = $("media-url").value.trim();
    if (!withMedia && !text.trim()) return;
    if (withMedia && !mediaUrl) { $("media-url").focus(); return; }
    const key = Console.uuid4();
    const body = withMedia
      ? { media_type: $("media-type").value, media: mediaUrl, caption: text || undefined, idempotency_key: key }
      : { text, idempotency_key: key };
    const now = new Date().toISOString();
    const local = {
      id: "local-" + key, local: true, direction: "outbound", type: withMedia ? body.media_type : "text",
      body: text || null, payload: withMedia ? { media: mediaUrl } : {}, status: "pending", error: null,
      reactions: {}, edited: false, deleted: false, created_at: now,
    };
    state.messages.set(local.id, local);
    $("text").value = "";
    $("media-url").value = "";
    updateCounter();
    renderThread(true);
    const chatId = state.chat.id;
    try {
      const queued = await api.post(`/v1/chats/${chatId}/messages`, body);
      state.messages.delete(local.id);
      if (state.chat && state.chat.id === chatId) {
        state.messages.set(queued.message_id, { ...local, id: queued.message_id, local: false,
                                                status: queued.status });
        renderThread(true);
        refreshMessage(queued.message_id);
      }
      refreshChat(chatId);
    } catch (err) {
      local.status = "failed";
      local.error = err.message;
      renderThread();
    }
  }

  function toggleMedia() {
    const on = $("attach").getAttribute("aria-pressed") !== "true";
    $("attach").setAttribute("aria-pressed", String(on));
    $("media-fields").hidden = !on;
    if (on) $("media-url").focus();
  }

  // --- chat actions -------------------------------------------------------------

  async function act(path, body) {
    if (!state.chat) return;
    try {
      await api.post(`/v1/chats/${state.chat.id}/${path}`, body);
    } catch (err) { Console.showError(err); }
    await refreshChat(state.chat.id);
  }

  async function assign(to) {
    if (!state.chat) return;
    try {
      state.chat = await api.patch(`/v1/chats/${state.chat.id}`, { assigned_to: to });
      state.chats.set(state.chat.id, state.chat);
      renderHead();
      renderList();
    } catch (err) { Console.showError(err); }
  }

  /** Admins assign chats to anyone: the workspace's active users. */
  async function loadUsers() {
    try {
      const { users } = await api.get("/v1/users");
      const active = users.filter((u) => !u.disabled_at);
      for (const u of active) state.users.set(u.id, u.email);
      $("assign-to").append(...active.map((u) => el("option", { value: u.id }, u.email)));
    } catch (err) { /* assigning to oneself still works */ }
  }

  // --- start ------------------------------------------------------------------------

  function chatIdFromPath() {
    const m = location.pathname.match(/^\/chats\/([^/]+)$/);
    return m ? decodeURIComponent(m[1]) : null;
  }

  function closeChat() {
    state.chat = null;
    document.body.classList.remove("chat-open");
    $("thread").hidden = true;
    $("thread-placeholder").textContent = "Choose a chat to read it.";
    $("thread-placeholder").hidden = false;
    renderList();
  }

  async function start() {
    try { await Console.start(); } catch (err) { if (err.status !== 401) Console.showError(err); return; }
    showFilters();
    let timer = null;
    $("search").addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(() => setFilter("q", $("search").value.trim()), 250);
    });
    $("search-form").addEventListener("submit", (e) => { e.preventDefault(); setFilter("q", $("search").value.trim()); });
    for (const chip of document.querySelectorAll("[data-filter]")) {
      chip.addEventListener("click", () => setFilter(chip.dataset.filter, chip.getAttribute("aria-pressed") !== "true"));
    }
    new IntersectionObserver((entries) => {
      if (entries.some((e) => e.isIntersecting)) loadMore(false);
    }, { root: document.querySelector(".chat-list-pane"), rootMargin: "200px" }).observe($("chat-list-more"));
    $("load-older").addEventListener("click", loadOlder);
    $("composer").addEventListener("submit", (e) => { e.preventDefault(); send(); });
    $("text").addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); send(); }
    });
    $("text").addEventListener("input", updateCounter);
    $("attach").addEventListener("click", toggleMedia);
    $("assign-me").addEventListener("click", () => assign("me"));
    $("unassign").addEventListener("click", () => assign(null));
    $("assign-to").addEventListener("change", () => { if ($("assign-to").value) assign($("assign-to").value); });
    if (Console.can("admin")) await loadUsers();
    $("archive").addEventListener("click", () => act("archive"));
    $("unarchive").addEventListener("click", () => act("unarchive"));
    $("back").addEventListener("click", () => { history.pushState(null, "", "/" + location.search); closeChat(); });
    // Keyboard: "/" searches; Escape leaves the open chat for the list.
    document.addEventListener("keydown", (e) => {
      const typing = e.target.closest && e.target.closest("input, textarea, select");
      if (e.key === "/" && !typing) { e.preventDefault(); $("search").focus(); }
      if (e.key === "Escape" && state.chat && !(typing && e.target.value)) {
        const id = state.chat.id;
        history.pushState(null, "", "/" + location.search);
        closeChat();
        const row = document.querySelector(`.chat-row[data-chat-id="${id}"] a`);
        if (row) row.focus();
      }
    });
    window.addEventListener("popstate", () => {
      const id = chatIdFromPath();
      if (id) openChat(id, false); else closeChat();
    });
    await reloadList();
    const id = chatIdFromPath();
    if (id) await openChat(id, false);
    document.body.dataset.ready = "true";
  }

  document.addEventListener("DOMContentLoaded", start);

  return { refreshChat, refreshList, refreshMessage, loadNewer, unsettled,
           openChatId: () => (state.chat ? state.chat.id : null) };
})();
