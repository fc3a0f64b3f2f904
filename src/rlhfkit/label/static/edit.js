// The edit page (/history/ID/edit): fills the task form with the stored answer (the JSON in #prefill,
// in the drafts' format of label.js) unless a draft of this edit is kept (the page has no skip form: an
// answer is edited, not skipped). Values go in through .value and .checked only.
(function () {
  "use strict";

  function fill() {
    const data = document.getElementById("prefill");
    const task = document.getElementById("task");
    const form = document.getElementById("answer");
    if (!data || !task || !form) return;
    try {
      if (localStorage.getItem("rlhfkit-draft:" + task.dataset.draftKey)) return; // the edit in progress wins
    } catch (e) { /* no storage: fill in */ }
    let fields = [];
    try { fields = JSON.parse(data.textContent); } catch (e) { return; }
    const els = Array.from(form.querySelectorAll("input, select, textarea"));
    fields.forEach(([name, value]) => {
      els.filter((el) => el.name === name).forEach((el) => {
        if (el.type === "radio" || el.type === "checkbox") { if (el.value === value) el.checked = true; }
        else el.value = value;
      });
    });
    // label.js redraws the ranking board on `change` of a tier, and marks the chosen A/B card.
    form.querySelectorAll(".tier-select").forEach((s) => s.dispatchEvent(new Event("change", { bubbles: true })));
    const choice = form.querySelector('input[name="choice"]:checked');
    if (choice) {
      document.querySelectorAll("#task article.side").forEach((s) => s.classList.toggle("chosen",
        s.dataset.choice === choice.value));
    }
  }

  document.addEventListener("DOMContentLoaded", fill);
})();
