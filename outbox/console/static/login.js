/* Sign in: POST /v1/sessions sets the session cookie; then on to the page asked for. */
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("login-form");
  const error = document.getElementById("login-error");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.hidden = true;
    const button = document.getElementById("sign-in");
    button.disabled = true;
    try {
      await Console.api.post("/v1/sessions", {
        workspace_id: document.getElementById("workspace").value.trim() || "default",
        email: document.getElementById("email").value,
        password: document.getElementById("password").value,
      });
      const next = new URLSearchParams(location.search).get("next") || "/";
      // Only a path on this site: never an open redirect ("//host" and
      // "/\host" are other sites to a browser).
      location.assign(/^\/(?![\/\\])/.test(next) ? next : "/");
    } catch (err) {
      error.textContent = err.status === 401 ? "Wrong email or password." : err.message;
      error.hidden = false;
      button.disabled = false;
    }
  });
});
