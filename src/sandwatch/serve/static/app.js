// sandwatch serve: the map page. Every text that comes from the project or a user is put in
// the page with textContent (never innerHTML); changes send the page's token in a header.
"use strict";
(function () {
  const config = JSON.parse(document.querySelector('meta[name="sandwatch-config"]').content);
  const $ = (id) => document.getElementById(id);
  const el = (tag, text, cls) => { const e = document.createElement(tag); if (text !== undefined) e.textContent = text; if (cls) e.className = cls; return e; };
  const state = { project: null, site: null, dateIndex: 0, layers: {}, labels: null, alerts: [] };
  window.sandwatch = state;   // for tests and the curious: read-only use

  const map = L.map("map", { zoomControl: true, maxZoom: 20 });
  map.createPane("graticule"); map.getPane("graticule").style.zIndex = 150;    // under the scenes
  map.createPane("swipe"); map.getPane("swipe").style.zIndex = 420;            // above this date's layers
  map.createPane("vectors"); map.getPane("vectors").style.zIndex = 450;
  map.setView([20, 80], 4);
  window.sandwatch_map_point = (x, y) => map.containerPointToLatLng([x, y]);   // for tests: screen -> lon/lat

  async function api(path, options) {
    const opts = Object.assign({ headers: {} }, options || {});
    if (opts.method && opts.method !== "GET") opts.headers["X-Sandwatch-Token"] = config.token;
    const resp = await fetch(path, opts);
    const type = resp.headers.get("content-type") || "";
    const body = type.includes("json") ? await resp.json() : await resp.text();
    if (!resp.ok) throw new Error((body && body.error) || String(body).slice(0, 200) || resp.statusText);
    return body;
  }
  function status(id, text, error) { const s = $(id); s.textContent = text; s.classList.toggle("error", !!error); }

  // ---- base map: offline graticule + site footprints; an online tile URL when configured ----
  if (config.basemap) L.tileLayer(config.basemap, { maxZoom: 19, attribution: "base map: see --basemap" }).addTo(map);
  const graticule = L.layerGroup().addTo(map);
  function drawGraticule() {
    graticule.clearLayers();
    const b = map.getBounds(), z = map.getZoom();
    const step = [20, 10, 5, 2, 1, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001][Math.min(13, Math.max(0, z - 2))];
    const style = { color: "#8aa", weight: 0.6, interactive: false, pane: "graticule" };
    for (let x = Math.floor(b.getWest() / step) * step; x <= b.getEast(); x += step)
      L.polyline([[b.getSouth(), x], [b.getNorth(), x]], style).addTo(graticule);
    for (let y = Math.floor(b.getSouth() / step) * step; y <= b.getNorth(); y += step)
      L.polyline([[y, b.getWest()], [y, b.getEast()]], style).addTo(graticule);
  }
  map.on("moveend", drawGraticule);
  const footprints = L.layerGroup().addTo(map);

  function tiles(key, pane, opacity) {
    return L.tileLayer(`/tiles/${encodeURIComponent(key)}/{z}/{x}/{y}.png`,
      { maxZoom: 20, tileSize: 256, pane: pane || "tilePane", opacity: opacity === undefined ? 1 : opacity });
  }
  function dropLayers() {
    for (const layer of Object.values(state.layers)) if (layer) map.removeLayer(layer);
    state.layers = {};
  }
  function entry(i) { return state.site.dates[i === undefined ? state.dateIndex : i]; }
  function siteUrl(path) {
    return `${path}?site=${encodeURIComponent(state.site.name)}&date=${encodeURIComponent(entry().date)}`;
  }

  // ---- site and date ----
  function selectSite(name, fit) {
    state.site = state.project.sites.find((s) => s.name === name);
    const n = state.site.dates.length;
    $("date").max = String(Math.max(0, n - 1));
    const swipe = $("swipe-date"); swipe.replaceChildren();
    state.site.dates.forEach((d, i) => { const o = el("option", d.date); o.value = String(i); swipe.appendChild(o); });
    swipe.value = String(Math.max(0, n - 2));
    if (fit && state.site.bounds) { const b = state.site.bounds; map.fitBounds([[b[1], b[0]], [b[3], b[2]]]); }
    loadAoi();
    selectDate(n - 1);
  }
  async function loadAoi() {
    if (state.aoi) map.removeLayer(state.aoi);
    state.aoi = null;
    const fc = await api(`/api/aoi?site=${encodeURIComponent(state.site.name)}`);
    state.aoi = L.geoJSON(fc, { pane: "vectors", interactive: false, style: { color: "#19c3e6", weight: 2, dashArray: "6 4", fill: false } });
    if ($("show-aoi").checked) state.aoi.addTo(map);
  }
  function selectDate(i) {
    state.dateIndex = i; $("date").value = String(i);
    const e = entry(); $("date-label").textContent = e.date;
    dropLayers();
    if (e.scene && $("show-scene").checked) state.layers.scene = tiles(e.scene).addTo(map);
    if (e.probability && $("show-prob").checked) state.layers.prob = tiles(e.probability, "overlayPane", $("prob-opacity").value / 100).addTo(map);
    if (e.mask && $("show-mask").checked) state.layers.mask = tiles(e.mask, "overlayPane", 0.8).addTo(map);
    if (e.polygons && $("show-polygons").checked) {
      const g = L.geoJSON(null, { pane: "vectors", style: { color: "#ffe600", weight: 2, fill: false } });
      state.layers.polygons = g.addTo(map);
      api(`/api/vector/${encodeURIComponent(e.polygons)}`).then((fc) => g.addData(fc)).catch(() => {});
    }
    $("labelbox-export").href = siteUrl("/api/labelbox.ndjson");
    updateSwipe();
    loadLabels();
  }

  // ---- swipe: another date's true colour (and probability) right of a vertical line ----
  function updateSwipe() {
    for (const k of ["swipe", "swipeProb"]) if (state.layers[k]) { map.removeLayer(state.layers[k]); state.layers[k] = null; }
    const on = $("swipe-on").checked; $("swipe").disabled = !on; $("swipe-line").hidden = !on;
    const other = entry(Number($("swipe-date").value));
    if (on && other && other.scene) state.layers.swipe = tiles(other.scene, "swipe").addTo(map);
    if (on && other && other.probability && $("show-prob").checked)
      state.layers.swipeProb = tiles(other.probability, "swipe", $("prob-opacity").value / 100).addTo(map);
    clipSwipe();
  }
  function clipSwipe() {
    const pane = map.getPane("swipe");
    if (!$("swipe-on").checked) { pane.style.clip = ""; return; }
    const nw = map.containerPointToLayerPoint([0, 0]), se = map.containerPointToLayerPoint(map.getSize());
    const x = nw.x + (se.x - nw.x) * $("swipe").value / 100;
    pane.style.clip = `rect(${nw.y}px, ${se.x}px, ${se.y}px, ${x}px)`;
    const line = $("swipe-line"), r = map.getContainer().getBoundingClientRect();
    line.style.left = `${r.left + r.width * $("swipe").value / 100}px`;
  }
  map.on("move", clipSwipe);

  // ---- annotate: the label file of the date, edited with geoman ----
  const colours = { High: "#e4007c", Medium: "#ff8c00", Low: "#00b7ff" };
  function styleLabel(layer) { const c = layer.feature.properties.confidence_class; layer.setStyle({ color: colours[c] || "#e4007c", weight: 2, fillOpacity: 0.15 }); }
  function labelPopup(layer) {
    const p = layer.feature.properties, box = el("div");
    const sel = el("select"); for (const c of ["High", "Medium", "Low"]) { const o = el("option", c); sel.appendChild(o); }
    sel.value = p.confidence_class; sel.onchange = () => { p.confidence_class = sel.value; styleLabel(layer); dirty(); };
    const note = el("input"); note.value = p.note || ""; note.maxLength = 1000;
    note.oninput = () => { p.note = note.value; dirty(); };
    box.append(el("div", "Confidence"), sel, el("div", "Note"), note);
    layer.bindPopup(box);
  }
  function addLabel(layer, props) {
    layer.feature = { type: "Feature", properties: { confidence_class: props.confidence_class || "High", note: props.note || "" } };
    layer.options.pane = "vectors";
    styleLabel(layer); labelPopup(layer); layer.on("pm:edit", dirty); state.labels.addLayer(layer);
  }
  function dirty() { status("labels-status", "unsaved changes"); }
  async function loadLabels() {
    if (state.labels) map.removeLayer(state.labels);
    state.labels = L.featureGroup();
    if ($("show-labels").checked) state.labels.addTo(map);
    const fc = await api(siteUrl("/api/labels"));
    for (const f of fc.features) {
      L.geoJSON(f, { pane: "vectors" }).eachLayer((layer) => addLabel(layer, f.properties));
    }
    status("labels-status", `${fc.features.length} label polygon(s) for ${entry().date}`);
  }
  map.pm.addControls({ position: "topleft", drawMarker: false, drawCircleMarker: false, drawPolyline: false, drawRectangle: true,
    drawPolygon: true, drawCircle: false, drawText: false, cutPolygon: false, rotateMode: false, editMode: true, dragMode: false, removalMode: true });
  map.on("pm:create", (e) => {
    addLabel(e.layer, { confidence_class: $("confidence").value, note: $("note").value });
    if (!$("show-labels").checked) map.removeLayer(e.layer);
    dirty();
  });
  map.on("pm:remove", (e) => { state.labels.removeLayer(e.layer); dirty(); });
  $("draw").onclick = () => map.pm.enableDraw("Polygon", { snappable: false });
  $("save-labels").onclick = async () => {
    const features = [];
    state.labels.eachLayer((layer) => features.push(layer.toGeoJSON(8)));
    try {
      const res = await api(siteUrl("/api/labels"), { method: "POST", headers: { "Content-Type": "application/geo+json" },
        body: JSON.stringify({ type: "FeatureCollection", features }) });
      status("labels-status", `saved ${res.features} polygon(s)` + (res.version ? `; previous kept as ${res.version}` : ""));
      entry().labels_exist = true;
    } catch (err) { status("labels-status", `not saved: ${err.message}`, true); }
  };
  $("labelbox-import").onchange = async (ev) => {
    const file = ev.target.files[0]; if (!file) return;
    try {
      const res = await api(siteUrl("/api/labelbox"), { method: "POST", headers: { "Content-Type": "application/x-ndjson" }, body: await file.text() });
      await loadLabels();
      status("labels-status", `imported ${res.imported} polygon(s) (${res.skipped} skipped); ${res.features} saved`);
    } catch (err) { status("labels-status", `not imported: ${err.message}`, true); }
    ev.target.value = "";
  };

  // ---- alerts ----
  const stateClass = { accepted: "accepted", rejected: "rejected", "needs field check": "needs" };
  function renderAlerts() {
    const list = $("alerts"); list.replaceChildren();
    for (const a of state.alerts) {
      const li = el("li"); li.dataset.alert = a.id;
      const head = el("div"); head.append(el("b", `${a.site}: ${a.kind}`), el("span", ` region ${a.region}`));
      const conf = a.confidence === null || a.confidence === undefined ? "" : `, confidence ${Math.round(a.confidence * 100)} %`;
      const meta = el("div", `${a.date} (first seen ${a.first_seen}), ${a.area_ha.toFixed(2)} ha${conf}`, "meta");
      const review = a.review;
      const st = el("div", review ? `${review.decision} by ${review.reviewer} at ${review.decided_at}` + (review.comment ? `: ${review.comment}` : "") : "not reviewed",
        "state " + (review ? stateClass[review.decision] || "" : ""));
      const comment = el("input"); comment.placeholder = "comment"; comment.maxLength = 2000; comment.className = "comment";
      const buttons = el("div");
      const zoom = el("button", "Zoom"); zoom.type = "button"; zoom.onclick = () => zoomAlert(a);
      buttons.append(zoom);
      for (const [label, decision] of [["Accept", "accepted"], ["Reject", "rejected"], ["Field check", "needs field check"]]) {
        const b = el("button", label); b.type = "button"; b.dataset.decision = decision;
        b.onclick = () => decide(a, decision, comment.value); buttons.append(b);
      }
      li.append(head, meta, st, comment, buttons); list.append(li);
    }
  }
  function zoomAlert(a) {
    if (a.site !== state.site.name) { $("site").value = a.site; selectSite(a.site, false); }
    const i = state.site.dates.findIndex((d) => d.date === a.date); if (i >= 0) selectDate(i);
    if (a.geometry) map.fitBounds(L.geoJSON(a.geometry).getBounds(), { maxZoom: 17, padding: [40, 40] });
  }
  async function decide(a, decision, comment) {
    const reviewer = $("reviewer").value.trim();
    if (!reviewer) { status("alerts-status", "type your name in Reviewer first", true); return; }
    localStorage.setItem("sandwatch-reviewer", reviewer);
    try {
      const res = await api(`/api/alerts/${encodeURIComponent(a.id)}/review`, { method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ decision, comment, reviewer }) });
      a.review = res.review; renderAlerts();
      status("alerts-status", `${a.site} region ${a.region}: ${decision}`);
    } catch (err) { status("alerts-status", `not recorded: ${err.message}`, true); }
  }
  async function loadAlerts() {
    if (!state.project.alerts) { status("alerts-status", "no monitoring history in this project (run `sandwatch monitor`)"); return; }
    state.alerts = (await api("/api/alerts")).alerts;
    status("alerts-status", `${state.alerts.length} alert(s)`);
    renderAlerts();
  }

  // ---- controls ----
  $("site").onchange = () => selectSite($("site").value, true);
  $("date").oninput = () => selectDate(Number($("date").value));
  for (const id of ["show-scene", "show-prob", "show-mask", "show-polygons"]) $(id).onchange = () => selectDate(state.dateIndex);
  $("show-aoi").onchange = () => { if (state.aoi) { if ($("show-aoi").checked) state.aoi.addTo(map); else map.removeLayer(state.aoi); } };
  $("show-labels").onchange = () => { if ($("show-labels").checked) state.labels.addTo(map); else map.removeLayer(state.labels); };
  $("prob-opacity").oninput = () => {
    $("prob-opacity-label").textContent = `${$("prob-opacity").value}%`;
    for (const k of ["prob", "swipeProb"]) if (state.layers[k]) state.layers[k].setOpacity($("prob-opacity").value / 100);
  };
  $("swipe-on").onchange = updateSwipe; $("swipe-date").onchange = updateSwipe; $("swipe").oninput = clipSwipe;
  $("reviewer").value = localStorage.getItem("sandwatch-reviewer") || config.reviewer || "";

  async function start() {
    state.project = await api("/api/project");
    for (const s of state.project.sites) {
      const o = el("option", s.name); o.value = s.name; $("site").appendChild(o);
      if (s.bounds) {
        const b = s.bounds, rect = L.rectangle([[b[1], b[0]], [b[3], b[2]]], { color: "#333", weight: 1, fill: false });
        rect.bindTooltip(el("span", s.name, "site-label"), { permanent: false });
        rect.on("click", () => { $("site").value = s.name; selectSite(s.name, true); });
        rect.addTo(footprints);
      }
    }
    const first = state.project.sites.find((s) => s.dates.some((d) => d.probability)) || state.project.sites[0];
    $("site").value = first.name;
    selectSite(first.name, true);
    drawGraticule();
    await loadAlerts();
    document.body.dataset.ready = "1";
  }
  start().catch((err) => { status("alerts-status", `could not load the project: ${err.message}`, true); });
})();
