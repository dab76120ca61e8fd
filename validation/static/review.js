// The review screen: keyboard control, claim flags, the map overlay, zoom and contrast.
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("item-data").textContent);
  const form = document.getElementById("review-form");
  const sentences = Array.from(document.querySelectorAll("#sentences li"));
  const typeKeys = { o: "object", a: "attribute", c: "count", p: "position", l: "land_cover", v: "not_visible" };
  const flags = new Map(); // sentence index -> type
  let selected = 0;
  let completeness = null;
  let hallucinations = null;
  let hallucinationsSetByHand = false;
  const started = Date.now();

  if (data.review && !data.review.skipped) {
    (data.review.flags || []).forEach((f) => flags.set(f.sentence, f.type));
    completeness = data.review.completeness;
    hallucinations = data.review.hallucinations;
    hallucinationsSetByHand = true;
  }

  function render() {
    sentences.forEach((li, i) => {
      li.classList.toggle("selected", i === selected);
      const t = flags.get(i);
      li.classList.toggle("flagged", Boolean(t));
      li.querySelector(".flag-label").textContent = t ? "⚑ " + t.replace("_", " ") : "";
    });
    if (!hallucinationsSetByHand) hallucinations = Math.min(flags.size, 3);
    document.querySelectorAll("#completeness-scale button").forEach((b) =>
      b.classList.toggle("chosen", Number(b.dataset.value) === completeness));
    document.querySelectorAll("#hallucination-scale button").forEach((b) =>
      b.classList.toggle("chosen", Number(b.dataset.value) === hallucinations));
    document.querySelectorAll("#flag-types button").forEach((b) =>
      b.classList.toggle("chosen", flags.get(selected) === b.dataset.type));
    document.getElementById("flags").value = JSON.stringify(
      Array.from(flags, ([sentence, type]) => ({ sentence, type })));
    document.getElementById("completeness").value = completeness ?? "";
    document.getElementById("hallucinations").value = hallucinations ?? "";
  }

  function toggleFlag(type) {
    if (!sentences.length) return;
    if (flags.get(selected) === type) flags.delete(selected);
    else flags.set(selected, type);
    render();
  }

  // -- imagery --------------------------------------------------------------------------
  const img = document.getElementById("chip");
  const zoom = document.getElementById("zoom");
  const zoomLevel = document.getElementById("zoom-level");
  const contrast = document.getElementById("contrast");
  const overlay = document.getElementById("overlay");
  const showFeatures = document.getElementById("show-features");

  function applyView() {
    zoom.style.transform = "scale(" + zoomLevel.value + ")";
    img.style.filter = "contrast(" + contrast.value + "%)";
    overlay.style.display = showFeatures.checked ? "" : "none";
  }
  function setView(kind) {
    img.src = img.dataset[kind];
    document.querySelectorAll("input[name=view]").forEach((r) => (r.checked = r.value === kind));
  }
  function step(input, delta) {
    input.value = Math.min(Number(input.max), Math.max(Number(input.min), Number(input.value) + delta));
    applyView();
  }

  const NS = "http://www.w3.org/2000/svg";
  function drawFeatures() {
    for (const f of data.features) {
      let el;
      if (f.geometry === "Polygon") {
        el = document.createElementNS(NS, "path");
        el.setAttribute("d", f.coords.map((ring) => "M" + ring.map((p) => p.join(",")).join("L") + "Z").join(""));
      } else if (f.geometry === "LineString") {
        el = document.createElementNS(NS, "polyline");
        el.setAttribute("points", f.coords.map((p) => p.join(",")).join(" "));
      } else if (f.geometry === "Point") {
        el = document.createElementNS(NS, "circle");
        el.setAttribute("cx", f.coords[0]);
        el.setAttribute("cy", f.coords[1]);
        el.setAttribute("r", 3);
      } else continue;
      el.setAttribute("class", "feature " + f.theme);
      const title = document.createElementNS(NS, "title");
      title.textContent = [f.theme, f.kind, f.name].filter(Boolean).join(" · ");
      el.appendChild(title);
      overlay.appendChild(el);
      if (f.name) {
        const at = f.geometry === "Point" ? f.coords : f.geometry === "Polygon" ? f.coords[0][0] : f.coords[Math.floor(f.coords.length / 2)];
        const label = document.createElementNS(NS, "text");
        label.setAttribute("x", Math.min(Math.max(at[0], 2), 240));
        label.setAttribute("y", Math.min(Math.max(at[1], 8), 262));
        label.setAttribute("class", "label");
        label.textContent = f.name;
        overlay.appendChild(label);
      }
    }
  }

  // -- events ---------------------------------------------------------------------------
  sentences.forEach((li, i) => li.addEventListener("click", () => { selected = i; render(); }));
  document.querySelectorAll("#flag-types button").forEach((b) =>
    b.addEventListener("click", () => toggleFlag(b.dataset.type)));
  document.querySelectorAll("#completeness-scale button").forEach((b) =>
    b.addEventListener("click", () => { completeness = Number(b.dataset.value); render(); }));
  document.querySelectorAll("#hallucination-scale button").forEach((b) =>
    b.addEventListener("click", () => { hallucinations = Number(b.dataset.value); hallucinationsSetByHand = true; render(); }));
  document.querySelectorAll("input[name=view]").forEach((r) => r.addEventListener("change", () => setView(r.value)));
  [zoomLevel, contrast, showFeatures].forEach((el) => el.addEventListener("input", applyView));

  form.addEventListener("submit", (ev) => {
    const skipping = document.getElementById("skip-reason").value !== "";
    const err = document.getElementById("form-error");
    if (!skipping && (completeness === null || hallucinations === null)) {
      ev.preventDefault();
      err.hidden = false;
      err.textContent = "Rate completeness (1-6) first, or choose a reason to skip.";
      return;
    }
    document.getElementById("seconds").value = ((Date.now() - started) / 1000).toFixed(1);
  });

  document.addEventListener("keydown", (ev) => {
    const typing = ["TEXTAREA", "INPUT", "SELECT"].includes(document.activeElement.tagName);
    if (typing) {
      if (ev.key === "Escape") document.activeElement.blur();
      return;
    }
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const k = ev.key;
    if (k >= "1" && k <= "6") completeness = Number(k);
    else if (k === "ArrowDown") selected = Math.min(selected + 1, sentences.length - 1);
    else if (k === "ArrowUp") selected = Math.max(selected - 1, 0);
    else if (typeKeys[k]) return toggleFlag(typeKeys[k]);
    else if (k === "h") { hallucinations = ((hallucinations ?? -1) + 1) % 4; hallucinationsSetByHand = true; }
    else if (k === "e") { ev.preventDefault(); document.getElementById("edited").focus(); }
    else if (k === "s") { ev.preventDefault(); document.getElementById("skip-reason").focus(); }
    else if (k === "n") setView(img.src.endsWith("false.png") ? "true" : "false");
    else if (k === "m") { showFeatures.checked = !showFeatures.checked; applyView(); }
    else if (k === "+" || k === "=") step(zoomLevel, 0.5);
    else if (k === "-") step(zoomLevel, -0.5);
    else if (k === "]") step(contrast, 10);
    else if (k === "[") step(contrast, -10);
    else if (k === "ArrowLeft" && data.prev) { window.location = data.prev; return; }
    else if (k === "ArrowRight" && data.next) { window.location = data.next; return; }
    else if (k === "Enter") { ev.preventDefault(); form.requestSubmit(); return; }
    else return;
    ev.preventDefault();
    render();
  });

  drawFeatures();
  applyView();
  render();
})();
