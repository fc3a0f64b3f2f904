// Keyboard-first labeling. The page is a plain HTML form (it works without this file); this script
// adds the keys, drag and drop of outputs into tiers, the ranking board, the timer and checks before
// submitting. Model text is never read into HTML here: only element moves, .value and .textContent.
(function () {
  "use strict";

  let started = 0; // when the timer shows 0:00 (on the edit page: the answer's stored time ago)
  let base = 0; // ms already spent on this answer before this page (the edit page): sent only once
  let timerId = null;
  let pendingFlag = false; // "f" was pressed: the next digit toggles a flag
  const SNIPPET_CHARS = 40;

  const $ = (sel, root) => (root || document).querySelector(sel);
  const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));
  const task = () => $("#task");
  const mode = () => (task() ? task().dataset.mode : "");
  const outputs = () => $$("#task article.output[data-n]");
  const focused = () => document.activeElement && document.activeElement.closest("article.output[data-n]");

  // A problem found here is shown above the form and scrolled into view (the Enter that caused it may
  // come from the last output, a screen or two below); it is checked again on every change and goes
  // away once fixed. A message from the server stays until the next submit.
  function showError(message, scroll) {
    const box = $("#form-error");
    if (!box) return;
    box.replaceChildren();
    if (message) {
      const p = document.createElement("p");
      p.className = "error-message";
      p.dataset.client = "1";
      p.textContent = message;
      box.appendChild(p);
      if (scroll) box.scrollIntoView({ block: "center" });
    }
  }

  function recheck() {
    const shown = $("#form-error .error-message");
    if (shown && shown.dataset.client) showError(problems($("#answer")), false);
  }

  // ---------------------------------------------------------------------------------- timer

  function tick() {
    const el = $("#timer");
    if (!el) return;
    const s = Math.floor((Date.now() - started) / 1000);
    el.textContent = Math.floor(s / 60) + ":" + String(s % 60).padStart(2, "0");
  }

  function startTimer() {
    base = Number(task().dataset.elapsedMs || 0) || 0; // an edit goes on from the answer's time
    started = Date.now() - base;
    if (timerId) clearInterval(timerId);
    timerId = setInterval(tick, 1000);
    tick();
  }

  // ---------------------------------------------------------------------------------- ranking board

  function renderBoard() {
    const board = $("#board");
    if (!board) return;
    $$(".chips", board).forEach((c) => c.replaceChildren());
    outputs().forEach((card) => {
      const select = $(".tier-select", card);
      const row = $('.tier[data-tier="' + select.value + '"] .chips', board);
      const chip = document.createElement("span");
      chip.className = "chip";
      chip.textContent = "Output " + card.dataset.n;
      const snippet = document.createElement("span"); // the start of the output, so a tier reads at a glance
      snippet.className = "snippet";
      // a trajectory's chip reads its last answer (data-snippet), not the arguments of its first tool call
      const text = (card.dataset.snippet || $("pre.text", card).textContent || "").trim();
      snippet.textContent = " · " + text.slice(0, SNIPPET_CHARS);
      chip.appendChild(snippet);
      chip.title = text.slice(0, 300);
      chip.draggable = true;
      chip.dataset.n = card.dataset.n;
      row.appendChild(chip);
      card.classList.toggle("placed", select.value !== "");
    });
    countFlags();
    measureBars();
  }

  // The flags sit behind a toggle per output; its summary counts the ones set, so a closed toggle still tells.
  function countFlags() {
    outputs().forEach((card) => {
      const count = $(".flag-count", card);
      const n = $$(".flags input:checked", card).length;
      if (count) count.textContent = n ? "(" + n + ")" : "";
    });
  }

  // Outputs scrolled to by j/k stop below the sticky task bar and ranking board (CSSOM, allowed by the CSP).
  function measureBars() {
    const bar = $(".task-bar");
    const board = $("#board");
    const root = document.documentElement.style;
    if (bar) root.setProperty("--bar-h", bar.offsetHeight + "px");
    const sticky = board && getComputedStyle(board).position === "sticky";
    root.setProperty("--board-h", (sticky ? board.offsetHeight : 0) + "px");
  }

  function setTier(card, tier) {
    const select = $(".tier-select", card);
    if (tier !== "" && !$('option[value="' + tier + '"]', select)) return; // no tier beyond K
    select.value = String(tier);
    renderBoard();
    changed();
  }

  function moveFocus(step) {
    const cards = outputs();
    if (!cards.length) return;
    const i = cards.indexOf(focused());
    const next = cards[Math.max(0, Math.min(cards.length - 1, i < 0 ? 0 : i + step))];
    next.focus();
    next.scrollIntoView({ block: "nearest" });
  }

  function enableDrag() {
    const board = $("#board");
    if (!board) return;
    const start = (ev) => {
      const n = ev.target.dataset && ev.target.dataset.n;
      if (n && ev.dataTransfer) ev.dataTransfer.setData("text/plain", n);
    };
    outputs().forEach((card) => card.addEventListener("dragstart", start));
    board.addEventListener("dragstart", start);
    $$(".tier", board).forEach((row) => {
      row.addEventListener("dragover", (ev) => { ev.preventDefault(); row.classList.add("over"); });
      row.addEventListener("dragleave", () => row.classList.remove("over"));
      row.addEventListener("drop", (ev) => {
        ev.preventDefault();
        row.classList.remove("over");
        const card = $('#task article.output[data-n="' + ev.dataTransfer.getData("text/plain") + '"]');
        if (card) setTier(card, row.dataset.tier);
      });
    });
  }

  // ---------------------------------------------------------------------------------- checks

  function problems(form) {
    if (form.id === "skip-form") return null;
    if (mode() === "rank") {
      const unplaced = outputs().filter((c) => $(".tier-select", c).value === "").map((c) => c.dataset.n);
      if (unplaced.length) return "Put every output in a tier (missing: " + unplaced.join(", ") + ").";
      const unrated = outputs().filter((c) => !$('input[type="radio"]:checked', c)).map((c) => c.dataset.n);
      if (unrated.length) return "Rate the quality of every output (missing: " + unrated.join(", ") + ").";
    } else if (mode() === "pairwise") {
      if (!$('input[name="choice"]:checked', form)) return "Choose A, B or about the same.";
    } else if (mode() === "demo") {
      if (!$('textarea[name="text"]', form).value.trim()) return "Write the response first.";
    }
    return null;
  }

  function beforeSend(form) {
    const elapsed = $('input[name="elapsed_ms"]', form);
    if (elapsed) elapsed.value = String(Date.now() - started - base); // the store adds an edit's time to the answer's
    const problem = problems(form);
    showError(problem, true);
    return !problem;
  }

  function submit(form) {
    // requestSubmit: htmx sends it when it has wired the form, the browser posts it otherwise.
    if (form && beforeSend(form)) form.requestSubmit();
  }

  // ---------------------------------------------------------------------------------- keys

  function openSkip() {
    const details = $("#skip");
    if (!details) return;
    details.open = true;
    $("select", details).focus();
  }

  function onKey(ev) {
    if (!task() || ev.ctrlKey && ev.key !== "Enter" || ev.altKey || ev.metaKey) return;
    const el = ev.target;
    const typing = el.matches && el.matches("textarea, input[type=text], select");
    if (ev.key === "Enter" && !ev.ctrlKey && el.matches && el.matches("#skip-form select")) {
      ev.preventDefault(); // a closed list does nothing on Enter: the reason is chosen, skip
      submit(el.form);
      return;
    }
    if (ev.key === "Enter" && (ev.ctrlKey || !typing)) {
      const form = el.closest && el.closest("form") || $("#answer");
      if (form && form.id === "skip-form" && !ev.ctrlKey) return; // native submit of the skip form
      ev.preventDefault();
      submit(form && form.closest("#task") ? form : $("#answer"));
      return;
    }
    if (typing) {
      if (ev.key === "Enter" && el.closest(".turn-flag")) ev.preventDefault(); // a flag's reason is not a submit
      if (ev.key === "Escape" || ev.key === "Enter" && el.closest(".turn-flag")) {
        el.blur();
        const card = el.closest("article.output");
        if (card) card.focus();
      }
      return;
    }
    const digit = /^Digit([0-9])$/.exec(ev.code || "");
    const m = mode();
    // "f" arms flag mode for the very next key only: "f", "j", "2" tiers output 2 (it used to flag it).
    const flagging = pendingFlag;
    pendingFlag = false;
    $$("#task article.flagging").forEach((c) => c.classList.remove("flagging"));
    if (ev.key === "s") { ev.preventDefault(); openSkip(); return; }
    if (m === "rank") {
      const card = focused();
      if (ev.key === "j" || ev.key === "ArrowDown") { ev.preventDefault(); moveFocus(1); return; }
      if (ev.key === "k" || ev.key === "ArrowUp") { ev.preventDefault(); moveFocus(-1); return; }
      if (!card) {
        if (digit || ev.key === "f" || ev.key === "n") { ev.preventDefault(); moveFocus(0); }
        return;
      }
      if (ev.key === "f" && !flagging) { pendingFlag = true; card.classList.add("flagging"); return; }
      if (digit && flagging) {
        const box = $('input[data-flag="' + digit[1] + '"]', card);
        if (box) box.checked = !box.checked;
        const toggle = $("details.flags-toggle", card);
        if (box && toggle) toggle.open = true; // show the flag just set
        countFlags();
        changed();
      } else if (digit && ev.shiftKey) {
        const radio = $('input[type="radio"][value="' + digit[1] + '"]', card);
        if (radio) radio.checked = true;
        changed();
      } else if (digit) {
        setTier(card, digit[1] === "0" ? "" : digit[1]);
      } else if (ev.key === "Backspace" || ev.key === "Delete") {
        setTier(card, "");
      } else if (ev.key === "n") {
        ev.preventDefault();
        $("textarea", card).focus();
      }
      if (digit) ev.preventDefault();
    } else if (m === "pairwise") {
      const pick = { a: "A", ArrowLeft: "A", b: "B", ArrowRight: "B", e: "equal", "=": "equal" }[ev.key];
      if (pick) {
        ev.preventDefault();
        choose(pick);
      } else if (ev.key === "n") {
        ev.preventDefault();
        $('textarea[name="notes"]').focus();
      }
    }
  }

  function choose(pick) {
    $('input[name="choice"][value="' + pick + '"]').checked = true;
    $$("#task article.side").forEach((s) => s.classList.toggle("chosen", s.dataset.choice === pick));
    changed();
  }

  // ---------------------------------------------------------------------------------- drafts

  // The item in progress is kept in localStorage under project/item/labeler, so a reload or a lost tab
  // gets every tier, rating, flag and note back; a successful submit (or skip) discards it. Values go
  // back through .value and .checked only.
  const DRAFT = "rlhfkit-draft:";
  const SKIP_FIELDS = ["csrf_token", "client_id", "kind", "elapsed_ms"];
  const draftKey = () => (task() && task().dataset.draftKey ? DRAFT + task().dataset.draftKey : null);

  function saveDraft() {
    const key = draftKey();
    const form = $("#answer");
    if (!key || !form) return;
    const fields = [];
    $$("input, select, textarea", form).forEach((el) => {
      if (!el.name || SKIP_FIELDS.includes(el.name)) return;
      if (el.type === "radio" || el.type === "checkbox") {
        if (el.checked) fields.push([el.name, el.value]);
      } else if (el.value !== "") {
        fields.push([el.name, el.value]);
      }
    });
    try {
      if (fields.length) localStorage.setItem(key, JSON.stringify({ fields: fields, ms: Date.now() - started }));
      else localStorage.removeItem(key);
    } catch (e) { /* storage full or disabled: the form still works */ }
  }

  function restoreDraft() {
    const key = draftKey();
    const form = $("#answer");
    let draft = null;
    try { draft = key && JSON.parse(localStorage.getItem(key) || "null"); } catch (e) { draft = null; }
    if (!draft || !form || !Array.isArray(draft.fields)) return;
    draft.fields.forEach(([name, value]) => {
      $$("input, select, textarea", form).filter((el) => el.name === name).forEach((el) => {
        if (el.type === "radio" || el.type === "checkbox") el.checked = el.value === value ? true : el.checked;
        else el.value = value;
      });
    });
    if (typeof draft.ms === "number" && draft.ms > 0) started = Date.now() - draft.ms; // the timer goes on
    const choice = $('input[name="choice"]:checked', form);
    if (choice) $$("#task article.side").forEach((s) => s.classList.toggle("chosen", s.dataset.choice === choice.value));
  }

  function dropDraft(key) {
    try { if (key) localStorage.removeItem(key); } catch (e) { /* nothing kept */ }
  }

  function changed() {
    saveDraft();
    recheck();
    markTurnFlags();
  }

  // A trajectory's turn with a reason typed in its "Flag turn" box is marked, and its box stays open.
  function markTurnFlags() {
    $$("#task details.turn-flag").forEach((box) => {
      const flagged = $("input", box).value.trim() !== "";
      box.closest("li.turn").classList.toggle("flagged", flagged);
      if (flagged) box.open = true;
    });
  }

  // ---------------------------------------------------------------------------------- set-up

  function init() {
    if (!task() || task().dataset.ready) return;
    task().dataset.ready = "1";
    if (task().dataset.title) document.title = task().dataset.title; // htmx swaps the item, not the <head>
    showError(null);
    startTimer();
    restoreDraft();
    markTurnFlags();
    // htmx gives focus back to the element with the old focused id (`output-4` of the last item): take
    // it away, so that the new item opens at its top, the instruction in view.
    if (document.activeElement && document.activeElement !== document.body) document.activeElement.blur();
    if (mode() === "rank") {
      $$(".tier-select").forEach((s) => s.addEventListener("change", renderBoard));
      enableDrag();
      renderBoard();
      const first = outputs()[0];
      if (first) first.focus({ preventScroll: true });
    } else if (mode() === "pairwise") {
      // A click (or tap) on an output card chooses it, as the a/b keys do; selecting text inside does not.
      $$("#task article.side").forEach((side) => side.addEventListener("click", () => {
        const selection = window.getSelection && String(window.getSelection());
        if (!selection) choose(side.dataset.choice);
      }));
      $$('input[name="choice"]').forEach((r) => r.addEventListener("change", () => choose(r.value)));
    } else if (mode() === "demo") {
      const box = $('textarea[name="text"]');
      if (box) box.focus({ preventScroll: true });
    }
    window.scrollTo(0, 0);
    const answer = $("#answer");
    if (answer) {
      answer.addEventListener("change", changed);
      answer.addEventListener("input", changed);
    }
    const key = draftKey(); // this item's: by the time the answer is stored, the next item is in #task
    $$("#task form").forEach((form) => {
      // htmx asks before sending; a plain submit (no htmx) is checked here too.
      form.addEventListener("htmx:confirm", (ev) => { if (!beforeSend(form)) ev.preventDefault(); });
      form.addEventListener("submit", (ev) => {
        if (!window.htmx && !beforeSend(form)) ev.preventDefault();
        else if (!window.htmx) dropDraft(key);
      });
      form.addEventListener("htmx:afterRequest", (ev) => {
        const status = ev.detail && ev.detail.xhr ? ev.detail.xhr.status : 0;
        if (status >= 200 && status < 300) dropDraft(key); // stored (a 409/422/507 keeps the draft)
      });
    });
  }

  // Logging out leaves no drafts behind on a shared computer.
  document.addEventListener("submit", (ev) => {
    if (ev.target.matches && ev.target.matches('form[action="/logout"]')) {
      try {
        Object.keys(localStorage).filter((k) => k.startsWith(DRAFT)).forEach((k) => localStorage.removeItem(k));
      } catch (e) { /* nothing kept */ }
    }
  });
  document.addEventListener("keydown", onKey);
  window.addEventListener("resize", () => { if (mode() === "rank") measureBars(); });
  document.addEventListener("DOMContentLoaded", init);
  // A message from the server (409/422/507, swapped into #form-error) is scrolled into view too.
  document.addEventListener("htmx:afterSwap", (ev) => {
    if (ev.detail && ev.detail.target && ev.detail.target.id === "form-error") {
      ev.detail.target.scrollIntoView({ block: "center" });
    }
  });
  // After htmx swaps in the next item (the old #task is replaced, so its listeners go with it).
  document.addEventListener("htmx:afterSettle", () => { if (task() && !task().dataset.ready) init(); });
})();
