/* The operations view (admins): channels and their queues, the last hour's
 * throughput, dead letters, message lookup, API keys, webhook endpoints and
 * users. Everything through /v1; live.js calls Ops.refreshChannels and Ops.refreshDeadLetters. */
"use strict";

const Ops = (() => {
  const { api, el, fmt } = Console;
  const $ = (id) => document.getElementById(id);
  const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
  let channels = [];
  let deadCursor = null;
  const selected = new Set();
  let shownEndpoint = null;  // the endpoint whose deliveries are listed
  let deliveriesBefore = null;  // the oldest delivery id listed: the next page's cursor

  function confirmed(text) { return window.confirm(text); }

  async function guard(fn) {
    try { return await fn(); } catch (err) { Console.showError(err); return undefined; }
  }

  // --- channels and throughput ------------------------------------------------

  async function refreshChannels() {
    const [list, stats] = await Promise.all([
      guard(() => api.get("/v1/channels")),
      guard(() => api.get("/v1/stats/throughput", { minutes: 60 })),
    ]);
    if (!list) return;
    channels = list.channels;
    const per = (stats && stats.channels) || {};
    const rows = channels.map((c) => channelRow(c, per[c.id] || { sent: 0, failed: 0 }));
    $("channels").tBodies[0].replaceChildren(...(rows.length ? rows
      : [el("tr", {}, el("td", { colspan: 8, class: "empty" }, "No channels yet: add one with `outbox channel add`."))]));
    const select = $("dead-channel");
    const current = select.value;
    select.replaceChildren(el("option", { value: "" }, "All channels"),
      ...channels.map((c) => el("option", { value: c.id }, c.name)));
    select.value = current;
    if (stats) drawChart(stats.series);
  }

  function channelRow(c, s) {
    const paused = c.status === "paused";
    return el("tr", { dataset: { channelId: c.id, status: c.status } },
      el("td", {}, el("strong", {}, c.name), el("br"), el("span", { class: "muted" }, c.phone_number)),
      el("td", {}, el("span", { class: `state ${c.status}` }, c.status)),
      el("td", {}, paused || c.status === "disabled"
        ? [c.pause_reason || c.pause_cause || "", el("br"), el("span", { class: "muted" }, paused ? fmt.left(c.paused_until) : "")]
        : ""),
      el("td", { class: "num queued" }, String(c.queued)),
      el("td", {}, c.oldest_due_at ? el("time", { datetime: c.oldest_due_at, title: fmt.full(c.oldest_due_at) }, fmt.ago(c.oldest_due_at)) : "—"),
      el("td", { class: "num" }, String(s.sent)),
      el("td", { class: "num" + (s.failed ? " bad" : "") }, String(s.failed)),
      el("td", { class: "actions" },
        paused || c.status === "disabled"
          ? el("button", { type: "button", class: "resume", onclick: () => resume(c) }, "Resume")
          : el("button", { type: "button", class: "pause", onclick: () => pause(c) }, "Pause"),
        el("button", { type: "button", onclick: () => replaceToken(c) }, "Replace token"),
        el("button", { type: "button", onclick: () => webhookInfo(c) }, "Webhook setup"),
        el("button", { type: "button", class: "new-secret", onclick: () => newWebhookSecret(c) }, "New webhook secret")));
  }

  async function pause(c) {
    const reason = window.prompt(`Pause ${c.name}? Its messages stay queued until you resume.\nReason (shown in this list):`, "paused by an admin");
    if (reason === null) return;
    await guard(() => api.post(`/v1/channels/${c.id}/pause`, { reason: reason || undefined }));
    refreshChannels();
  }

  async function resume(c) {
    await guard(() => api.post(`/v1/channels/${c.id}/resume`));
    refreshChannels();
  }

  async function replaceToken(c) {
    const token = window.prompt(`New Whapi token for ${c.name} (stored encrypted, never shown again):`);
    if (!token) return;
    if (await guard(() => api.put(`/v1/channels/${c.id}/token`, { token }))) refreshChannels();
  }

  async function webhookInfo(c) {
    const info = await guard(() => api.get(`/v1/channels/${c.id}/webhook-info`));
    if (info) showSetup(`Webhook setup for ${c.name}:`, info);
  }

  /** A leaked secret replaced: the old one keeps working a while, so that
   * Whapi's webhook settings can be changed over without a refused webhook. */
  async function newWebhookSecret(c) {
    const hours = window.prompt(`Give ${c.name} a new webhook secret? Then put it in Whapi's webhook settings.\nHours the old secret still works meanwhile (0 to 168):`, "24");
    if (hours === null) return;
    // Not a number: sent as typed, and the server's 422 says what it takes.
    const keep = hours.trim() === "" ? 0 : Number.isFinite(Number(hours)) ? Number(hours) : hours;
    const info = await guard(() => api.post(`/v1/channels/${c.id}/webhook-secret`, { keep_old_hours: keep }));
    if (!info) return;
    const old = info.previous_secret_valid_until
      ? `The old secret works until ${fmt.full(info.previous_secret_valid_until)}.`
      : "The old secret no longer works.";
    showSetup(`New webhook setup for ${c.name}. ${old}`, info);
  }

  function showSetup(title, info) {
    const box = $("webhook-info");
    box.textContent = `${title}\n` + JSON.stringify(info, null, 2);
    box.hidden = false;
  }

  function drawChart(series) {
    const box = $("chart");
    const W = 600, H = 140, P = 4;
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    svg.setAttribute("preserveAspectRatio", "none");
    const max = Math.max(1, ...series.map((p) => Math.max(p.sent, p.retried, p.failed)));
    const x = (i) => P + (i * (W - 2 * P)) / Math.max(1, series.length - 1);
    const y = (v) => H - P - (v * (H - 2 * P)) / max;
    // The queue's depth, on a scale of its own (it can be thousands while a
    // minute sends tens), drawn first as an area behind the lines.
    const deepest = Math.max(1, ...series.map((p) => p.queued));
    const yq = (v) => H - P - (v * (H - 2 * P)) / deepest;
    const area = document.createElementNS(ns, "polygon");
    area.setAttribute("class", "queued");
    area.setAttribute("points", [`${x(0).toFixed(1)},${H - P}`,
      ...series.map((p, i) => `${x(i).toFixed(1)},${yq(p.queued).toFixed(1)}`),
      `${x(series.length - 1).toFixed(1)},${H - P}`].join(" "));
    svg.append(area);
    for (const key of ["sent", "retried", "failed"]) {
      const line = document.createElementNS(ns, "polyline");
      line.setAttribute("class", key);
      line.setAttribute("points", series.map((p, i) => `${x(i).toFixed(1)},${y(p[key]).toFixed(1)}`).join(" "));
      svg.append(line);
    }
    const total = (k) => series.reduce((n, p) => n + p[k], 0);
    const now = series.length ? series[series.length - 1].queued : 0;
    box.setAttribute("aria-label", `Last hour: ${total("sent")} sent, ${total("retried")} retried, ${total("failed")} failed; peak ${max} a minute; queue depth ${now} now, at most ${deepest}`);
    box.dataset.queued = String(now);
    box.replaceChildren(svg, el("span", { class: "muted peak" }, `peak ${max}/min · queue ${now} now, max ${deepest}`));
  }

  // --- dead letters --------------------------------------------------------------

  // The "since" choices of the dead letters, in hours (empty: any time).
  function deadSince() {
    const hours = Number($("dead-since").value);
    return hours ? new Date(Date.now() - hours * 3600_000).toISOString() : null;
  }

  const DEAD_PAGE = 50;

  /** how: "more" (the next page below), "keep" (a refresh that lists as many
   * rows as are shown, so an operator further down keeps their place: live.js
   * calls it on every message event) or "reset" (a new filter: the first page). */
  async function refreshDeadLetters(how) {
    const params = { status: "failed", channel_id: $("dead-channel").value || null, since: deadSince() };
    const body = $("dead").tBodies[0];
    const want = how === "keep" ? Math.max(DEAD_PAGE, body.rows.length) : DEAD_PAGE;
    const page = { messages: [], next_cursor: how === "more" ? deadCursor : null };
    do {
      const next = await guard(() => api.get("/v1/messages", {
        ...params, limit: Math.min(500, want - page.messages.length), cursor: page.next_cursor }));
      if (!next) return;
      page.messages.push(...next.messages);
      page.next_cursor = next.next_cursor;
    } while (page.next_cursor && page.messages.length < want);
    if (how !== "more") {
      // What the operator selected stays selected among the rows still
      // listed: only those that left the list leave the selection.
      const listed = new Set(page.messages.filter((m) => m.outbox_status === "failed").map((m) => m.message_id));
      for (const id of [...selected]) if (!listed.has(id)) selected.delete(id);
      body.replaceChildren();
    }
    body.append(...page.messages.map(deadRow));
    deadCursor = page.next_cursor;
    $("dead-more").hidden = !deadCursor;
    $("dead-empty").hidden = body.rows.length > 0;
    updateSelection();
  }

  function deadRow(m) {
    // Failed in the queue: retry or cancel it. Failed after WhatsApp took it
    // (a status report): nothing to send again or to take back.
    const queued = m.outbox_status === "failed";
    return el("tr", { dataset: { messageId: m.message_id } },
      el("td", {}, queued ? el("input", { type: "checkbox", class: "pick", "aria-label": `Select ${m.message_id}`,
                                          checked: selected.has(m.message_id),
                                          onchange: (e) => { e.target.checked ? selected.add(m.message_id) : selected.delete(m.message_id); updateSelection(); } }) : ""),
      el("td", {}, el("time", { datetime: m.created_at, title: fmt.full(m.created_at) }, fmt.short(m.created_at))),
      el("td", {}, m.to),
      el("td", { class: "clip" }, m.body || m.type),
      el("td", { class: "clip bad" }, m.error || m.last_error || ""),
      el("td", { class: "num" }, m.attempts === null ? "—" : String(m.attempts)),
      el("td", { class: "actions" }, queued
        ? [el("button", { type: "button", class: "retry", onclick: () => retry([m.message_id]) }, "Retry"),
           el("button", { type: "button", class: "cancel", onclick: () => cancelDead([m.message_id]) }, "Cancel")]
        : el("span", { class: "muted" }, "failed after WhatsApp took it")));
  }

  function updateSelection() {
    const picks = document.querySelectorAll("#dead .pick");
    $("dead-all").checked = picks.length > 0 && [...picks].every((box) => box.checked);
    for (const [id, verb] of [["retry-selected", "Retry"], ["cancel-selected", "Cancel"]]) {
      $(id).disabled = selected.size === 0;
      $(id).textContent = selected.size ? `${verb} ${selected.size} selected` : `${verb} selected`;
    }
  }

  /** One request per message; what failed is said once, the rest is done. */
  async function eachDead(ids, call, verb) {
    const failures = [];
    for (const id of ids) {
      try { await call(id); } catch (err) { failures.push(err.message); }
    }
    if (failures.length) Console.showError(new Console.ApiError(409, verb, `${failures.length} not ${verb}: ${failures[0]}`));
    refreshDeadLetters("keep");
    refreshChannels();
  }

  function retry(ids) {
    return eachDead(ids, (id) => api.post(`/v1/messages/${id}/retry`), "retried");
  }

  function cancelDead(ids) {
    const what = ids.length === 1 ? "this message" : `these ${ids.length} messages`;
    if (!confirmed(`Cancel ${what}? Never sent, and no longer retried.`)) return Promise.resolve();
    return eachDead(ids, (id) => api.del(`/v1/messages/${id}`), "cancelled");
  }

  // --- lookup -----------------------------------------------------------------------

  async function lookup(value) {
    const out = $("lookup-result");
    out.replaceChildren(el("p", { class: "muted" }, "Looking…"));
    const v = value.trim();
    try {
      if (UUID.test(v)) {
        out.replaceChildren(detail(await api.get(`/v1/messages/${v}`)));
        return;
      }
      if (/^\+?[\d\s().-]{6,}$/.test(v)) {
        const chats = (await api.get("/v1/chats", { q: v, include_archived: true, limit: 20 })).chats;
        out.replaceChildren(chats.length
          ? el("ul", {}, chats.map((c) => el("li", {}, el("a", { href: `/chats/${c.id}` }, `${c.name || c.phone} (${c.phone})`),
                                         ` · last message ${fmt.full(c.last_message_at)}`)))
          : el("p", { class: "empty" }, "No chat with that number."));
        return;
      }
      const page = await api.get("/v1/messages", { idempotency_key: v, limit: 10 });
      out.replaceChildren(page.messages.length
        ? el("div", {}, ...(await Promise.all(page.messages.map((m) => api.get(`/v1/messages/${m.message_id}`)))).map(detail))
        : el("p", { class: "empty" }, "No message with that id or idempotency key."));
    } catch (err) {
      out.replaceChildren(el("p", { class: "empty" }, err.status === 404 ? "No such message in this workspace." : err.message));
    }
  }

  function detail(d) {
    const rows = [["Message", d.message_id], ["Status", d.status], ["Direction", d.direction], ["To", d.to],
                  ["Type", d.type], ["Idempotency key", d.idempotency_key || "—"],
                  ["Attempts", d.attempts === null ? "—" : `${d.attempts} of ${d.max_attempts}`],
                  ["Queue state", d.outbox_status || "—"], ["Last error", d.last_error || d.error || "—"],
                  ["Next attempt", fmt.full(d.next_attempt_at) || "—"], ["Created", fmt.full(d.created_at)],
                  ["Sent", fmt.full(d.sent_at) || "—"], ["Delivered", fmt.full(d.delivered_at) || "—"],
                  ["Read", fmt.full(d.read_at) || "—"], ["WhatsApp id", d.wa_message_id || "—"], ["Body", d.body || "—"]];
    return el("dl", { class: "detail" }, rows.map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]),
      el("dt", {}, "Chat"), el("dd", {}, el("a", { href: `/chats/${d.chat_id}` }, "open the chat")),
      d.status === "failed" && d.outbox_status === "failed" ? el("dd", {}, el("button", { type: "button", onclick: () => retry([d.message_id]).then(() => lookup(d.message_id)) }, "Retry")) : null,
      d.direction === "outbound" && (d.outbox_status === "queued" || d.outbox_status === "failed")
        ? el("dd", {}, el("button", { type: "button", class: "cancel", onclick: () => cancel(d.message_id) }, "Cancel (never send it)"))
        : null);
  }

  async function cancel(id) {
    if (!confirmed("Cancel this message? It will never be sent.")) return;
    await guard(() => api.del(`/v1/messages/${id}`));
    lookup(id);
    refreshChannels();
  }

  // --- API keys and users ----------------------------------------------------------

  async function refreshKeys() {
    const data = await guard(() => api.get("/v1/api-keys"));
    if (!data) return;
    $("keys").tBodies[0].replaceChildren(...data.api_keys.map((k) => el("tr", { dataset: { keyId: k.id } },
      el("td", {}, k.name || "—"), el("td", {}, el("code", {}, `wo_${k.prefix}_…`)), el("td", {}, k.scopes.join(", ")),
      el("td", {}, fmt.full(k.created_at)), el("td", {}, k.revoked_at ? `revoked ${fmt.full(k.revoked_at)}` : "active"),
      el("td", {}, k.revoked_at ? "" : el("button", { type: "button", class: "revoke", onclick: () => revokeKey(k) }, "Revoke")))));
  }

  async function createKey(event) {
    event.preventDefault();
    const scopes = [...document.querySelectorAll("input[name=scope]:checked")].map((i) => i.value);
    const made = await guard(() => api.post("/v1/api-keys", { name: $("key-name").value.trim() || null, scopes }));
    if (!made) return;
    const box = $("new-key");
    box.replaceChildren(el("p", {}, "The new key, shown this once: copy it now."),
                        el("code", { id: "new-key-value" }, made.key),
                        el("button", { type: "button", class: "link", onclick: () => { box.hidden = true; box.replaceChildren(); } }, "I have stored it"));
    box.hidden = false;
    $("key-name").value = "";
    refreshKeys();
  }

  async function revokeKey(k) {
    if (!confirmed(`Revoke the key ${k.name || k.prefix}? Programs using it stop working now.`)) return;
    await guard(() => api.del(`/v1/api-keys/${k.id}`));
    refreshKeys();
  }

  // --- webhook endpoints (status callbacks) ------------------------------------------

  async function refreshEndpoints() {
    const data = await guard(() => api.get("/v1/webhook-endpoints"));
    if (!data) return;
    $("endpoints").tBodies[0].replaceChildren(...data.endpoints.map(endpointRow));
    $("endpoints-empty").hidden = data.endpoints.length > 0;
    if (shownEndpoint && !data.endpoints.some((e) => e.id === shownEndpoint.id)) hideDeliveries();
  }

  function endpointRow(e) {
    return el("tr", { dataset: { endpointId: e.id, status: e.status } },
      el("td", { class: "clip", title: e.url }, el("code", {}, e.url)),
      el("td", {}, e.event_types.join(", ")),
      el("td", {}, el("span", { class: `state ${e.status}` }, e.status),
        e.disabled_reason ? [el("br"), el("span", { class: "bad" }, e.disabled_reason)] : null,
        e.failing_since ? [el("br"), el("span", { class: "muted" }, `failing since ${fmt.full(e.failing_since)}`)] : null),
      el("td", { class: "num" }, String(e.deliveries_waiting)),
      el("td", { class: "num" + (e.deliveries_failed ? " bad" : "") }, String(e.deliveries_failed)),
      el("td", {}, fmt.full(e.created_at)),
      el("td", { class: "actions" },
        e.status === "disabled"
          ? el("button", { type: "button", class: "enable", onclick: () => enableEndpoint(e, false) }, "Enable")
          : null,
        // Dead letters stay dead unless asked for; on an active endpoint the
        // same call only queues them again.
        e.deliveries_failed
          ? el("button", { type: "button", class: "retry-failed", onclick: () => enableEndpoint(e, true) },
               `${e.status === "disabled" ? "Enable and retry" : "Retry"} ${e.deliveries_failed} failed`)
          : null,
        el("button", { type: "button", class: "deliveries", onclick: () => showDeliveries(e, false) }, "Deliveries"),
        el("button", { type: "button", class: "remove", onclick: () => removeEndpoint(e) }, "Remove")));
  }

  async function addEndpoint(event) {
    event.preventDefault();
    const types = $("endpoint-types").value.split(/[\s,]+/).filter((t) => t && t !== "all");
    const made = await guard(() => api.post("/v1/webhook-endpoints",
                                            { url: $("endpoint-url").value.trim(), event_types: types }));
    if (!made) return;
    const box = $("new-endpoint");
    box.replaceChildren(el("p", {}, `The signing secret for ${made.url}, shown this once: your receiver verifies signatures with it.`),
                        el("code", { id: "new-endpoint-secret" }, made.secret),
                        el("button", { type: "button", class: "link", onclick: () => { box.hidden = true; box.replaceChildren(); } }, "I have stored it"));
    box.hidden = false;
    $("endpoint-url").value = "";
    $("endpoint-types").value = "";
    refreshEndpoints();
  }

  async function enableEndpoint(e, retryFailed) {
    const done = await guard(() => api.post(`/v1/webhook-endpoints/${e.id}/enable`, { retry_failed: retryFailed }));
    if (!done) return;
    const n = done.deliveries_resumed;
    const note = $("endpoint-note");
    note.textContent = `${done.url} is ${done.status}: ${n} ${n === 1 ? "delivery" : "deliveries"} due now.`;
    note.hidden = false;
    refreshEndpoints();
    if (shownEndpoint && shownEndpoint.id === e.id) showDeliveries(done, false);
  }

  async function removeEndpoint(e) {
    if (!confirmed(`Remove the endpoint ${e.url}? Nothing more is posted to it, and its deliveries are deleted.`)) return;
    if (await guard(() => api.del(`/v1/webhook-endpoints/${e.id}`)) === undefined) return;
    if (shownEndpoint && shownEndpoint.id === e.id) hideDeliveries();
    refreshEndpoints();
  }

  function hideDeliveries() {
    shownEndpoint = null;
    $("deliveries-box").hidden = true;
    $("deliveries").tBodies[0].replaceChildren();
  }

  async function showDeliveries(e, more) {
    const params = { limit: 50, before: more ? deliveriesBefore : null };
    const data = await guard(() => api.get(`/v1/webhook-endpoints/${e.id}/deliveries`, params));
    if (!data) return;
    shownEndpoint = e;
    const body = $("deliveries").tBodies[0];
    if (!more) body.replaceChildren();
    body.append(...data.deliveries.map(deliveryRow));
    const last = data.deliveries[data.deliveries.length - 1];
    deliveriesBefore = last ? last.id : null;
    $("deliveries-more").hidden = data.deliveries.length < params.limit;
    $("deliveries-empty").hidden = body.rows.length > 0;
    $("h-deliveries").textContent = `Deliveries to ${e.url}`;
    $("deliveries-box").hidden = false;
  }

  function deliveryRow(d) {
    const answer = d.last_status_code ? `HTTP ${d.last_status_code}` : "";
    const when = (iso) => (iso ? el("time", { datetime: iso, title: fmt.full(iso) }, fmt.short(iso)) : "—");
    return el("tr", { dataset: { deliveryId: String(d.id), status: d.status } },
      el("td", {}, d.event_type, el("br"), el("span", { class: "muted" }, `event ${d.event_id}`)),
      el("td", {}, el("span", { class: `state ${d.status}` }, d.status)),
      el("td", { class: "num" }, String(d.attempts)),
      el("td", { class: "clip" + (d.last_error ? " bad" : ""), title: d.last_error || null },
        [answer, d.last_error].filter(Boolean).join(": ") || "—"),
      el("td", {}, when(d.created_at)),
      el("td", {}, when(d.delivered_at)),
      el("td", {}, d.status === "pending" ? when(d.next_attempt_at) : "—"));
  }

  async function refreshUsers() {
    const data = await guard(() => api.get("/v1/users"));
    if (!data) return;
    const me = Console.session().user_id;
    $("users").tBodies[0].replaceChildren(...data.users.map((u) => el("tr", { dataset: { userId: u.id } },
      el("td", {}, u.email), el("td", {}, u.role), el("td", {}, fmt.full(u.created_at)),
      el("td", {}, u.disabled_at ? `disabled ${fmt.full(u.disabled_at)}` : "active"),
      el("td", {}, u.disabled_at || u.id === me ? "" : el("button", { type: "button", class: "disable", onclick: () => disableUser(u) }, "Disable")))));
  }

  async function createUser(event) {
    event.preventDefault();
    const made = await guard(() => api.post("/v1/users", { email: $("user-email").value, role: $("user-role").value,
                                                           password: $("user-password").value }));
    if (!made) return;
    $("user-email").value = "";
    $("user-password").value = "";
    refreshUsers();
  }

  async function disableUser(u) {
    if (!confirmed(`Disable ${u.email}? Their sessions end now.`)) return;
    await guard(() => api.post(`/v1/users/${u.id}/disable`));
    refreshUsers();
  }

  // --- start ----------------------------------------------------------------------------

  async function start() {
    try { await Console.start(); } catch (err) { if (err.status !== 401) Console.showError(err); return; }
    if (!Console.can("admin")) {
      for (const s of document.querySelectorAll("#ops > section")) s.hidden = true;
      $("ops-denied").hidden = false;
      document.body.dataset.ready = "true";
      return;
    }
    $("refresh-channels").addEventListener("click", refreshChannels);
    $("dead-channel").addEventListener("change", () => refreshDeadLetters("reset"));
    $("dead-since").addEventListener("change", () => refreshDeadLetters("reset"));
    $("dead-more").addEventListener("click", () => refreshDeadLetters("more"));
    $("dead-all").addEventListener("change", (e) => {
      for (const box of document.querySelectorAll("#dead .pick")) {
        box.checked = e.target.checked;
        const id = box.closest("tr").dataset.messageId;
        e.target.checked ? selected.add(id) : selected.delete(id);
      }
      updateSelection();
    });
    $("retry-selected").addEventListener("click", () => retry([...selected]));
    $("cancel-selected").addEventListener("click", () => cancelDead([...selected]));
    $("lookup-form").addEventListener("submit", (e) => { e.preventDefault(); lookup($("lookup").value); });
    $("key-form").addEventListener("submit", createKey);
    $("user-form").addEventListener("submit", createUser);
    $("endpoint-form").addEventListener("submit", addEndpoint);
    $("deliveries-more").addEventListener("click", () => shownEndpoint && showDeliveries(shownEndpoint, true));
    await Promise.all([refreshChannels(), refreshDeadLetters("reset"), refreshKeys(), refreshEndpoints(), refreshUsers()]);
    document.body.dataset.ready = "true";
  }

  document.addEventListener("DOMContentLoaded", start);

  return { refreshChannels, refreshDeadLetters: () => refreshDeadLetters("keep") };
})();
