// Keyboard-first labeling. The page is a plain HTML form (it works without this file); this script
// adds the keys, drag and drop of outputs into tiers, the ranking board, the timer and checks before
// submitting. Model text is never read into HTML here: only element moves, .value and .textContent.
(function () {
  "use strict";

  let started = 0;
  let timerId = null;
  let pendingFlag = false; // "f" was pressed: the next digit toggles a flag

  const $ = (sel, root) => (root || document).querySelector(sel);
  const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));
  const task = () => $("#task");
  const mode = () => (task() ? task().dataset.mode : "");
  const outputs = () => $$("#task article.output[data-n]");
  const focused = () => document.activeElement && document.activeElement.closest("article.output[data-n]");

  function showError(message) {
    const box = $("#form-error");
    if (!box) return;
    box.replaceChildren();
    if (message) {
      const p = document.createElement("p");
      p.className = "error-message";
      p.textContent = message;
      box.appendChild(p);
    }
  }

  // ---------------------------------------------------------------------------------- timer

  function tick() {
    const el = $("#timer");
    if (!el) return;
    const s = Math.floor((Date.now() - started) / 1000);
    el.textContent = Math.floor(s / 60) + ":" + String(s % 60).padStart(2, "0");
  }

  function startTimer() {
    started = Date.now();
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
      chip.draggable = true;
      chip.dataset.n = card.dataset.n;
      row.appendChild(chip);
      card.classList.toggle("placed", select.value !== "");
    });
  }

  function setTier(card, tier) {
    const select = $(".tier-select", card);
    if (tier !== "" && !$('option[value="' + tier + '"]', select)) return; // no tier beyond K
    select.value = String(tier);
    renderBoard();
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
    if (elapsed) elapsed.value = String(Date.now() - started);
    const problem = problems(form);
    showError(problem);
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
    if (ev.key === "Enter" && (ev.ctrlKey || !typing)) {
      const form = el.closest && el.closest("form") || $("#answer");
      if (form && form.id === "skip-form" && !ev.ctrlKey) return; // native submit of the skip form
      ev.preventDefault();
      submit(form && form.closest("#task") ? form : $("#answer"));
      return;
    }
    if (typing) {
      if (ev.key === "Escape") {
        el.blur();
        const card = el.closest("article.output");
        if (card) card.focus();
      }
      return;
    }
    const digit = /^Digit([0-9])$/.exec(ev.code || "");
    const m = mode();
    if (ev.key === "s") { ev.preventDefault(); openSkip(); return; }
    if (m === "rank") {
      const card = focused();
      if (ev.key === "j" || ev.key === "ArrowDown") { ev.preventDefault(); moveFocus(1); return; }
      if (ev.key === "k" || ev.key === "ArrowUp") { ev.preventDefault(); moveFocus(-1); return; }
      if (!card) {
        if (digit || ev.key === "f" || ev.key === "n") { ev.preventDefault(); moveFocus(0); }
        return;
      }
      if (ev.key === "f") { pendingFlag = true; card.classList.add("flagging"); return; }
      if (digit && pendingFlag) {
        const box = $('input[data-flag="' + digit[1] + '"]', card);
        if (box) box.checked = !box.checked;
      } else if (digit && ev.shiftKey) {
        const radio = $('input[type="radio"][value="' + digit[1] + '"]', card);
        if (radio) radio.checked = true;
      } else if (digit) {
        setTier(card, digit[1] === "0" ? "" : digit[1]);
      } else if (ev.key === "Backspace" || ev.key === "Delete") {
        setTier(card, "");
      } else if (ev.key === "n") {
        ev.preventDefault();
        $("textarea", card).focus();
      }
      pendingFlag = false;
      card.classList.remove("flagging");
      if (digit) ev.preventDefault();
    } else if (m === "pairwise") {
      const pick = { a: "A", ArrowLeft: "A", b: "B", ArrowRight: "B", e: "equal", "=": "equal" }[ev.key];
      if (pick) {
        ev.preventDefault();
        $('input[name="choice"][value="' + pick + '"]').checked = true;
        $$("#task article.side").forEach((s) => s.classList.toggle("chosen", s.dataset.choice === pick));
      } else if (ev.key === "n") {
        ev.preventDefault();
        $('textarea[name="notes"]').focus();
      }
    }
  }

  // ---------------------------------------------------------------------------------- set-up

  function init() {
    if (!task() || task().dataset.ready) return;
    task().dataset.ready = "1";
    showError(null);
    startTimer();
    if (mode() === "rank") {
      $$(".tier-select").forEach((s) => s.addEventListener("change", renderBoard));
      enableDrag();
      renderBoard();
      moveFocus(0);
    } else if (mode() === "demo") {
      const box = $('textarea[name="text"]');
      if (box) box.focus();
    }
    $$("#task form").forEach((form) => {
      // htmx asks before sending; a plain submit (no htmx) is checked here too.
      form.addEventListener("htmx:confirm", (ev) => { if (!beforeSend(form)) ev.preventDefault(); });
      form.addEventListener("submit", (ev) => { if (!window.htmx && !beforeSend(form)) ev.preventDefault(); });
    });
  }

  document.addEventListener("keydown", onKey);
  document.addEventListener("DOMContentLoaded", init);
  // After htmx swaps in the next item (the old #task is replaced, so its listeners go with it).
  document.addEventListener("htmx:afterSettle", () => { if (task() && !task().dataset.ready) init(); });
})();
