// The /dashboard page: the panels of learntrack/dashboards.py, drawn with Plotly.
//
// Runs in the browser. Reads the panel list from /dashboard/panels.json, then every
// panel's data from the query service with the read key (X-API-Key header), and
// redraws everything every few seconds (?refresh=SECONDS, default 5). The key comes
// from the URL fragment (#key=..., never sent to a server) or from the form, and is
// kept in this tab's sessionStorage. Only this page's own server is ever contacted.
"use strict";

(() => {
  const params = new URLSearchParams(window.location.search);
  const REFRESH_S = Math.max(1, Number(params.get("refresh")) || 5);
  const RANGE_HOURS = { "24h": 24, "7d": 168, "30d": 720 };
  const KEY_ITEM = "learntrack.readKey";
  const state = {
    key: null,
    spec: null,
    vars: { course: params.get("course"), student: params.get("student") },
    range: RANGE_HOURS[params.get("range")] ? params.get("range") : "7d",
    timer: null,
    rounds: 0,
    running: false,
    again: false,
  };
  const $ = (id) => document.getElementById(id);

  class AuthError extends Error {}

  // -- the key ---------------------------------------------------------------------
  function takeKeyFromUrl() {
    const match = window.location.hash.match(/(?:^#|&)key=([^&]+)/);
    if (match) {
      sessionStorage.setItem(KEY_ITEM, decodeURIComponent(match[1]));
      history.replaceState(null, "", window.location.pathname + window.location.search);
    }
    return sessionStorage.getItem(KEY_ITEM);
  }

  function askForKey(message) {
    document.body.dataset.state = "needs-key";
    $("board").replaceChildren();
    $("key-form").hidden = false;
    $("key-error").textContent = message || "";
    setStatus("no key", true);
  }

  // -- talking to the API ------------------------------------------------------------
  async function api(path) {
    const answer = await fetch(path, {
      headers: { "X-API-Key": state.key, Accept: "application/json" },
      cache: "no-store",
    });
    if (answer.status === 401) {
      throw new AuthError("the read key was refused");
    }
    if (!answer.ok) {
      let detail = answer.statusText;
      try {
        const body = await answer.json();
        detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
      } catch (_ignored) {
        // not JSON: keep the status text
      }
      throw new Error(`${answer.status} ${detail}`);
    }
    return answer.json();
  }

  function values() {
    const now = new Date();
    const from = new Date(now.getTime() - RANGE_HOURS[state.range] * 3600e3);
    return {
      course: state.vars.course || "",
      student: state.vars.student || "",
      from: from.toISOString(),
      to: now.toISOString(),
      from_date: from.toISOString().slice(0, 10),
      to_date: now.toISOString().slice(0, 10),
    };
  }

  function fill(template, encode) {
    const given = values();
    return template.replace(/\{(\w+)\}/g, (_all, name) =>
      encode ? encodeURIComponent(given[name] ?? "") : given[name] ?? "",
    );
  }

  function pick(row, path) {
    return path.split(".").reduce((obj, key) => (obj == null ? undefined : obj[key]), row);
  }

  function rowsOf(answer, rows) {
    const found = rows ? answer[rows] : answer;
    if (found == null) return [];
    return Array.isArray(found) ? found : [found];
  }

  // -- formatting ----------------------------------------------------------------------
  const numberFormat = new Intl.NumberFormat("en", { maximumFractionDigits: 2 });

  function show(value, field) {
    if (value == null || value === "") return "–";
    if (Array.isArray(value)) return value.join(", ");
    if (field.type === "time") {
      return new Date(value).toISOString().replace("T", " ").slice(0, 19);
    }
    if (field.type === "number") return numberFormat.format(Number(value));
    return String(value);
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
    node.append(...children);
    return node;
  }

  // -- drawing -----------------------------------------------------------------------------
  function table(panel, rows) {
    if (!panel.rows) {
      // One record (a profile): one line per field.
      const body = panel.fields.map((f) =>
        el("tr", {}, el("th", {}, f.title),
          el("td", f.type === "number" ? { class: "num" } : {}, show(pick(rows[0], f.path), f))),
      );
      return el("table", { class: "record" }, el("tbody", {}, ...body));
    }
    const head = el("tr", {}, ...panel.fields.map((f) => el("th", {}, f.title)));
    const body = rows.map((row) =>
      el("tr", {}, ...panel.fields.map((f) =>
        el("td", f.type === "number" ? { class: "num" } : {}, show(pick(row, f.path), f)))),
    );
    return el("table", {}, el("thead", {}, head), el("tbody", {}, ...body));
  }

  function stats(panel, rows) {
    const numbers = panel.fields.filter((f) => f.type === "number");
    return el("div", { class: "stats" }, ...numbers.map((f) =>
      el("div", { class: "stat", "data-field": f.path },
        el("div", { class: "value" }, show(pick(rows[0], f.path), f)),
        el("div", { class: "label" }, f.title))));
  }

  function traces(panel, rows) {
    const x = panel.fields.find((f) => f.path === panel.x);
    const y = panel.fields.find((f) => f.path === panel.y);
    const groups = new Map();
    for (const row of rows) {
      const name = panel.series ? String(pick(row, panel.series)) : y.title;
      if (!groups.has(name)) groups.set(name, []);
      groups.get(name).push(row);
    }
    const hoverFields = panel.fields.filter((f) => f !== x && f !== y && f.path !== panel.series);
    return [...groups.entries()].map(([name, group]) => {
      let xs = group.map((r) => pick(r, x.path));
      let ys = group.map((r) => Number(pick(r, y.path)));
      let text = group.map((r) => hoverFields.map((f) => `${f.title}: ${show(pick(r, f.path), f)}`).join("<br>"));
      if (panel.horizontal) {
        // Largest on top: Plotly draws the first category at the bottom.
        [xs, ys, text] = [xs.reverse(), ys.reverse(), text.reverse()];
        return { type: "bar", orientation: "h", name, x: ys, y: xs.map(String), text, hoverinfo: "x+y+text", textposition: "none" };
      }
      if (panel.kind === "bars") {
        return { type: "bar", name, x: xs, y: ys, text, hoverinfo: "x+y+text", textposition: "none" };
      }
      return { type: "scatter", mode: "lines+markers", name, x: xs, y: ys, text, line: { width: 2 } };
    });
  }

  function chart(panel, rows, node) {
    const x = panel.fields.find((f) => f.path === panel.x);
    const layout = {
      margin: { l: panel.horizontal ? 80 : 48, r: 12, t: 6, b: 36 },
      showlegend: Boolean(panel.series),
      legend: { orientation: "h", y: -0.2 },
      font: { family: "system-ui, sans-serif", size: 11 },
      paper_bgcolor: "rgba(0,0,0,0)",
      plot_bgcolor: "rgba(0,0,0,0)",
      bargap: 0.2,
      xaxis: { automargin: true, type: x.type === "time" && !panel.horizontal ? "date" : undefined },
      yaxis: { automargin: true, rangemode: "tozero" },
    };
    if (x.type === "time" && /\{from/.test(panel.url)) {
      // A query bounded by the time range shows the whole range, data or not.
      const given = values();
      layout.xaxis.range = /\{from_date\}/.test(panel.url)
        ? [`${given.from_date} 00:00`, `${given.to_date} 23:59`]
        : [given.from, given.to];
    }
    window.Plotly.react(node, traces(panel, rows), layout, {
      displayModeBar: false,
      responsive: true,
    });
  }

  // -- one panel, all panels -----------------------------------------------------------
  function panelNode(panel) {
    const node = el("section", {
      class: "panel",
      "data-key": panel.key,
      "data-kind": panel.kind,
      "data-state": "loading",
      style: `--w: ${panel.width}; --h: ${panel.height}`,
      title: panel.description,
    });
    node.append(el("header", {}, el("h3", {}), el("span", { class: "meta" })), el("div", { class: "body" }));
    return node;
  }

  async function refreshPanel(panel) {
    const node = document.querySelector(`.panel[data-key="${panel.key}"]`);
    const body = node.querySelector(".body");
    node.querySelector("h3").textContent = fill(panel.title, false);
    try {
      const rows = rowsOf(await api(fill(panel.url, true)), panel.rows);
      node.dataset.rows = String(rows.length);
      node.querySelector(".meta").textContent = panel.rows ? `${rows.length} rows` : "";
      if (!rows.length) {
        node.dataset.state = "empty";
        body.replaceChildren(el("div", { class: "no-data" }, "No data"));
        return;
      }
      if (panel.kind === "table") {
        body.replaceChildren(table(panel, rows));
      } else if (panel.kind === "stat") {
        body.replaceChildren(stats(panel, rows));
      } else {
        let canvas = body.querySelector(".chart");
        if (!canvas) {
          canvas = el("div", { class: "chart" });
          body.replaceChildren(canvas);
        }
        chart(panel, rows, canvas);
      }
      node.dataset.state = "ok";
    } catch (err) {
      if (err instanceof AuthError) throw err;
      node.dataset.state = "error";
      node.dataset.rows = "0";
      body.replaceChildren(el("div", { class: "no-data" }, `No data: ${err.message}`));
    }
  }

  async function refreshChoices() {
    for (const variable of state.spec.variables) {
      const answer = await api(variable.url);
      const choices = rowsOf(answer, variable.rows).map((row) => String(pick(row, variable.field)));
      if (!state.vars[variable.name] || (variable.name === "course" && !choices.includes(state.vars.course))) {
        state.vars[variable.name] = choices[0] || "";
      }
      if (variable.name === "course") {
        const select = $("var-course");
        select.replaceChildren(...choices.map((c) => el("option", { value: c }, c)));
        select.value = state.vars.course;
      } else {
        $("student-choices").replaceChildren(...choices.map((c) => el("option", { value: c })));
        if (document.activeElement !== $("var-student")) $("var-student").value = state.vars.student;
      }
    }
  }

  async function refreshAll() {
    clearTimeout(state.timer);
    if (state.running) {
      state.again = true; // a control changed mid-round: one more round right after
      return;
    }
    state.running = true;
    state.again = false;
    try {
      await refreshChoices();
      await Promise.all(state.spec.panels.map(refreshPanel));
      state.rounds += 1;
      document.body.dataset.state = "ready";
      document.body.dataset.rounds = String(state.rounds);
      setStatus(`updated ${new Date().toISOString().slice(11, 19)} UTC, every ${REFRESH_S} s`);
    } catch (err) {
      if (err instanceof AuthError) {
        sessionStorage.removeItem(KEY_ITEM);
        askForKey(`The read key was refused: ${err.message}.`);
        return;
      }
      setStatus(`refresh failed: ${err.message}`, true);
    } finally {
      state.running = false;
    }
    state.timer = setTimeout(refreshAll, state.again ? 0 : REFRESH_S * 1000);
  }

  function setStatus(text, bad) {
    $("status").textContent = text;
    $("status").classList.toggle("error", Boolean(bad));
  }

  function layout() {
    const board = $("board");
    board.replaceChildren();
    for (const section of state.spec.sections) {
      const grid = el("div", { class: "grid" }, el("h2", { class: "section-title" }, section));
      for (const panel of state.spec.panels.filter((p) => p.section === section)) {
        grid.append(panelNode(panel));
      }
      board.append(grid);
    }
  }

  async function start() {
    $("key-form").hidden = true;
    if (!state.spec) {
      const answer = await fetch("/dashboard/panels.json", { cache: "no-store" });
      state.spec = await answer.json();
    }
    layout();
    await refreshAll();
  }

  // -- controls --------------------------------------------------------------------------
  $("range").value = state.range;
  $("range").addEventListener("change", (e) => { state.range = e.target.value; refreshAll(); });
  $("var-course").addEventListener("change", (e) => { state.vars.course = e.target.value; refreshAll(); });
  $("var-student").addEventListener("change", (e) => {
    state.vars.student = e.target.value.trim();
    refreshAll();
  });
  $("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const key = $("key-input").value.trim();
    if (!key) return;
    sessionStorage.setItem(KEY_ITEM, key);
    state.key = key;
    start();
  });

  state.key = takeKeyFromUrl();
  if (state.key) {
    start();
  } else {
    askForKey("");
  }
})();
