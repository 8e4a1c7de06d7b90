/* faceatlas atlas page: the interactive map and the tables. Hand-written canvas code, no library.
   Data comes from two blocks in the page: #fa-meta (JSON) and #fa-blob (base64 typed arrays, indexed by
   meta.blob: name -> [dtype, byte offset, length]). Every user-given string reaches the page through
   textContent, never as markup. The page makes no network request (its Content-Security-Policy forbids it).
   Identity ids live only in the identity table I.id, an Int32Array or, when an id does not fit, a
   BigInt64Array (exact to 2**63, where a Number rounds above 2**53); everything else holds identity codes,
   positions in that table. Ids are shown with String(), compared as BigInts, never turned into Numbers. */
(function () {
  "use strict";
  var started = performance.now();
  var meta = JSON.parse(document.getElementById("fa-meta").textContent);
  var TYPES = { f4: Float32Array, f8: Float64Array, u4: Uint32Array, i4: Int32Array, u2: Uint16Array,
                u1: Uint8Array, i8: BigInt64Array };
  var buffer = decode(document.getElementById("fa-blob").textContent);
  function decode(text) {
    var raw = atob(text.trim()), bytes = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
    return bytes.buffer;
  }
  function arr(name) {
    var entry = meta.blob[name];
    return entry ? new TYPES[entry[0]](buffer, entry[1], entry[2]) : null;
  }
  var P = { x: arr("px"), y: arr("py"), row: arr("row"), ident: arr("ident"), verdict: arr("verdict"),
            suggested: arr("suggested"), score: arr("score"), cluster: arr("cluster"), held: arr("held"),
            simIdent: arr("sim_ident"), simCos: arr("sim_cos") };
  var SIM_N = meta.blob.sim_ident ? meta.blob.sim_ident[3] : 0;
  var I = { id: arr("id"), ax: arr("anchor_x"), ay: arr("anchor_y"), faces: arr("faces") };
  var G = { ident: arr("grid_ident"), sim: arr("grid_sim"), dist: arr("grid_dist") };
  var N = P.x.length, NI = I.id.length, names = meta.names, F = meta.frame;
  var MISFILED = meta.verdicts.indexOf("misfiled"), LOWQ = meta.verdicts.indexOf("low_quality");

  function $(id) { return document.getElementById(id); }
  function el(tag, text, cls) {
    var node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }
  function label(code) {
    if (code < 0) return "none";
    var name = names ? names[code] : null;
    return String(I.id[code]) + (name ? " (" + name + ")" : "");
  }
  function fmt(value, digits) {
    return typeof value === "number" && isFinite(value) ? value.toFixed(digits) : "\u2013";
  }

  /* colours packed as canvas RGBA (little-endian ABGR) */
  function pack(rgb, alpha) { return ((alpha << 24) | (rgb[2] << 16) | (rgb[1] << 8) | rgb[0]) >>> 0; }
  /* identities and clusters in the PNG maps' colours (map_identities.png, map_clusters.png) */
  function packed(bytes) {
    var out = new Uint32Array(bytes.length / 3);
    for (var j = 0; j < out.length; j++) out[j] = pack([bytes[3 * j], bytes[3 * j + 1], bytes[3 * j + 2]], 255);
    return out;
  }
  var palette = packed(arr("palette")), clusterPalette = packed(arr("cluster_palette"));
  var clusterColour = arr("cluster_colour");
  var HIGHLIGHTS = meta.highlight_colours;
  var GREY = pack([170, 170, 170], 255), LIGHT = pack([214, 214, 214], 255), RED = pack([214, 39, 40], 255);
  var PURPLE = pack([142, 68, 173], 255), INK = pack([8, 48, 107], 150);

  /* state */
  var state = { colorBy: meta.color_by, suspects: false, highlight: new Set(), dim: false, selected: -1, cell: -1 };
  (meta.highlight || []).forEach(function (code) { if (code >= 0 && code < NI) state.highlight.add(code); });
  /* the code of the identity whose id is the decimal text ``text`` (-?digits), or -1: exact at any size */
  function findId(text) {
    var id = BigInt(text), lo = 0, hi = NI - 1;
    while (lo <= hi) {
      var mid = (lo + hi) >> 1, at = BigInt(I.id[mid]);
      if (at === id) return mid;
      if (at < id) lo = mid + 1; else hi = mid - 1;
    }
    return -1;
  }

  /* spatial index: the drawn points bucketed on a grid over the frame, for hover and click */
  var BX = Math.max(1, Math.min(1024, Math.ceil(Math.sqrt(N / 4)))), BY = BX;
  var bw = (F.x1 - F.x0) / BX, bh = (F.y1 - F.y0) / BY;
  var bucketStart = new Uint32Array(BX * BY + 1), bucketItems = new Uint32Array(N);
  (function () {
    var cellOf = new Uint32Array(N), i;
    for (i = 0; i < N; i++) {
      var bx = Math.min(BX - 1, Math.max(0, Math.floor((P.x[i] - F.x0) / bw)));
      var by = Math.min(BY - 1, Math.max(0, Math.floor((P.y[i] - F.y0) / bh)));
      cellOf[i] = by * BX + bx; bucketStart[cellOf[i] + 1]++;
    }
    for (i = 0; i < BX * BY; i++) bucketStart[i + 1] += bucketStart[i];
    var fill = bucketStart.slice(0, BX * BY);
    for (i = 0; i < N; i++) bucketItems[fill[cellOf[i]]++] = i;
  })();
  var facesOf = new Map();  // identity code -> drawn point indices, built on first use
  function pointsOf(code) {
    if (!facesOf.size) for (var i = 0; i < N; i++) {
      var list = facesOf.get(P.ident[i]); if (!list) facesOf.set(P.ident[i], list = []); list.push(i);
    }
    return facesOf.get(code) || [];
  }

  /* face crops (--thumbnails): blob thumb_row / thumb_ident, thumb_offset (n + 1) into thumb_jpeg, most useful
     first; each becomes a blob: URL the first time it is shown (the page's CSP admits data: and blob: images
     only). Without crops (meta.thumbs null) nothing is shown; a face without a crop is a grey placeholder. */
  var TH = meta.thumbs ? { row: arr("thumb_row"), ident: arr("thumb_ident"), offset: arr("thumb_offset"),
                           jpeg: arr("thumb_jpeg") } : null;
  var thumbOfRow = null, thumbsOfIdent = null, thumbUrls = [];
  function thumbIndex(row) {
    if (!thumbOfRow) {
      thumbOfRow = new Map();
      for (var t = 0; t < TH.row.length; t++) thumbOfRow.set(Number(TH.row[t]), t);
    }
    var found = thumbOfRow.get(Number(row));
    return found === undefined ? -1 : found;
  }
  function faceImage(t, title, big) {
    if (!thumbUrls[t]) {
      var bytes = TH.jpeg.subarray(TH.offset[t], TH.offset[t + 1]);
      thumbUrls[t] = URL.createObjectURL(new Blob([bytes], { type: "image/jpeg" }));
    }
    var img = el("img", null, big ? "fa-face big" : "fa-face");
    img.src = thumbUrls[t]; img.alt = title; img.title = title;
    return img;
  }
  function faceOfRow(row, title, big) {  /* the crop of the face in input row ``row``, or a placeholder */
    var t = thumbIndex(row);
    if (t >= 0) return faceImage(t, title, big);
    var none = el("span", null, big ? "fa-face none big" : "fa-face none");
    none.title = title + " (no crop: its photo is missing or unreadable, or past the page's budget)";
    return none;
  }
  function facesOfIdent(code, count, skipRow) {  /* up to ``count`` crops of identity ``code``, best first */
    if (!thumbsOfIdent) {
      thumbsOfIdent = new Map();
      for (var t = 0; t < TH.ident.length; t++) {
        var list = thumbsOfIdent.get(TH.ident[t]); if (!list) thumbsOfIdent.set(TH.ident[t], list = []); list.push(t);
      }
    }
    var span = el("span", null, "fa-faces");
    (thumbsOfIdent.get(code) || []).filter(function (t) { return Number(TH.row[t]) !== Number(skipRow); })
      .slice(0, count).forEach(function (t) { span.appendChild(faceImage(t, label(code) + ", row " + TH.row[t])); });
    if (!span.childNodes.length) span.appendChild(el("span", "no crops", "fa-nofaces"));
    return span;
  }
  function faceStrip(parts) {  /* a table cell: [node, text, node, ...] in a row */
    var td = el("td", null, "faces-col");
    parts.forEach(function (part) { td.appendChild(typeof part === "string" ? el("span", part, "fa-arrow") : part); });
    return td;
  }

  /* the view: map units to CSS pixels */
  var canvas = $("fa-map"), ctx = canvas.getContext("2d"), tip = $("fa-tip"), underlay = $("fa-underlay");
  var view = { cx: (F.x0 + F.x1) / 2, cy: (F.y0 + F.y1) / 2, scale: 1, base: 1 }, width = 0, height = 0, dpr = 1;
  var image = null, pixels = null, layer = document.createElement("canvas"), layerCtx = layer.getContext("2d");
  function resize() {
    if (!canvas.clientWidth || !canvas.clientHeight) return false;  // hidden or mid-layout: keep the last size
    dpr = window.devicePixelRatio || 1;
    width = canvas.clientWidth; height = canvas.clientHeight;
    canvas.width = Math.round(width * dpr); canvas.height = Math.round(height * dpr);
    layer.width = canvas.width; layer.height = canvas.height;
    image = layerCtx.createImageData(canvas.width, canvas.height);
    pixels = new Uint32Array(image.data.buffer);
    return true;
  }
  function fit() {
    view.cx = (F.x0 + F.x1) / 2; view.cy = (F.y0 + F.y1) / 2;
    view.scale = view.base = Math.min(width / (F.x1 - F.x0), height / (F.y1 - F.y0));
  }
  function sx(x) { return (x - view.cx) * view.scale + width / 2; }
  function sy(y) { return height / 2 - (y - view.cy) * view.scale; }
  function mapX(px) { return (px - width / 2) / view.scale + view.cx; }
  function mapY(py) { return view.cy - (py - height / 2) / view.scale; }

  function colourOf(i) {
    switch (state.colorBy) {
      case "cluster": return clusterPalette[clusterColour[i]];
      case "suspect": return P.verdict[i] === MISFILED ? RED : P.verdict[i] === LOWQ ? PURPLE : GREY;
      case "density": return INK;
      default: return palette[P.ident[i]];
    }
  }
  var pending = false;
  function redraw() { if (!pending) { pending = true; requestAnimationFrame(draw); } }
  function draw() {
    pending = false;
    if (!image) return;  // no size yet: the first resize draws
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, canvas.width, canvas.height);
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    if ((state.colorBy === "density" || meta.sampled) && underlay.naturalWidth) {
      ctx.imageSmoothingEnabled = view.scale / view.base < 4;
      ctx.drawImage(underlay, sx(F.x0), sy(F.y1), (F.x1 - F.x0) * view.scale, (F.y1 - F.y0) * view.scale);
    }
    drawPoints();
    drawOverlays();
  }
  function drawPoints() {
    var zoom = view.scale / view.base, W = canvas.width, H = canvas.height;
    var base = N < 20000 ? 3 : N < 100000 ? 2 : 1;
    var size = Math.max(1, Math.min(8, Math.round(base * Math.sqrt(zoom) * dpr)));
    var dim = state.dim && state.highlight.size > 0, half = size >> 1;
    pixels.fill(0);
    var ox = (width / 2 - view.cx * view.scale) * dpr, oy = (height / 2 + view.cy * view.scale) * dpr;
    var s = view.scale * dpr;
    for (var i = 0; i < N; i++) {
      var px = Math.round(P.x[i] * s + ox) - half, py = Math.round(oy - P.y[i] * s) - half;
      if (px < -size || py < -size || px >= W || py >= H) continue;
      var colour = dim && !state.highlight.has(P.ident[i]) ? LIGHT : colourOf(i);
      for (var dy = 0; dy < size; dy++) {
        var yy = py + dy; if (yy < 0 || yy >= H) continue;
        var at = yy * W;
        for (var dx = 0; dx < size; dx++) { var xx = px + dx; if (xx >= 0 && xx < W) pixels[at + xx] = colour; }
      }
    }
    layerCtx.putImageData(image, 0, 0);
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.drawImage(layer, 0, 0);
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  }
  function ring(x, y, r, colour, lineWidth) {
    ctx.beginPath(); ctx.arc(sx(x), sy(y), r, 0, 2 * Math.PI);
    ctx.strokeStyle = colour; ctx.lineWidth = lineWidth; ctx.stroke();
  }
  function drawOverlays() {
    if (state.suspects) {
      for (var i = 0; i < N; i++) if (P.verdict[i] === MISFILED) ring(P.x[i], P.y[i], 4, "rgb(214,39,40)", 1.5);
    }
    Array.from(state.highlight).forEach(function (code, order) {
      var colour = HIGHLIGHTS[order % HIGHLIGHTS.length];
      pointsOf(code).forEach(function (i) { ring(P.x[i], P.y[i], 5, colour, 2); });
      if (isFinite(I.ax[code])) {  // the identity's place on the map, also when none of its faces is drawn
        var x = sx(I.ax[code]), y = sy(I.ay[code]);
        ctx.beginPath(); ctx.moveTo(x - 7, y - 7); ctx.lineTo(x + 7, y + 7); ctx.moveTo(x + 7, y - 7);
        ctx.lineTo(x - 7, y + 7); ctx.strokeStyle = colour; ctx.lineWidth = 2.5; ctx.stroke();
      }
    });
    if (state.selected >= 0) {
      var f = state.selected;
      ring(P.x[f], P.y[f], 8, "#000", 2.5);
      if (P.verdict[f] === MISFILED && P.suggested[f] >= 0 && isFinite(I.ax[P.suggested[f]])) {
        ctx.beginPath(); ctx.moveTo(sx(P.x[f]), sy(P.y[f]));
        ctx.lineTo(sx(I.ax[P.suggested[f]]), sy(I.ay[P.suggested[f]]));
        ctx.strokeStyle = "rgb(214,39,40)"; ctx.setLineDash([5, 4]); ctx.lineWidth = 1.5; ctx.stroke();
        ctx.setLineDash([]);
      }
    }
    if (state.cell >= 0) {
      var g = meta.nearest, cw = (F.x1 - F.x0) / g.nx, ch = (F.y1 - F.y0) / g.ny;
      var gx = state.cell % g.nx, gy = Math.floor(state.cell / g.nx);
      ctx.strokeStyle = "#000"; ctx.lineWidth = 1.5;
      ctx.strokeRect(sx(F.x0 + gx * cw), sy(F.y0 + (gy + 1) * ch), cw * view.scale, ch * view.scale);
    }
  }

  /* picking */
  function pick(px, py, radius) {
    var x = mapX(px), y = mapY(py), r = radius / view.scale, best = -1, bestD = r * r;
    var bx0 = Math.max(0, Math.floor((x - r - F.x0) / bw)), bx1 = Math.min(BX - 1, Math.floor((x + r - F.x0) / bw));
    var by0 = Math.max(0, Math.floor((y - r - F.y0) / bh)), by1 = Math.min(BY - 1, Math.floor((y + r - F.y0) / bh));
    for (var by = by0; by <= by1; by++) for (var bx = bx0; bx <= bx1; bx++) {
      var cell = by * BX + bx;
      for (var j = bucketStart[cell]; j < bucketStart[cell + 1]; j++) {
        var i = bucketItems[j], ddx = P.x[i] - x, ddy = P.y[i] - y, d = ddx * ddx + ddy * ddy;
        if (d <= bestD) { bestD = d; best = i; }
      }
    }
    return best;
  }

  /* the panel */
  var panel = $("fa-panel");
  function clearPanel(title) {
    panel.textContent = ""; panel.appendChild(el("h3", title)); return panel;
  }
  function line(parent, head, text) {
    var p = el("p"); p.appendChild(el("b", head + " ")); p.appendChild(document.createTextNode(text));
    parent.appendChild(p); return p;
  }
  function showFace(i) {
    state.selected = i; state.cell = -1;
    clearPanel("Face row " + P.row[i]);
    delete panel.dataset.cell;
    panel.dataset.row = String(P.row[i]); panel.dataset.id = String(I.id[P.ident[i]]);
    if (TH) panel.appendChild(faceOfRow(P.row[i], "face row " + P.row[i], true));
    line(panel, "Filed under", label(P.ident[i]));
    var verdict = meta.verdicts[P.verdict[i]];
    line(panel, "Verdict", verdict + (P.held[i] ? " (held out of the fit, placed on the map)" : ""));
    if (P.verdict[i] === MISFILED) {
      line(panel, "Suspected misfiled:", "yes \u2013 suggested identity " + label(P.suggested[i]) + ", score " +
           fmt(P.score[i], 1) + " (log odds)").className = "suspect";
    } else {
      line(panel, "Suspected misfiled:", "no");
    }
    if (SIM_N) {
      panel.appendChild(el("p", "Most similar identities in 512-D (the identities of its nearest faces, cosine):"));
      var list = el("ol");
      for (var r = 0; r < SIM_N; r++) {
        var code = P.simIdent[i * SIM_N + r];
        if (code >= 0) list.appendChild(el("li", label(code) + " \u2013 " + fmt(P.simCos[i * SIM_N + r], 3)));
      }
      panel.appendChild(list);
    } else {
      panel.appendChild(el("p", "This run did not record each face's most similar identities (an older faceatlas made it)."));
    }
    line(panel, "Map position", fmt(P.x[i], 4) + ", " + fmt(P.y[i], 4));
    var button = el("button", "Highlight identity " + I.id[P.ident[i]]);
    button.addEventListener("click", function () { setHighlight([P.ident[i]], true); });
    panel.appendChild(button);
    redraw();
  }
  function showPoint(x, y) {
    var g = meta.nearest, gx = Math.floor((x - F.x0) / (F.x1 - F.x0) * g.nx);
    var gy = Math.floor((y - F.y0) / (F.y1 - F.y0) * g.ny);
    state.selected = -1;
    delete panel.dataset.row; delete panel.dataset.id;
    if (gx < 0 || gy < 0 || gx >= g.nx || gy >= g.ny || G.ident[(gy * g.nx + gx) * g.k] < 0) {
      state.cell = -1;
      clearPanel("Outside the populated map");
      panel.appendChild(el("p", "No face is near (" + fmt(x, 3) + ", " + fmt(y, 3) + "): faceatlas nearest " +
                                "answers only points on the map."));
      redraw(); return;
    }
    var cell = gy * g.nx + gx, cx = g.x[gx], cy = g.y[gy];
    state.cell = cell;
    clearPanel("Identities nearest to (" + fmt(cx, 3) + ", " + fmt(cy, 3) + ")");
    panel.dataset.cell = String(cell);
    panel.appendChild(el("p", "At the centre of the map cell you clicked (1/" + g.nx + " of the map across): " +
                              "the answer of"));
    panel.appendChild(el("code", "faceatlas nearest RUN --x " + cx + " --y " + cy +
                                 (g.z === null ? "" : " --z " + g.z) +
                                 " -k " + g.k));
    var table = el("table", null, "nearest"), head = el("tr");
    ["rank", "identity", "similarity", "map distance"].forEach(function (t) { head.appendChild(el("th", t)); });
    table.appendChild(head);
    for (var r = 0; r < g.k; r++) {
      var at = cell * g.k + r, code = G.ident[at];
      if (code < 0) continue;
      var tr = el("tr");
      tr.appendChild(el("td", r + 1)); tr.appendChild(el("td", label(code)));
      tr.appendChild(el("td", fmt(G.sim[at], 4))); tr.appendChild(el("td", fmt(G.dist[at], 4)));
      tr.dataset.id = String(I.id[code]);
      table.appendChild(tr);
    }
    panel.appendChild(table);
    redraw();
  }

  /* highlighting, search */
  var status = $("fa-status");
  function setHighlight(codes, zoom, dim) {
    state.highlight = new Set(codes); state.dim = dim !== false;
    var faces = 0; state.highlight.forEach(function (code) { faces += pointsOf(code).length; });
    status.textContent = codes.length ? codes.length + (codes.length === 1 ? " identity" : " identities") +
      " highlighted (" + faces + " faces drawn): " + codes.slice(0, 5).map(label).join(", ") +
      (codes.length > 5 ? ", \u2026" : "") : "";
    if (zoom && codes.length) zoomTo(codes);
    redraw();
  }
  function zoomTo(codes) {
    var x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
    codes.forEach(function (code) {
      var xs = pointsOf(code).map(function (i) { return [P.x[i], P.y[i]]; });
      if (isFinite(I.ax[code])) xs.push([I.ax[code], I.ay[code]]);
      xs.forEach(function (p) {
        x0 = Math.min(x0, p[0]); x1 = Math.max(x1, p[0]); y0 = Math.min(y0, p[1]); y1 = Math.max(y1, p[1]);
      });
    });
    if (!isFinite(x0)) return;
    var span = Math.max(x1 - x0, y1 - y0, (F.x1 - F.x0) / 40);
    view.cx = (x0 + x1) / 2; view.cy = (y0 + y1) / 2;
    view.scale = Math.min(width, height) / (span * 1.6);
  }
  var search = $("fa-search"), matches = $("fa-matches");
  function runSearch() {
    var query = search.value.trim(), found = [];
    matches.textContent = "";
    if (!query) { setHighlight([], false); return; }
    if (/^-?\d+$/.test(query)) { var code = findId(query); if (code >= 0) found.push(code); }
    if (names) {
      var lower = query.toLowerCase();
      for (var c = 0; c < NI && found.length < 50; c++) {
        if (names[c] && names[c].toLowerCase().indexOf(lower) >= 0 && found.indexOf(c) < 0) found.push(c);
      }
    }
    if (!found.length) {
      status.textContent = "no identity has the id or a name containing \u201c" + query + "\u201d";
      state.highlight = new Set(); redraw(); return;
    }
    found.forEach(function (c) {
      var item = el("li", label(c) + " \u2013 " + I.faces[c] + " faces");
      item.addEventListener("click", function () { setHighlight([c], true); });
      matches.appendChild(item);
    });
    setHighlight(found, false);
  }
  search.addEventListener("input", runSearch);
  search.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && state.highlight.size) { zoomTo(Array.from(state.highlight)); redraw(); }
  });

  /* pointer: drag pans, wheel zooms at the cursor, a click without a drag picks */
  var drag = null;
  function local(event) {
    var box = canvas.getBoundingClientRect();
    return [event.clientX - box.left, event.clientY - box.top];
  }
  canvas.addEventListener("pointerdown", function (event) {
    var at = local(event); drag = { x: at[0], y: at[1], cx: view.cx, cy: view.cy, moved: false };
    canvas.setPointerCapture(event.pointerId);
  });
  canvas.addEventListener("pointermove", function (event) {
    var at = local(event);
    if (drag) {
      if (Math.abs(at[0] - drag.x) + Math.abs(at[1] - drag.y) > 4) drag.moved = true;
      if (drag.moved) {
        view.cx = drag.cx - (at[0] - drag.x) / view.scale; view.cy = drag.cy + (at[1] - drag.y) / view.scale;
        tip.hidden = true; redraw();
      }
      return;
    }
    var i = pick(at[0], at[1], 6);
    if (i < 0) { tip.hidden = true; return; }
    tip.textContent = "row " + P.row[i] + " \u00b7 id " + label(P.ident[i]) +
      (P.verdict[i] === MISFILED ? " \u00b7 suspect" : "");
    tip.style.left = (at[0] + 14) + "px"; tip.style.top = (at[1] + 10) + "px"; tip.hidden = false;
  });
  canvas.addEventListener("pointerup", function (event) {
    var at = local(event), was = drag; drag = null;
    if (!was || was.moved) return;
    var i = pick(at[0], at[1], 6);
    if (i >= 0) showFace(i); else showPoint(mapX(at[0]), mapY(at[1]));
  });
  canvas.addEventListener("pointerleave", function () { tip.hidden = true; });
  canvas.addEventListener("pointercancel", function () { drag = null; });
  canvas.addEventListener("wheel", function (event) {
    event.preventDefault();
    var at = local(event), x = mapX(at[0]), y = mapY(at[1]);
    var factor = Math.exp(-event.deltaY * 0.0015);
    view.scale = Math.max(view.base / 4, Math.min(view.base * 20000, view.scale * factor));
    view.cx = x - (at[0] - width / 2) / view.scale; view.cy = y + (at[1] - height / 2) / view.scale;
    redraw();
  }, { passive: false });
  $("fa-reset").addEventListener("click", function () { fit(); redraw(); });
  $("fa-zoom-in").addEventListener("click", function () { view.scale *= 1.5; redraw(); });
  $("fa-zoom-out").addEventListener("click", function () { view.scale /= 1.5; redraw(); });
  var colourSelect = $("fa-color");
  colourSelect.value = state.colorBy;
  colourSelect.addEventListener("change", function () { state.colorBy = colourSelect.value; legend(); redraw(); });
  $("fa-suspects-toggle").addEventListener("change", function (event) {
    state.suspects = event.target.checked; redraw();
  });
  function legend() {
    var text = {
      id: "Each identity has its own colour.",
      cluster: "Each HDBSCAN cluster has its own colour; grey: in no cluster.",
      suspect: "Red: suspected misfiled; purple: low quality; grey: the rest.",
      density: "Darker blue: more faces (every face counted, drawn or not)."
    };
    $("fa-legend").textContent = text[state.colorBy] || "";
  }

  /* tables */
  function sortable(table, rows, columns, render, pageSize) {
    var body = table.tBodies[0], order = { key: null, dir: 1 }, shown = pageSize;
    var more = table.parentNode.querySelector("button.more");
    function fill() {
      body.textContent = "";
      rows.slice(0, shown).forEach(function (row) { body.appendChild(render(row)); });
      if (more) {
        more.hidden = rows.length <= shown;
        more.textContent = "Show " + Math.min(pageSize, rows.length - shown) + " more of " + (rows.length - shown);
      }
    }
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, k) {
      th.addEventListener("click", function () {
        var key = columns[k];
        if (!key) return;  // a column without a sort order (the faces)
        order.dir = order.key === key ? -order.dir : 1;
        order.key = key;
        rows.sort(function (a, b) {
          var u = key(a), v = key(b);
          if (u !== u) u = -Infinity;  // NaN (an unknown number) sorts as the smallest
          if (v !== v) v = -Infinity;
          return (u < v ? -1 : u > v ? 1 : 0) * order.dir;
        });
        Array.prototype.forEach.call(table.tHead.rows[0].cells, function (cell) { cell.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", order.dir > 0 ? "ascending" : "descending");
        fill();
      });
    });
    if (more) more.addEventListener("click", function () { shown += pageSize; fill(); });
    fill();
  }
  function cells(tr, values, nameColumns) {
    values.forEach(function (v, k) { tr.appendChild(el("td", v, nameColumns.indexOf(k) >= 0 ? "name-col" : "")); });
    return tr;
  }
  function nameOf(code) { return names && code >= 0 && names[code] ? names[code] : ""; }
  var suspects = [];
  for (var s = 0; s < N; s++) if (P.verdict[s] === MISFILED) suspects.push(s);
  suspects.sort(function (a, b) { return P.score[b] - P.score[a]; });
  var suspectTable = $("fa-suspects");
  sortable(suspectTable, suspects, [
    function (i) { return P.row[i]; }, function (i) { return I.id[P.ident[i]]; },
    function (i) { return nameOf(P.ident[i]); },
    function (i) { return P.suggested[i] >= 0 ? I.id[P.suggested[i]] : -Infinity; },
    function (i) { return nameOf(P.suggested[i]); },
    function (i) { return P.score[i]; }
  ], function (i) {
    var tr = cells(el("tr"), [P.row[i], I.id[P.ident[i]], nameOf(P.ident[i]),
                              P.suggested[i] >= 0 ? I.id[P.suggested[i]] : "", nameOf(P.suggested[i]),
                              fmt(P.score[i], 1)], [2, 4]);
    if (TH) tr.appendChild(faceStrip([faceOfRow(P.row[i], "this face, row " + P.row[i]), "filed:",
                                      facesOfIdent(P.ident[i], 3, P.row[i]), "suggested:",
                                      P.suggested[i] >= 0 ? facesOfIdent(P.suggested[i], 3, P.row[i]) : el("span")]));
    tr.addEventListener("click", function () {
      zoomTo([P.ident[i]]); view.cx = P.x[i]; view.cy = P.y[i]; showFace(i);
      canvas.scrollIntoView({ block: "center" });
    });
    return tr;
  }, 100);
  var pairTable = $("fa-lookalikes");
  sortable(pairTable, meta.lookalikes.slice(), [  /* p: [code a, code b, similarity, possibly the same] */
    function (p) { return I.id[p[0]]; }, function (p) { return nameOf(p[0]); }, function (p) { return I.id[p[1]]; },
    function (p) { return nameOf(p[1]); }, function (p) { return p[2]; }, function (p) { return p[3] ? 1 : 0; }
  ], function (p) {
    var tr = cells(el("tr"), [I.id[p[0]], nameOf(p[0]), I.id[p[1]], nameOf(p[1]), fmt(p[2], 4),
                              p[3] ? "possibly" : ""], [1, 3]);
    if (TH) tr.appendChild(faceStrip([facesOfIdent(p[0], 3), "|", facesOfIdent(p[1], 3)]));
    tr.addEventListener("click", function () {
      setHighlight([p[0], p[1]], true); canvas.scrollIntoView({ block: "center" });
    });
    return tr;
  }, 100);
  if (!names) { suspectTable.classList.add("no-names"); pairTable.classList.add("no-names"); }

  /* review: corrections.csv's proposals (meta.review.rows: each row's cells as the file holds them), each
     accepted or rejected here; the accepted rows, in file order under the file's header, make the download,
     a review row with the action it proposes in its "what" (accepting "review ... action merge" is a merge).
     The choices live in localStorage under meta.review.storage_key (row position -> "accept" / "reject"), or
     in memory where the browser refuses storage (some file:// and private modes throw). */
  var reviewTable = $("fa-review");
  if (meta.review && reviewTable) review(meta.review, reviewTable);
  function review(R, table) {
    var C = R.columns, rows = R.rows, remembered = true, url = null, rowPoints = null, current = null;
    var link = $("fa-review-download"), told = $("fa-review-status"), where = $("fa-review-where");
    var choices = loadChoices();
    function cellOf(r, name) { return C[name] >= 0 ? rows[r][C[name]] : ""; }
    function actionOf(r) { return cellOf(r, "action") || cellOf(r, "what"); }  // what accepting the row does
    function acceptedRow(r) {  // the row as the download writes it: a review takes the action it proposes
      var out = rows[r].slice();
      if (cellOf(r, "what") === "review" && C.action >= 0 && out[C.action]) out[C.what] = out[C.action];
      return out;
    }
    function idText(r, side) { return C[side + "_id"] >= 0 ? cellOf(r, side + "_id") : cellOf(r, side); }
    function rowText(r) { return C.row >= 0 ? cellOf(r, "row") : cellOf(r, "face"); }
    function codeOf(text) { return /^-?\d+$/.test(text) ? findId(text) : -1; }
    function pointOfRow(text) {  // the drawn point of the face in input row text, or -1
      if (!/^\d+$/.test(text)) return -1;
      if (!rowPoints) { rowPoints = new Map(); for (var i = 0; i < N; i++) rowPoints.set(P.row[i], i); }
      var i = rowPoints.get(Number(text));
      return i === undefined ? -1 : i;
    }
    function loadChoices() {
      var saved = null, out = new Map();
      try { saved = window.localStorage.getItem(R.storage_key); } catch (e) { remembered = false; }
      try { saved = saved ? JSON.parse(saved) : null; } catch (e) { saved = null; }
      if (saved && typeof saved === "object") Object.keys(saved).forEach(function (key) {
        var r = Number(key), choice = saved[key];
        if (/^\d+$/.test(key) && r < rows.length && (choice === "accept" || choice === "reject")) out.set(r, choice);
      });
      return out;
    }
    function save() {
      if (!remembered) return;
      try {
        if (!choices.size) { window.localStorage.removeItem(R.storage_key); return; }
        var out = {};
        choices.forEach(function (choice, r) { out[r] = choice; });
        window.localStorage.setItem(R.storage_key, JSON.stringify(out));
      } catch (e) { remembered = false; }
    }
    /* a CSV cell as Python's csv module writes it (QUOTE_MINIMAL), quoted where it holds , " CR or LF */
    function csvCell(text) { return /[",\r\n]/.test(text) ? '"' + text.replace(/"/g, '""') + '"' : text; }
    function csvLine(cellsOfRow) { return cellsOfRow.map(csvCell).join(","); }
    function changed() {
      save();
      var accepted = [], rejected = 0;
      choices.forEach(function (choice, r) { if (choice === "accept") accepted.push(r); else rejected++; });
      accepted.sort(function (a, b) { return a - b; });
      if (url) URL.revokeObjectURL(url);
      url = null;
      if (accepted.length) {
        var lines = [csvLine(R.header)];
        accepted.forEach(function (r) { lines.push(csvLine(acceptedRow(r))); });
        url = URL.createObjectURL(new Blob([lines.join("\n") + "\n"], { type: "text/csv;charset=utf-8" }));
        link.href = url; link.removeAttribute("aria-disabled");
      } else {
        link.removeAttribute("href"); link.setAttribute("aria-disabled", "true");
      }
      told.textContent = accepted.length + " accepted, " + rejected + " rejected of " + rows.length +
        (remembered ? "" : " \u2013 this browser keeps no localStorage here: the choices last until the page closes");
    }
    function paint(tr) {
      var choice = choices.get(Number(tr.dataset.index)) || "";
      tr.classList.toggle("accepted", choice === "accept"); tr.classList.toggle("rejected", choice === "reject");
      tr.querySelector("button.accept").setAttribute("aria-pressed", String(choice === "accept"));
      tr.querySelector("button.reject").setAttribute("aria-pressed", String(choice === "reject"));
    }
    function choose(r, tr, choice) {
      if (choices.get(r) === choice) choices.delete(r); else choices.set(r, choice);  // a pressed button unpresses
      paint(tr); changed();
    }
    function locate(r) {  // the row's face on the map, as the suspects table shows one; a merge: both identities
      var from = codeOf(idText(r, "from")), to = codeOf(idText(r, "to"));
      var known = [from, to].filter(function (code) { return code >= 0; });
      var loose = !idText(r, "from");  // an unassigned face (assign): never on the map, whatever its row
      var merge = actionOf(r) === "merge";
      var i = merge || loose ? -1 : pointOfRow(rowText(r));
      where.textContent = "";
      if (i >= 0) {
        setHighlight(to >= 0 ? [to] : [], false, false);
        zoomTo([P.ident[i]]); view.cx = P.x[i]; view.cy = P.y[i]; showFace(i);
        canvas.scrollIntoView({ block: "center" });
      } else if (merge && known.length) {
        setHighlight(known, true); canvas.scrollIntoView({ block: "center" });
      } else {
        where.textContent = merge ? "Neither identity of this merge is in this run." :
          loose ? "Face " + rowText(r) + " is filed under no identity: the map does not hold it " +
                               "(unassigned.csv places it)." :
          "Face row " + rowText(r) + " is not drawn on the map" + (meta.sampled ? " (the page draws a sample)." : ".");
        if (known.length) {
          setHighlight(known, true);
          where.textContent += " The identities it names are highlighted on the map.";
        }
      }
    }
    function idLabel(r, side) { var code = codeOf(idText(r, side)); return code >= 0 ? label(code) : idText(r, side); }
    function idKey(r, side) { var code = codeOf(idText(r, side)); return code >= 0 ? I.id[code] : -Infinity; }
    function number(text) { var v = Number(text); return text.trim() && isFinite(v) ? v : -Infinity; }
    sortable(table, rows.map(function (row, r) { return r; }), [
      function (r) { return cellOf(r, "what"); }, function (r) { return number(rowText(r)); },
      function (r) { return idKey(r, "from"); }, function (r) { return idKey(r, "to"); },
      function (r) { return number(cellOf(r, "score")); }, function (r) { return cellOf(r, "reason"); },
      function (r) { return cellOf(r, "names"); }, function (r) { return choices.get(r) || ""; }
    ], function (r) {
      var what = cellOf(r, "what"), shown = what === "review" && actionOf(r) !== what ? what + ": " + actionOf(r) : what;
      var tr = cells(el("tr"), [shown, rowText(r), idLabel(r, "from"), idLabel(r, "to"),
                                cellOf(r, "score"), cellOf(r, "reason"), cellOf(r, "names")], [6]);
      tr.dataset.index = String(r);
      if (C.row >= 0) tr.cells[1].title = cellOf(r, "face");  // a database's own keys, on hover
      if (C.from_id >= 0) tr.cells[2].title = cellOf(r, "from");
      if (C.to_id >= 0) tr.cells[3].title = cellOf(r, "to");
      var td = el("td", null, "choice"), yes = el("button", "Accept", "accept"), no = el("button", "Reject", "reject");
      yes.addEventListener("click", function (event) { event.stopPropagation(); choose(r, tr, "accept"); });
      no.addEventListener("click", function (event) { event.stopPropagation(); choose(r, tr, "reject"); });
      td.appendChild(yes); td.appendChild(no); tr.appendChild(td);
      if (TH) {
        var from = codeOf(idText(r, "from")), to = codeOf(idText(r, "to")), face = rowText(r);
        var own = !idText(r, "from") || !/^\d+$/.test(face) ? el("span") : faceOfRow(face, "face row " + face);
        tr.appendChild(faceStrip([own, from >= 0 ? "filed:" : "", from >= 0 ? facesOfIdent(from, 3, face) : el("span"),
                                  "\u2192",
                                  to >= 0 ? facesOfIdent(to, 3, face) : el("span")]));
      }
      paint(tr);
      tr.addEventListener("click", function () {
        if (current) current.classList.remove("current");
        current = tr; tr.classList.add("current"); locate(r);
      });
      return tr;
    }, 100);
    if (!rows.some(function (row, r) { return cellOf(r, "names"); })) table.classList.add("no-names");
    $("fa-review-accept-all").addEventListener("click", function () {
      Array.prototype.forEach.call(table.tBodies[0].rows, function (tr) {
        choices.set(Number(tr.dataset.index), "accept"); paint(tr);
      });
      changed();
    });
    $("fa-review-clear").addEventListener("click", function () {
      choices.clear(); Array.prototype.forEach.call(table.tBodies[0].rows, paint); changed();
    });
    changed();
  }

  /* start: wait for the density image, then draw and say the page is ready */
  function start() {
    resize(); fit(); legend();
    if (state.highlight.size) setHighlight(Array.from(state.highlight), false, false);
    draw();
    window.addEventListener("resize", function () { if (resize()) { if (!view.base) fit(); redraw(); } });
    window.faceatlas = {
      ready: true, readyMs: performance.now() - started, points: N, meta: meta,
      screenOf: function (row) {
        for (var i = 0; i < N; i++) if (P.row[i] === row) {
          var box = canvas.getBoundingClientRect(); return [box.left + sx(P.x[i]), box.top + sy(P.y[i])];
        }
        return null;
      },
      screenOfPoint: function (x, y) {
        var box = canvas.getBoundingClientRect(); return [box.left + sx(x), box.top + sy(y)];
      },
      focus: function (x, y, zoom) { view.cx = x; view.cy = y; view.scale = view.base * zoom; draw(); },
      face: function (row) { for (var i = 0; i < N; i++) if (P.row[i] === row) return [P.x[i], P.y[i]]; return null; },
      highlighted: function () { return Array.from(state.highlight).map(function (c) { return I.id[c]; }); }
    };
    document.documentElement.dataset.faceatlas = "ready";
  }
  if (underlay.complete) start();
  else { underlay.addEventListener("load", start); underlay.addEventListener("error", start); }
})();
