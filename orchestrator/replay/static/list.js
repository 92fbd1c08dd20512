// The list page: the caller's recordings, newest first, filtered by status and "has problems", each
// linking to its signed replay page. The list link's own signature (caller, admin, exp, sig, read from
// this page's URL) goes with every request; no token is ever in the page.
"use strict";

(function () {
  const params = new URLSearchParams(location.search);
  const signed = {};
  for (const name of ["caller", "admin", "exp", "sig"]) if (params.get(name) !== null) signed[name] = params.get(name);
  const $ = (sel) => document.querySelector(sel);
  let cursor = null;

  function cell(text, cls) {
    const td = document.createElement("td");
    if (cls) td.className = cls;
    td.textContent = text;
    return td;
  }

  function seconds(s) {
    if (s == null) return "–";
    return s < 60 ? `${s.toFixed(1)} s` : `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  }

  async function load(append) {
    const query = new URLSearchParams(signed);
    if ($("#status").value) query.set("status", $("#status").value);
    if ($("#problems").checked) query.set("problems", "true");
    if (append && cursor) query.set("cursor", cursor);
    const answer = await fetch("/view/recordings?" + query, { credentials: "omit", cache: "no-store" });
    if (!answer.ok) {
      let why = answer.statusText;
      try { why = (await answer.json()).error.message; } catch (e) { /* not JSON */ }
      $("#message").textContent = `Cannot list recordings: ${why}`;
      $("#message").classList.add("error");
      return;
    }
    const page = await answer.json();
    const body = $("#rows");
    if (!append) body.replaceChildren();
    for (const r of page.items) {
      const tr = document.createElement("tr");
      tr.dataset.id = r.id;
      if (r.has_problems) tr.className = "problem";
      const link = document.createElement("a");
      link.href = r.url;
      link.textContent = r.id;
      link.rel = "noreferrer";
      const name = document.createElement("td");
      name.append(link);
      tr.append(
        cell(new Date(r.created_at).toLocaleString()),
        name,
        cell(r.status),
        cell(seconds(r.duration), "num"),
        cell(r.problems == null ? (r.has_problems ? "yes" : "–") : String(r.problems), "num flag"),
        cell(r.errors == null ? "–" : String(r.errors), "num"),
        cell(r.worst_inbound_loss == null ? "–" : `${(r.worst_inbound_loss * 100).toFixed(1)} %`, "num"),
        cell(r.stop_reason || "–"),
      );
      body.append(tr);
    }
    cursor = page.next_cursor;
    $("#more").hidden = !cursor;
    const shown = body.children.length;
    $("#message").textContent = shown ? `${shown} recording${shown === 1 ? "" : "s"}` : "No recordings match.";
    $("#message").classList.remove("error");
    document.body.dataset.ready = "true";
  }

  $("#filters").addEventListener("submit", (e) => { e.preventDefault(); load(false); });
  $("#status").addEventListener("change", () => load(false));
  $("#problems").addEventListener("change", () => load(false));
  $("#more").addEventListener("click", () => load(true));
  load(false);
})();
