/* The console's one door to the server: the public /v1 API, with the session
 * cookie, and the session's CSRF token on every request that changes state.
 * Also the small DOM helpers the pages share. No framework, no build step. */
"use strict";

const Console = (() => {
  let session = null;  // GET /v1/sessions/current: user, scopes, csrf_token
  let leaving = false;  // signing out: the sign-in page is where we go, not back here
  const onTheWire = new Set();  // AbortControllers of the requests not yet answered

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  function toLogin() {
    // A request still on the wire when the session ended answers 401 too;
    // signing out already goes to the sign-in page, without a way back.
    if (leaving) return;
    const next = location.pathname + location.search;
    location.assign("/login?next=" + encodeURIComponent(next));
  }

  async function request(method, path, body) {
    // Once signing out has begun, nothing more goes out and nothing answered
    // late is shown: the page is on its way to the sign-in page.
    if (leaving) return new Promise(() => {});
    const headers = { "Accept": "application/json" };
    if (method !== "GET" && session) headers["X-CSRF-Token"] = session.csrf_token;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    const wire = new AbortController();
    onTheWire.add(wire);
    try {
      response = await fetch(path, {
        method, headers, credentials: "same-origin", signal: wire.signal,
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (err) {
      if (leaving) return new Promise(() => {});
      throw new ApiError(0, "network", "The server can't be reached. Check your connection and try again.");
    } finally {
      onTheWire.delete(wire);
    }
    if (response.status === 401 && path !== "/v1/sessions") {
      toLogin();
      throw new ApiError(401, "unauthorized", "Your session ended. Sign in again.");
    }
    if (response.status === 204) return null;
    let data = null;
    try { data = await response.json(); } catch (err) { data = null; }
    if (!response.ok) {
      const e = (data && data.error) || {};
      throw new ApiError(response.status, e.code || "http_error",
                         e.message || `The server answered ${response.status}.`);
    }
    return data;
  }

  const api = {
    get: (path, params) => request("GET", path + query(params)),
    post: (path, body) => request("POST", path, body),
    patch: (path, body) => request("PATCH", path, body),
    put: (path, body) => request("PUT", path, body),
    del: (path) => request("DELETE", path),
  };

  function query(params) {
    if (!params) return "";
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) {
      if (v !== undefined && v !== null && v !== "" && v !== false) q.set(k, String(v));
    }
    const s = q.toString();
    return s ? "?" + s : "";
  }

  /** Who is signed in (once per page); to /login when nobody is. */
  async function start() {
    // The event stream (live.js) opens before the page reads anything, so no
    // event falls between the first loads and the stream.
    const stream = typeof Live === "undefined" ? null : Live.opened();
    [session] = await Promise.all([request("GET", "/v1/sessions/current"), stream]);
    const who = document.getElementById("who");
    if (who) who.textContent = `${session.user.email} · ${session.user.role}`;
    const ops = document.getElementById("nav-ops");
    if (ops && can("admin")) ops.hidden = false;
    const out = document.getElementById("logout");
    if (out) out.addEventListener("click", logout);
    return session;
  }

  function can(scope) {
    if (!session) return false;
    return session.scopes.includes(scope) || session.scopes.includes("admin");
  }

  async function logout() {
    // Requests still out would answer 401 once the session ends: they are
    // called off first, and the sign-out goes out after them.
    leaving = true;
    if (typeof Live !== "undefined") Live.stop();
    for (const wire of onTheWire) wire.abort();
    try {
      await fetch("/v1/sessions", {
        method: "DELETE", credentials: "same-origin",
        headers: session ? { "X-CSRF-Token": session.csrf_token } : {},
      });
    } catch (err) { /* the session ends on its own */ }
    location.assign("/login");
  }

  /** An element: el("button", {class: "x", onclick: f}, "text", child...). */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (k === "class") node.className = v;
      else if (k === "dataset") Object.assign(node.dataset, v);
      else if (v === true) node.setAttribute(k, "");
      else node.setAttribute(k, String(v));
    }
    for (const c of children.flat(Infinity)) {
      if (c === undefined || c === null || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  const timeFmt = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
  const dayFmt = new Intl.DateTimeFormat(undefined, { weekday: "short", day: "numeric", month: "short" });
  const yearFmt = new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short", year: "numeric" });
  const fullFmt = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
  const dateFmt = new Intl.DateTimeFormat(undefined, { dateStyle: "full" });

  /** A time in the browser's zone: hh:mm today, the day otherwise. */
  function shortTime(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    const now = new Date();
    if (d.toDateString() === now.toDateString()) return timeFmt.format(d);
    return d.getFullYear() === now.getFullYear() ? dayFmt.format(d) : yearFmt.format(d);
  }

  const fmt = {
    time: (iso) => (iso ? timeFmt.format(new Date(iso)) : ""),
    full: (iso) => (iso ? fullFmt.format(new Date(iso)) : ""),
    date: (iso) => (iso ? dateFmt.format(new Date(iso)) : ""),
    short: shortTime,
    ago(iso) {
      if (!iso) return "";
      const s = Math.round((Date.now() - new Date(iso).getTime()) / 1000);
      if (s < 60) return `${Math.max(s, 0)} s ago`;
      if (s < 3600) return `${Math.round(s / 60)} min ago`;
      if (s < 86400) return `${Math.round(s / 3600)} h ago`;
      return `${Math.round(s / 86400)} d ago`;
    },
    left(iso) {
      if (!iso) return "until resumed";
      const s = Math.round((new Date(iso).getTime() - Date.now()) / 1000);
      if (s <= 0) return "ending now";
      if (s < 60) return `${s} s left`;
      if (s < 3600) return `${Math.round(s / 60)} min left`;
      return `${Math.round(s / 3600)} h left`;
    },
  };

  /** An error in words at the top of the page (never a stack trace). */
  function showError(err) {
    const banner = document.getElementById("banner");
    const text = err instanceof ApiError ? err.message : "Something went wrong. Try again.";
    if (!banner) return;
    banner.replaceChildren(el("span", {}, text),
      el("button", { type: "button", class: "link", onclick: () => { banner.hidden = true; } }, "Dismiss"));
    banner.hidden = false;
  }

  function uuid4() {
    if (crypto.randomUUID) return crypto.randomUUID();
    const b = crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40; b[8] = (b[8] & 0x3f) | 0x80;
    const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }

  return { api, request, start, can, el, fmt, showError, ApiError, uuid4,
           session: () => session };
})();
