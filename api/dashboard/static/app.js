/* igny8 dashboard: plain JavaScript, no build step. Every change goes through the JSON
   API (/api/v1) with the session cookie and the CSRF header; the pages render on the
   server. */
"use strict";
(function () {
  const FINAL = ["completed", "cancelled", "failed", "skipped"];
  const csrf = () => document.body.dataset.csrf || "";
  const $ = (sel, root) => (root || document).querySelector(sel);
  const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));

  function explain(detail, status) {
    if (Array.isArray(detail)) {
      return detail.map((e) => {
        const field = (e.loc || []).filter((p) => p !== "body").join(".");
        return field ? field + ": " + e.msg : e.msg;
      }).join("; ");
    }
    return detail ? String(detail) : "Request failed (" + status + ")";
  }

  async function api(method, url, body) {
    const headers = { "Accept": "application/json", "X-CSRF-Token": csrf() };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const resp = await fetch(url, {
      method, headers, credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let data = null;
    const text = await resp.text();
    if (text) { try { data = JSON.parse(text); } catch (_) { data = { detail: text }; } }
    if (!resp.ok) {
      const err = new Error(explain(data && data.detail, resp.status));
      err.status = resp.status;
      throw err;
    }
    return data;
  }

  function say(el, text, kind) {
    if (!el) return;
    el.textContent = text || "";
    el.classList.toggle("error", kind === "error");
    el.classList.toggle("ok", kind === "ok");
  }

  const label = (s) => String(s || "").replace(/_/g, " ").replace(/^./, (c) => c.toUpperCase());

  /* ---- small things on every page ---- */
  $$("select[data-autosubmit]").forEach((sel) => sel.addEventListener("change", () => sel.form.submit()));
  $$("[data-go-back]").forEach((btn) => btn.addEventListener("click", () => {
    if (window.history.length > 1) window.history.back(); else window.location.href = "/";
  }));
  $$("[data-check-all]").forEach((box) => box.addEventListener("change", () => {
    $$("input[name=task_ids]", box.closest("form")).forEach((b) => { b.checked = box.checked; });
  }));

  /* ---- the in-progress panel of a run or an image batch, live from Server-Sent Events ---- */
  function Panel(el) {
    const kind = el.dataset.kind;
    const buttons = {
      pause: $("[data-action=pause]", el), resume: $("[data-action=resume]", el),
      cancel: $("[data-action=cancel]", el),
    };
    const msg = $("[data-controls] [data-msg]", el);
    let snap = JSON.parse($("#panel-initial", el).textContent);
    let pending = null; // the control asked for, until the workflow shows it
    let source = null;

    function inFlight(s) {
      if (kind === "batch") return s.images_in_flight || 0;
      return (s.live_images && s.live_images.images_in_flight) || 0;
    }

    function setField(name, value) {
      $$("[data-field=" + name + "]", el).forEach((node) => { node.textContent = value; });
    }

    function setStage(name, done, total, status) {
      let row = $("[data-stage=" + name + "]", el);
      if (!row) {
        row = document.createElement("div");
        row.className = "stage"; row.dataset.stage = name;
        row.innerHTML = '<div class="stage-label"><span></span><span class="stage-count"><span data-done></span> / <span data-total></span></span></div>' +
          '<div class="bar" role="progressbar"><div class="fill"></div></div>';
        row.querySelector(".stage-label span").textContent = label(name);
        row.querySelector(".bar").setAttribute("aria-label", label(name));
        $(".stages", el).appendChild(row);
      }
      let doing = $(".stage-items", row);
      if (!doing) {
        doing = document.createElement("p");
        doing.className = "stage-items small muted";
        row.appendChild(doing);
      }
      doing.textContent = workingText(snap, name);
      doing.hidden = !doing.textContent;
      $("[data-done]", row).textContent = done;
      $("[data-total]", row).textContent = total;
      const bar = $(".bar", row);
      bar.setAttribute("aria-valuenow", done); bar.setAttribute("aria-valuemax", total);
      const fill = $(".fill", row);
      fill.style.width = (total ? Math.round((100 * done) / total) : 0) + "%";
      fill.className = "fill stage-" + (status || "");
    }

    /* What each stage does to the item it names, for "Writing “How to brew tea”". */
    const VERB = {
      clustering: "Clustering", ideas: "Finding ideas for", content: "Writing",
      image_prompts: "Writing image prompts for", images: "Illustrating",
    };
    const quoted = (item) => item.kind === "image" ? item.title : "“" + item.title + "”";

    function itemsOf(s, stage) {
      return (s.current_items || []).filter((it) => it.stage === stage);
    }

    function workingText(s, stage) {
      const items = itemsOf(s, stage);
      if (!items.length || FINAL.includes(s.status)) return "";
      const names = items.map(quoted).join(", ");
      return kind === "batch" ? "Generating " + names : VERB[stage] + " " + names;
    }

    function nowText(s) {
      if (FINAL.includes(s.status)) return label(s.status) + ".";
      if (kind === "batch") {
        const doing = workingText(s, "images");
        return "Generating images: " + s.images_done + " of " + s.images_total + " done" +
          (inFlight(s) ? ", " + inFlight(s) + " in flight" : "") + (doing ? " · " + doing : "");
      }
      const stage = (s.stages || []).find((st) => st.name === s.current_stage);
      if (!stage) return s.current_stage ? label(s.current_stage) : "Starting…";
      let text = label(stage.name) + ": " + stage.done + " of " + stage.total + " done";
      if (stage.name === "images" && s.live_images) {
        text = "Images: " + s.live_images.images_done + " generated, " + s.live_images.images_in_flight + " in flight";
      }
      const doing = workingText(s, stage.name);
      return doing ? text + " · " + doing : text;
    }

    function render(s) {
      snap = s;
      const status = s.status;
      const busy = inFlight(s);
      let shown = status;
      if (pending === "pause" && status === "running") shown = "pausing…";
      else if (status === "paused" && busy > 0) shown = "pausing…";
      else if (status === "cancelling" || (pending === "cancel" && !FINAL.includes(status))) shown = "cancelling…";
      const badge = $("[data-field=status]", el);
      badge.textContent = shown;
      badge.className = "status status-" + status;
      el.dataset.status = status;
      setField("now", nowText(s));
      setField("balance", s.balance === null || s.balance === undefined ? "—" : s.balance);
      setField("credits_used", s.credits_used);
      setField("cost_usd", s.cost_usd);
      if ("budget_credits" in s) setField("budget_credits", s.budget_credits || "—");
      if ("credits_reserved" in s) setField("credits_reserved", s.credits_reserved);
      const reason = $("[data-field=pause_reason]", el);
      if (reason) {
        const show = status === "paused" && s.pause_reason && s.pause_reason !== "user";
        reason.hidden = !show;
        if (show) reason.textContent = "Paused: " + label(s.pause_reason) + (s.pause_reason === "insufficient_credits" ? ". Top up, then resume." : ".");
      }
      if (kind === "batch") {
        setStage("images", s.images_done, s.images_total, status);
        const errs = $("[data-field=errors]", el);
        if (errs) { errs.textContent = ""; (s.errors || []).forEach((e) => { const li = document.createElement("li"); li.textContent = e; errs.appendChild(li); }); }
      } else {
        (s.stages || []).forEach((st) => setStage(st.name, st.done, st.total, st.status));
      }
      // Pending states end when the workflow shows what was asked for.
      if (pending === "pause" && status !== "running") pending = null;
      if (pending === "resume" && status !== "paused") pending = null;
      if (pending === "cancel" && (status === "cancelling" || FINAL.includes(status))) pending = null;
      renderButtons(status);
      if (FINAL.includes(status)) finish();
    }

    /* A finished run's stream is ended by the server right after the final snapshot:
       close the EventSource then (so it does not reconnect), not before, which would
       abort the response mid-way. */
    function finish() {
      if (source && !source.closeTimer) source.closeTimer = setTimeout(stop, 5000);
    }

    function show(btn, visible, text, disabled) {
      btn.hidden = !visible;
      if (visible) { btn.textContent = text; btn.disabled = !!disabled; }
    }

    function renderButtons(status) {
      const final = FINAL.includes(status);
      const cancelling = status === "cancelling" || pending === "cancel";
      show(buttons.pause, !final && !cancelling && status !== "paused", pending === "pause" ? "Pausing…" : "Pause", pending === "pause");
      show(buttons.resume, !final && !cancelling && status === "paused", pending === "resume" ? "Resuming…" : "Resume", pending === "resume");
      show(buttons.cancel, !final, cancelling ? "Cancelling…" : "Cancel", cancelling);
    }

    async function control(action) {
      if (action === "cancel" && !window.confirm("Cancel this " + (kind === "batch" ? "image batch" : "run") + "? Items in flight finish and are charged; nothing new starts.")) return;
      pending = action;
      say(msg, "");
      renderButtons(snap.status);
      try {
        await api("POST", el.dataset.control + "/" + action);
      } catch (err) {
        pending = null;
        say(msg, err.message, "error");
        renderButtons(snap.status);
      }
    }

    function stop() {
      if (source) { clearTimeout(source.closeTimer); source.close(); source = null; }
    }

    Object.entries(buttons).forEach(([action, btn]) => btn.addEventListener("click", () => control(action)));
    render(snap);
    if (!FINAL.includes(snap.status)) {
      source = new EventSource(el.dataset.events);
      source.addEventListener("progress", (ev) => render(JSON.parse(ev.data)));
      source.onerror = () => { if (FINAL.includes(snap.status)) stop(); };  // the end
    }
    window.addEventListener("pagehide", stop);
  }
  $$(".panel[data-kind]").forEach(Panel);

  /* ---- starting runs and batches ---- */
  const startRun = $("#start-run");
  if (startRun) startRun.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const out = $("[data-msg]", startRun.parentElement);
    const budget = startRun.budget_credits.value.trim();
    const body = { site_id: Number(startRun.dataset.site) };
    if (budget) body.budget_credits = Number(budget);
    const btn = $("button[type=submit]", startRun);
    btn.disabled = true; say(out, "Starting…");
    try {
      const run = await api("POST", "/api/v1/automation/runs", body);
      window.location.href = "/automation/runs/" + encodeURIComponent(run.run_id);
    } catch (err) { btn.disabled = false; say(out, err.message, "error"); }
  });

  const startBatch = $("#start-batch");
  if (startBatch) startBatch.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const out = $("[data-msg]", startBatch);
    const ids = $$("input[name=task_ids]:checked", startBatch).map((b) => Number(b.value));
    if (!ids.length) { say(out, "Choose at least one article.", "error"); return; }
    const btn = $("button[type=submit]", startBatch);
    btn.disabled = true; say(out, "Starting…");
    try {
      const batch = await api("POST", "/api/v1/images/batches", { task_ids: ids });
      window.location.href = "/images/batches/" + encodeURIComponent(batch.batch_id);
    } catch (err) { btn.disabled = false; say(out, err.message, "error"); }
  });

  /* ---- review: approve, reject, schedule, reschedule, unschedule ---- */
  function tzOffsetMs(ms, tz) {
    const parts = new Intl.DateTimeFormat("en-US", {
      timeZone: tz, hourCycle: "h23", year: "numeric", month: "2-digit", day: "2-digit",
      hour: "2-digit", minute: "2-digit", second: "2-digit",
    }).formatToParts(new Date(ms));
    const v = Object.fromEntries(parts.map((p) => [p.type, p.value]));
    return Date.UTC(+v.year, +v.month - 1, +v.day, +v.hour, +v.minute, +v.second) - ms;
  }
  /* A wall time typed in the site's timezone ("2030-01-31T09:00") as an instant. */
  function siteWallToIso(wall, tz) {
    const [d, t] = wall.split("T");
    const [y, mo, da] = d.split("-").map(Number);
    const [h, mi] = t.split(":").map(Number);
    const naive = Date.UTC(y, mo - 1, da, h, mi);
    let guess = naive - tzOffsetMs(naive, tz);
    guess = naive - tzOffsetMs(guess, tz);
    return new Date(guess).toISOString();
  }

  $$("[data-review]").forEach((box) => {
    const id = box.dataset.review;
    const out = $("[data-msg]", box);
    async function move(action, body) {
      say(out, "Saving…");
      $$("button", box).forEach((b) => { b.disabled = true; });
      try {
        await api("POST", "/api/v1/content/" + id + "/" + action, body);
        say(out, "Done", "ok");
        window.location.reload();
      } catch (err) {
        $$("button", box).forEach((b) => { b.disabled = false; });
        say(out, err.message, "error");
      }
    }
    $$("[data-review-action]", box).forEach((b) => b.addEventListener("click", () => move(b.dataset.reviewAction)));
    $$("form[data-review-form]", box).forEach((f) => f.addEventListener("submit", (ev) => {
      ev.preventDefault();
      if (f.dataset.reviewForm === "reject") move("reject", { reason: f.reason.value });
      else move("schedule", { at: siteWallToIso(f.at.value, document.body.dataset.tz || "UTC") });
    }));
  });

  /* ---- settings forms: PATCH/PUT their JSON ---- */
  function formBody(form) {
    const body = {};
    $$("input[name], select[name]", form).forEach((input) => {
      const type = input.dataset.type || "";
      if (input.type === "checkbox") { body[input.name] = input.checked; return; }
      const value = input.value.trim();
      if (type === "secret") { if (value) body[input.name] = input.value; return; }
      if (type === "int") body[input.name] = value === "" ? null : Number(value);
      else if (type === "int-or-null") body[input.name] = value === "" ? null : Number(value);
      else if (type === "str-or-null") body[input.name] = value === "" ? null : value;
      else body[input.name] = value;
    });
    return body;
  }

  $$("form[data-url]").forEach((form) => form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const out = $("[data-msg]", form);
    const btn = $("button[type=submit]", form);
    btn.disabled = true; say(out, "Saving…");
    try {
      const saved = await api(form.dataset.method || "POST", form.dataset.url, formBody(form));
      say(out, "Saved", "ok");
      const secret = $("input[data-type=secret]", form);
      if (secret) {  // write-only: cleared once sent, never filled from the server
        secret.value = "";
        secret.required = false;
        if (saved && saved.has_password) secret.placeholder = "Stored: leave blank to keep it";
        const test = $("#wp-test");
        if (test) test.disabled = false;
      }
    } catch (err) { say(out, err.message, "error"); }
    btn.disabled = false;
  }));

  const wpTest = $("#wp-test");
  if (wpTest) wpTest.addEventListener("click", async () => {
    const result = $("#wp-result");
    wpTest.disabled = true; wpTest.textContent = "Testing…";
    result.hidden = false; result.dataset.ok = ""; result.textContent = "Testing the connection…";
    try {
      const r = await api("POST", wpTest.dataset.url);
      result.dataset.ok = r.ok ? "true" : "false";
      result.textContent = (r.ok ? "✓ " : "✗ ") + r.message;
    } catch (err) {
      result.dataset.ok = "false";
      result.textContent = "✗ " + err.message;
    }
    wpTest.disabled = false; wpTest.textContent = "Test connection";
  });

  /* ---- notifications ---- */
  $$("[data-read]").forEach((btn) => btn.addEventListener("click", async () => {
    btn.disabled = true;
    try {
      await api("POST", "/api/v1/notifications/" + btn.dataset.read + "/read");
      btn.closest(".note").classList.remove("unread");
      btn.remove();
      const badge = $("#unread-badge");
      if (badge) {
        const left = Number(badge.textContent) - 1;
        if (left > 0) badge.textContent = left; else badge.remove();
      }
    } catch (err) { btn.disabled = false; }
  }));
})();
