// Entry point: shared nav bar and theme, then the page named by the server.
const page = document.body.dataset.page || "graph";
for (const a of document.querySelectorAll("[data-nav]")) {
  if (a.dataset.nav === page) a.classList.add("active");
}

// Light or dark: the user's choice if made here, else the system's.
const prefersDark = matchMedia("(prefers-color-scheme: dark)");
const theme = () => localStorage.getItem("promring-theme") || (prefersDark.matches ? "dark" : "light");
document.documentElement.dataset.theme = theme();
prefersDark.addEventListener("change", () => { document.documentElement.dataset.theme = theme(); });
document.getElementById("theme").addEventListener("click", () => {
  const next = document.documentElement.dataset.theme === "dark" ? "light" : "dark";
  document.documentElement.dataset.theme = next;
  localStorage.setItem("promring-theme", next);
});

const modules = { graph: "./query.js", stores: "./stores.js", status: "./status.js", flags: "./status.js",
  blocks: "./blocks.js", alerts: "./rules.js", rules: "./rules.js" };
const root = document.getElementById("app");
import(modules[page] || modules.graph)
  .then((m) => m.render(root, page))
  .catch((e) => { root.textContent = `Failed to load the page: ${e.message}`; });
