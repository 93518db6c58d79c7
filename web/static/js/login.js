// Log in: POST /api/login, errors in words (wrong password, too many attempts), then back to the
// page that sent the browser here (only a path on this server: `next` must start with one "/").

const form = document.getElementById("login");
const error = document.getElementById("error");

function target() {
  const next = new URLSearchParams(location.search).get("next") || "/";
  return next.startsWith("/") && !next.startsWith("//") && !next.startsWith("/\\") ? next : "/";
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const button = form.querySelector("button");
  button.disabled = true;
  error.textContent = "";
  try {
    const response = await fetch("/api/login", {
      method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ username: form.elements.username.value, password: form.elements.password.value }),
    });
    if (response.ok) {
      location.assign(target());
      return;
    }
    const data = await response.json().catch(() => ({}));
    if (response.status === 429) {
      error.textContent = `Too many failed logins. Try again in ${data.retry_after_s || "a few"} s.`;
    } else if (response.status === 401) {
      error.textContent = "Wrong user name or password.";
      form.elements.password.select();
    } else {
      error.textContent = data.error || `The server answered ${response.status}.`;
    }
  } catch {
    error.textContent = "The server cannot be reached. Is vigil web running?";
  } finally {
    button.disabled = false;
  }
});
