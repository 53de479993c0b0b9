// SpotWhisper slide viewer: the js_on_load code of a gr.HTML component (see spotwhisper/ui/viewer.py).
// Gradio passes `element` (the component's root), `props` (props.value = the payload built in
// Python), `trigger` (sends an event to Python) and `watch` (runs a callback when props.value changes).
// Payload: {key, slide, dzi, width, height, mpp, layer: {url, x, y, w, h} | null, scale, regions,
//           annotations, message}; every coordinate is in pixels of the slide image.
(function () {
  const root = element.querySelector('.sw-viewer');
  if (!root) { return; }
  const host = root.querySelector('.sw-osd');
  const st = { osd: null, dzi: null, layerItem: null, layerUrl: null, opacity: 0.6, marks: '' };
  window.swViewers = window.swViewers || {};

  function val() { return props.value || {}; }

  function ensure() {
    if (st.osd) { return st.osd; }
    if (!window.OpenSeadragon) { setTimeout(render, 100); return null; }
    st.osd = window.OpenSeadragon({
      element: host,
      prefixUrl: 'sw/static/openseadragon/images/',
      drawer: 'canvas',
      showNavigator: true,
      navigatorPosition: 'TOP_RIGHT',
      navigatorSizeRatio: 0.18,
      imageSmoothingEnabled: false,
      visibilityRatio: 0.3,
      minZoomImageRatio: 0.6,
      maxZoomPixelRatio: 4,
      animationTime: 0.5,
      gestureSettingsMouse: { clickToZoom: false, dblClickToZoom: true },
      gestureSettingsTouch: { clickToZoom: false },
    });
    st.osd.addHandler('open', function () {
      st.layerItem = null; st.layerUrl = null; st.marks = '';
      const f = val().fit;
      const w = val().width || 1;
      st.fit = f ? new window.OpenSeadragon.Rect(f.x / w, f.y / w, f.w / w, f.h / w) : null;
      if (st.fit) { st.osd.viewport.fitBounds(st.fit, true); }  // open framed on the spots
      draw();
    });
    st.osd.addHandler('home', function (e) {  // the home button returns to the spots, not the whole glass
      if (st.fit) { setTimeout(function () { st.osd.viewport.fitBounds(st.fit, e.immediately); }, 0); }  // after OSD's own
    });
    st.osd.addHandler('animation', scaleBar);
    st.osd.addHandler('resize', scaleBar);
    st.osd.addHandler('canvas-click', function (e) {
      const item = st.osd.world.getItemAt(0);
      if (!e.quick || !item) { return; }
      const p = item.viewerElementToImageCoordinates(e.position);
      trigger('region', { slide: val().slide, key: val().key, x: p.x, y: p.y });
    });
    window.swViewers[root.dataset.key || 'viewer'] = st.osd;
    return st.osd;
  }

  function render() {
    const v = val();
    root.dataset.key = v.key || root.dataset.key || 'viewer';
    message(v.message, v.info);
    colourBar(v.scale);
    const osd = ensure();
    if (!osd) { return; }
    window.swViewers[root.dataset.key] = osd;
    if (!v.dzi) { if (st.dzi) { osd.close(); st.dzi = null; } return; }
    if (v.dzi !== st.dzi) {
      st.dzi = v.dzi;
      osd.open(v.dzi);  // draw() runs on 'open'
    } else {
      draw();
    }
  }

  function vp(x, y) { const w = val().width || 1; return new window.OpenSeadragon.Point(x / w, y / w); }

  function draw() {
    const osd = st.osd;
    const v = val();
    if (!osd || !osd.world.getItemAt(0)) { return; }
    const L = v.layer;
    const url = L ? L.url : null;
    if (url !== st.layerUrl) {
      const old = st.layerItem;  // removed once the new picture is in, so the map does not flicker
      st.layerItem = null;
      st.layerUrl = url;
      if (L) {
        const w = v.width || 1;
        osd.addTiledImage({
          tileSource: { type: 'image', url: L.url, buildPyramid: false },
          x: L.x / w, y: L.y / w, width: L.w / w, opacity: st.opacity,
          success: function (e) {
            if (old) { osd.world.removeItem(old); }
            if (st.layerUrl === L.url) { st.layerItem = e.item; root.dataset.layer = L.url; }
            else { osd.world.removeItem(e.item); }
          },
        });
      } else {
        if (old) { osd.world.removeItem(old); }
        delete root.dataset.layer;
      }
    }
    const marks = JSON.stringify([v.regions || [], v.annotations || []]);
    if (marks !== st.marks) { st.marks = marks; drawMarks(v); }
    scaleBar();
  }

  function svgFor(polys, cls) {
    let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
    polys.forEach(function (p) { p.forEach(function (q) {
      x0 = Math.min(x0, q[0]); y0 = Math.min(y0, q[1]); x1 = Math.max(x1, q[0]); y1 = Math.max(y1, q[1]);
    }); });
    if (!isFinite(x0)) { return null; }
    const ns = 'http://www.w3.org/2000/svg';
    const svg = document.createElementNS(ns, 'svg');
    svg.setAttribute('viewBox', x0 + ' ' + y0 + ' ' + Math.max(x1 - x0, 1) + ' ' + Math.max(y1 - y0, 1));
    svg.setAttribute('preserveAspectRatio', 'none');
    svg.setAttribute('class', 'sw-outlines ' + cls);
    polys.forEach(function (p) {
      const path = document.createElementNS(ns, 'polygon');
      path.setAttribute('points', p.map(function (q) { return q[0] + ',' + q[1]; }).join(' '));
      path.setAttribute('vector-effect', 'non-scaling-stroke');
      svg.appendChild(path);
    });
    const w = val().width || 1;
    return { svg: svg, rect: new window.OpenSeadragon.Rect(x0 / w, y0 / w, Math.max(x1 - x0, 1) / w, Math.max(y1 - y0, 1) / w) };
  }

  function label(text, title, x, y, cls, onClick) {
    const el = document.createElement('div');
    el.className = 'sw-label ' + cls;
    el.textContent = text;
    el.title = title || '';
    st.osd.addOverlay({ element: el, location: vp(x, y), placement: window.OpenSeadragon.Placement.CENTER });
    if (onClick) {
      new window.OpenSeadragon.MouseTracker({ element: el, clickHandler: function (e) { e.preventDefaultAction = true; onClick(); } });
    }
    return el;
  }

  function drawMarks(v) {
    const osd = st.osd;
    osd.clearOverlays();
    const all = [];
    (v.regions || []).forEach(function (r) { r.polygons.forEach(function (p) { all.push(p); }); });
    const outl = svgFor(all, 'sw-regions');
    if (outl) { osd.addOverlay({ element: outl.svg, location: outl.rect }); }
    (v.regions || []).forEach(function (r) {
      label(String(r.id), r.title, r.x, r.y, 'sw-region-label', function () {
        trigger('region', { slide: v.slide, key: v.key, region: r.id });
      });
    });
    const ann = [];
    (v.annotations || []).forEach(function (a) { a.polygons.forEach(function (p) { ann.push(p); }); });
    const aout = svgFor(ann, 'sw-annotations');
    if (aout) { osd.addOverlay({ element: aout.svg, location: aout.rect }); }
    (v.annotations || []).forEach(function (a) { if (a.label) { label(a.label, a.title, a.x, a.y, 'sw-annotation-label'); } });
    root.dataset.regions = String((v.regions || []).length);
  }

  function scaleBar() {
    const bar = root.querySelector('.sw-scalebar');
    const v = val();
    const item = st.osd && st.osd.world.getItemAt(0);
    if (!v.mpp || !item) { bar.style.display = 'none'; return; }
    const zoom = item.viewportToImageZoom(st.osd.viewport.getZoom(true));  // screen px per image px
    const umPerPx = v.mpp / zoom;
    const target = 120 * umPerPx;
    const p = Math.pow(10, Math.floor(Math.log10(target)));
    const nice = [5, 2, 1].map(function (m) { return m * p; }).find(function (n) { return n <= target; }) || p;
    bar.style.display = 'block';
    bar.querySelector('.sw-scalebar-line').style.width = (nice / umPerPx).toFixed(1) + 'px';
    bar.querySelector('span').textContent = nice >= 1000 ? (nice / 1000) + ' mm' : nice + ' µm';
    const b = st.osd.viewport.getBounds(true);
    root.dataset.view = [b.x, b.y, b.width, b.height].map(function (n) { return n.toFixed(5); }).join(',');
  }

  function colourBar(scale) {
    const box = root.querySelector('.sw-colourbar');
    if (!scale) { box.style.display = 'none'; box.innerHTML = ''; return; }
    box.style.display = 'block';
    if (scale.kind === 'classes') {
      box.innerHTML = scale.items.map(function (it) {
        return '<div class="sw-swatch"><i style="background:' + it.colour + '"></i><b>' + esc(it.label) + '</b> ' +
          esc(it.detail || '') + '</div>';
      }).join('');
      return;
    }
    const span = scale.max - scale.min || 1;
    const t = Math.min(100, Math.max(0, 100 * (scale.threshold - scale.min) / span));
    box.innerHTML = '<div class="sw-cb-title">' + esc(scale.label) + '</div>' +
      '<div class="sw-cb-bar" style="background:' + scale.gradient + '"><i style="left:' + t.toFixed(1) + '%"></i></div>' +
      '<div class="sw-cb-ticks"><span>' + scale.min.toFixed(1) + '</span><span>' + scale.max.toFixed(1) + '</span></div>' +
      '<div class="sw-cb-thr"><i></i>threshold ' + scale.threshold.toFixed(2).replace(/0$/, '') +
      ' (fainter below)</div>';
  }

  function message(text, info) {
    const box = root.querySelector('.sw-message');
    box.classList.toggle('sw-info', !!info);  // news (e.g. the first slide is being prepared), not a problem
    box.textContent = text || '';
    box.style.display = text ? 'block' : 'none';
  }

  function esc(s) { return String(s).replace(/[&<>"]/g, function (c) { return { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' }[c]; }); }

  root.querySelector('.sw-opacity').addEventListener('input', function (e) {
    st.opacity = Number(e.target.value) / 100;
    if (st.layerItem) { st.layerItem.setOpacity(st.opacity); }
  });
  watch('value', render);
  render();
})();
