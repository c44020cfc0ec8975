/* kemu topology page: draws the graph kemu inlined (kemu/frontend/topology.py builds it)
 * with Cytoscape.js. Nodes are compound nodes (devices, namespaces, pods on their veths),
 * collapsed to one box each on large clusters and expanded on a click; Services have edges
 * to their endpoints; flows (a flow log, a replay or a trace) are a table, a service map and,
 * on a click, the flow's hops highlighted in order with the decisions taken at each. */
(function () {
  'use strict';
  var G = JSON.parse(document.getElementById('kemu-data').textContent);
  var t0 = performance.now();
  var owner = {};      // element id inside a node -> the node's name
  var nodeOf = {};     // node name -> node entry
  var bridgeOf = {};   // node name -> its bridge device id
  var ethOf = {};      // node name -> its eth0 device id
  var expanded = new Set();
  var selectedFlow = null;
  var picked = null;
  var overview = null; // the extent of the collapsed overview (place())   // the Service last clicked (its lines drawn on a large cluster)
  var step = 0;

  G.nodes.forEach(function (n) {
    nodeOf[n.name] = n;
    n.devices.forEach(function (d) {
      owner[d.id] = n.name;
      if (d.kind === 'bridge') bridgeOf[n.name] = d.id;
      if (d.kind === 'eth0') ethOf[n.name] = d.id;
    });
    n.namespaces.forEach(function (ns) {
      owner['nsg:' + n.name + '/' + ns.name] = n.name;
      ns.pods.forEach(function (p) {
        owner[p.id] = n.name;
        if (p.veth) owner[p.veth] = n.name;
      });
    });
  });

  function sized(els) {  // node sizes from their labels (no text measuring per node)
    els.forEach(function (e) {
      if (e.group !== 'nodes') return;
      var lines = String(e.data.label || '').split('\n');
      var longest = 0;
      lines.forEach(function (l) { longest = Math.max(longest, l.length); });
      e.data.w = 12 + longest * 5.2;
      e.data.h = 10 + lines.length * 11;
    });
    return els;
  }

  // a large cluster with many Services shows them as one box per namespace, opened on a click
  var groupServices = G.collapsed && G.services.length > 200;
  var svcOpen = new Set();
  var svcByNs = {};
  G.services.forEach(function (s) { (svcByNs[s.namespace] = svcByNs[s.namespace] || []).push(s); });

  function serviceElement(s) {
    return { group: 'nodes', data: { id: s.id, kind: 'service', parent: groupServices ? 'svcns:' + s.namespace : undefined,
      label: s.namespace + '/' + s.name + '\n' + s.type + ' ' + s.clusterIP } };
  }

  function visible(id) {
    if (groupServices && id.indexOf('svc:') === 0) {
      var ns = id.slice(4, id.indexOf('/'));
      if (!svcOpen.has(ns)) return 'svcns:' + ns;
    }
    var n = owner[id];
    if (n !== undefined && !expanded.has(n)) return 'node:' + n;
    if (id.indexOf('node:') === 0 || id in owner || id === 'net') return id;
    return id;
  }

  function podCount(n) {
    var k = 0;
    n.namespaces.forEach(function (ns) { k += ns.pods.length; });
    return k;
  }

  function baseElements() {
    var els = [{ group: 'nodes', data: { id: 'net', kind: 'net', label: 'node network ' + G.network.cidr +
      (G.collapsed ? '\n(every node is on it: ' + G.nodes.length + ')' : '') } }];
    var hosts = (G.network.gateway ? [Object.assign({ name: 'gateway' }, G.network.gateway)] : [])
      .concat(G.network.externals);
    hosts.forEach(function (h) {
      els.push({ group: 'nodes', data: { id: h.id, label: h.name + '\n' + h.ip, kind: h.name === 'gateway' ? 'gateway' : 'external' } });
      els.push({ group: 'edges', data: { id: 'wire:' + h.id, source: h.id, target: 'net' }, classes: 'wire' });
    });
    G.nodes.forEach(function (n) {
      els.push({ group: 'nodes', data: { id: 'node:' + n.name, kind: 'node', name: n.name,
        label: n.name + ' ' + n.ip + '\n' + podCount(n) + ' pods' } });
    });
    // the service map's workloads (a Deployment, StatefulSet, ... standing for its pods)
    var used = {};
    G.serviceMap.forEach(function (e) { used[e.source] = true; used[e.target] = true; });
    G.workloads.forEach(function (w) {
      if (!used[w.id]) return;
      els.push({ group: 'nodes', data: { id: w.id, kind: 'workload',
        label: w.kind + ' ' + w.namespace + '/' + w.name + '\n' + w.pods.length + ' pod' + (w.pods.length === 1 ? '' : 's') } });
    });
    if (groupServices) {
      Object.keys(svcByNs).sort().forEach(function (ns) {
        els.push({ group: 'nodes', data: { id: 'svcns:' + ns, kind: 'svcns', ns: ns,
          label: 'namespace ' + ns + ': ' + svcByNs[ns].length + ' Services' } });
      });
    } else {
      G.services.forEach(function (s) { els.push(serviceElement(s)); });
    }
    if (G.collapsed) place(els);
    return sized(els);
  }

  function place(els) {
    // the collapsed overview of a large cluster: rows of equal boxes, the 'preset' layout
    var cols = Math.ceil(Math.sqrt(G.nodes.length * 2)), dx = 140, dy = 50;
    var k = 0, s = 0, h = 0, w = 0, scols = Math.max(4, Math.ceil(cols * dx / 220));
    var rows = Math.ceil(G.nodes.length / cols);
    els.forEach(function (e) {
      if (e.group !== 'nodes') return;
      var kind = e.data.kind;
      if (kind === 'net') e.position = { x: cols * dx / 2, y: -60 };
      else if (kind === 'node') { e.position = { x: (k % cols) * dx, y: Math.floor(k / cols) * dy }; k += 1; }
      else if (kind === 'workload') { e.position = { x: (w % scols) * 220, y: (rows + 1) * dy + Math.floor(w / scols) * dy }; w += 1; }
      else if (kind === 'service' || kind === 'svcns') { e.position = { x: (s % scols) * 220, y: (rows + 2) * dy + Math.floor(s / scols) * dy }; s += 1; }
      else { e.position = { x: cols * dx / 2 + (h + 1) * 160, y: -140 }; h += 1; }
    });
    overview = { x1: -80, y1: -170, x2: Math.max(cols * dx, scols * 220, cols * dx / 2 + (h + 1) * 160) + 80,
      y2: (rows + 2) * dy + Math.ceil(s / scols) * dy + 40 };
  }

  function fitOverview() {
    // the viewport from the positions place() chose: no bounding box of every label
    var w = cy.width(), hh = cy.height();
    var z = Math.min(w / (overview.x2 - overview.x1), hh / (overview.y2 - overview.y1));
    cy.viewport({ zoom: z, pan: { x: -overview.x1 * z + (w - (overview.x2 - overview.x1) * z) / 2,
      y: -overview.y1 * z } });
  }

  function childElements(n) {
    var els = [];
    var parent = 'node:' + n.name;
    n.devices.forEach(function (d) {
      els.push({ group: 'nodes', data: { id: d.id, parent: parent, label: d.label, kind: d.kind } });
    });
    var br = bridgeOf[n.name], eth = ethOf[n.name];
    n.devices.forEach(function (d) {
      if (d.kind === 'bridge' && eth) els.push({ group: 'edges', data: { id: 'in:' + d.id, source: d.id, target: eth, label: 'routing' }, classes: 'inner' });
      if (d.kind === 'vtep' && eth) els.push({ group: 'edges', data: { id: 'in:' + d.id, source: d.id, target: eth, label: d.tunnel || 'VXLAN' }, classes: 'inner tunnel' });
    });
    n.namespaces.forEach(function (ns) {
      var gid = 'nsg:' + n.name + '/' + ns.name;
      els.push({ group: 'nodes', data: { id: gid, parent: parent, label: 'namespace ' + ns.name, kind: 'ns' } });
      ns.pods.forEach(function (p) {
        els.push({ group: 'nodes', data: { id: p.id, parent: gid, kind: 'pod', label: p.name + '\n' + p.ip + (p.hostNetwork ? ' (hostNetwork)' : '') } });
        if (p.veth) {
          els.push({ group: 'nodes', data: { id: p.veth, parent: parent, kind: 'veth', label: p.vethLabel } });
          els.push({ group: 'edges', data: { id: 'pair:' + p.veth, source: p.veth, target: p.id }, classes: 'inner veth' });
          if (br) els.push({ group: 'edges', data: { id: 'port:' + p.veth, source: p.veth, target: br }, classes: 'inner' });
          // a routed CNI's host veth (no bridge): an L3 device of the node, routed to eth0
          else if (eth) els.push({ group: 'edges', data: { id: 'port:' + p.veth, source: p.veth, target: eth, label: 'routing' }, classes: 'inner' });
        } else if (eth) {
          els.push({ group: 'edges', data: { id: 'host:' + p.id, source: p.id, target: eth }, classes: 'inner' });
        }
      });
    });
    return sized(els);
  }

  function derivedEdges() {
    var els = [], seen = {};
    function add(cls, a, b, data) {
      var key = cls + '|' + a + '|' + b;
      if (!a || !b || a === b || seen[key]) return;
      seen[key] = true;
      els.push({ group: 'edges', data: Object.assign({ id: key, source: a, target: b }, data || {}), classes: cls });
    }
    G.nodes.forEach(function (n) {
      // a large cluster's collapsed nodes are all on the node network: its label says so,
      // thousands of lines into one box would say nothing more (and cost the first paint)
      if (G.collapsed && !expanded.has(n.name)) return;
      add('wire', expanded.has(n.name) && ethOf[n.name] ? ethOf[n.name] : 'node:' + n.name, 'net');
    });
    G.services.forEach(function (s) {
      if (groupServices && !svcOpen.has(s.namespace)) return;
      // a large cluster draws a Service's lines once it is picked or one of its endpoints'
      // nodes is expanded: thousands of lines between collapsed boxes would hide the picture
      if (G.collapsed && s.id !== picked && !s.endpoints.some(function (p) { return expanded.has(owner[p]); })) return;
      s.endpoints.forEach(function (p) { add('endpoint', s.id, visible(p)); });
    });
    G.serviceMap.forEach(function (e) {
      add('smap v-' + e.verdict, visible(e.source), visible(e.target), {
        count: e.count, width: Math.min(12, 1.5 + Math.log2(1 + e.count) * 1.5),
        label: e.count + (e.reasons.length ? ' ' + e.reasons.join(', ') : '') });
    });
    return els;
  }

  var style = [
    { selector: 'node', style: { label: 'data(label)', 'font-size': 9, 'text-wrap': 'wrap', 'text-valign': 'center', 'text-halign': 'center', 'background-color': '#ccc', shape: 'round-rectangle', 'min-zoomed-font-size': G.collapsed ? 6 : 0 } },
    { selector: 'node:childless', style: { width: 'data(w)', height: 'data(h)' } },
    { selector: 'node[kind="net"]', style: { 'background-color': '#333', color: '#fff', 'font-size': 11 } },
    { selector: 'node[kind="gateway"], node[kind="external"]', style: { 'background-color': '#bab0ac' } },
    { selector: 'node[kind="node"]', style: { 'background-color': '#e8eef5', 'border-width': 1, 'border-color': '#4e79a7', 'font-size': 10 } },
    { selector: 'node[kind="node"]:parent', style: { 'text-valign': 'top', 'background-opacity': 0.5, padding: 10 } },
    { selector: 'node[kind="ns"]', style: { padding: 6, 'background-opacity': 0, 'border-style': 'dashed', 'border-width': 1, 'border-color': '#aaa', 'text-valign': 'top', color: '#777' } },
    { selector: 'node[kind="eth0"]', style: { 'background-color': '#4e79a7', color: '#fff' } },
    { selector: 'node[kind="bridge"]', style: { 'background-color': '#59a14f', color: '#fff' } },
    { selector: 'node[kind="vtep"]', style: { 'background-color': '#f28e2b', color: '#fff' } },
    { selector: 'node[kind="dummy"]', style: { 'background-color': '#bab0ac' } },
    { selector: 'node[kind="veth"]', style: { 'background-color': '#d7c4b7', 'font-size': 7 } },
    { selector: 'node[kind="pod"]', style: { 'background-color': '#76b7b2', shape: 'ellipse' } },
    { selector: 'node[kind="svcns"]', style: { 'background-color': '#fde9e9', 'border-width': 2, 'border-color': '#e15759', 'text-valign': 'top' } },
    { selector: 'node[kind="workload"]', style: { 'background-color': '#fff3c4', 'border-width': 1, 'border-color': '#b07aa1', shape: 'barrel' } },
    { selector: 'node[kind="service"]', style: { 'background-color': '#fde9e9', 'border-width': 1, 'border-color': '#e15759', shape: 'round-tag' } },
    { selector: 'edge', style: { width: 1.5, 'line-color': '#999', 'curve-style': 'bezier', 'font-size': 8 } },
    { selector: 'edge.endpoint', style: { 'line-color': '#e15759', 'line-style': 'dashed', 'target-arrow-shape': 'triangle', 'target-arrow-color': '#e15759', opacity: 0.6 } },
    { selector: 'edge.tunnel', style: { 'line-color': '#f28e2b', label: 'data(label)' } },
    { selector: 'edge.smap', style: { width: 'data(width)', label: 'data(label)', 'target-arrow-shape': 'triangle', 'curve-style': 'unbundled-bezier', opacity: 0.8 } },
    { selector: 'edge.v-FORWARDED', style: { 'line-color': '#2e7d32', 'target-arrow-color': '#2e7d32' } },
    { selector: 'edge.v-TRANSLATED', style: { 'line-color': '#6a3fb5', 'target-arrow-color': '#6a3fb5' } },
    { selector: 'edge.v-DROPPED', style: { 'line-color': '#c62828', 'target-arrow-color': '#c62828' } },
    { selector: '.hop', style: { 'border-width': 4, 'border-color': '#ffb000', 'background-color': '#ffe082', color: '#000' } },
    { selector: '.hop-drop', style: { 'border-color': '#c62828' } },
    { selector: 'edge.hop-step', style: { 'line-color': '#ffb000', 'target-arrow-color': '#ffb000', 'target-arrow-shape': 'triangle', width: 3, label: 'data(label)', 'font-size': 11, 'text-background-color': '#fff', 'text-background-opacity': 1 } },
    { selector: ':selected', style: { 'overlay-opacity': 0.15 } }
  ];

  var cy = cytoscape({
    container: document.getElementById('cy'), style: style, elements: [],
    minZoom: 0.02, maxZoom: 4, textureOnViewport: true,
    hideEdgesOnViewport: G.collapsed, pixelRatio: 1
  });
  window.cy = cy;

  function rebuildDerived() {
    cy.edges('.wire, .endpoint, .smap').remove();
    cy.add(derivedEdges());
  }

  function layoutAll(done) {
    // kemu computed the positions of a small cluster (topology.preset_layout): nodes in a
    // row, pods in their node's box beside their veths, workloads and Services in bands below
    var opts = G.collapsed
      ? { name: 'preset', fit: false }
      : G.positions ? { name: 'preset', fit: true, padding: 20, animate: false,
        positions: function (n) { return G.positions[n.id()] || n.position(); } }
      : { name: 'cose', animate: false, randomize: true, nodeDimensionsIncludeLabels: true,
          idealEdgeLength: 70, nodeRepulsion: 400000, nodeOverlap: 20, gravity: 0.3,
          nestingFactor: 0.9, componentSpacing: 80, numIter: 2500, padding: 20 };
    var l = cy.layout(opts);
    if (done) l.one('layoutstop', done);
    l.run();
  }

  function expand(name, relayout) {
    if (expanded.has(name) || !nodeOf[name]) return false;
    expanded.add(name);
    cy.batch(function () { cy.add(childElements(nodeOf[name])); });
    if (relayout !== false) afterToggle(name);
    return true;
  }

  function collapse(name) {
    if (!expanded.has(name)) return;
    expanded.delete(name);
    cy.batch(function () { cy.getElementById('node:' + name).descendants().remove(); });
    afterToggle(null);
  }

  function afterToggle(name) {
    cy.batch(rebuildDerived);
    if (!G.collapsed) { layoutAll(); return; }
    if (name) {  // a local layout inside the expanded node, around where it stood
      var parent = cy.getElementById('node:' + name);
      var p = parent.position();
      var kids = parent.union(parent.descendants());
      kids.layout({ name: 'cose', animate: false, randomize: true, fit: false,
        boundingBox: { x1: p.x - 250, y1: p.y - 200, w: 500, h: 400 },
        nodeDimensionsIncludeLabels: true, idealEdgeLength: 40 }).run();
      cy.animate({ fit: { eles: parent, padding: 40 } }, { duration: 200 });
    }
  }

  function toggleServices(ns) {
    var group = cy.getElementById('svcns:' + ns);
    if (svcOpen.has(ns)) {
      svcOpen.delete(ns);
      cy.batch(function () { group.children().remove(); rebuildDerived(); });
      return;
    }
    svcOpen.add(ns);
    var p = group.position(), per = Math.max(4, Math.ceil(Math.sqrt(svcByNs[ns].length * 3)));
    cy.batch(function () {
      cy.add(sized(svcByNs[ns].map(function (s, i) {
        var e = serviceElement(s);
        e.position = { x: p.x + (i % per) * 220, y: p.y + Math.floor(i / per) * 50 };
        return e;
      })));
      rebuildDerived();
    });
  }

  function clearHighlight() {
    cy.batch(function () {
      cy.elements('.hop').removeClass('hop hop-drop');
      cy.edges('.hop-step').remove();
    });
  }

  function highlight(flow, upto) {
    var hops = flow.hops;
    var grow = false;
    hops.forEach(function (h) {
      var n = owner[h.target] || (h.target.indexOf('node:') === 0 ? h.target.slice(5) : undefined);
      if (n !== undefined && !expanded.has(n)) { expand(n, false); grow = true; }
    });
    if (grow) afterToggle(null);
    hops.concat([{ target: flow.to }, { target: flow.from }]).forEach(function (h) {
      if (groupServices && h.target && h.target.indexOf('svc:') === 0) {
        var ns = h.target.slice(4, h.target.indexOf('/'));
        if (!svcOpen.has(ns)) toggleServices(ns);
      }
    });
    clearHighlight();
    var last = null, k = 0, shown = upto === undefined ? hops.length : upto;
    cy.batch(function () {
      hops.slice(0, shown).forEach(function (h, i) {
        if (!h.target) return;
        var id = visible(h.target);
        var ele = cy.getElementById(id);
        if (ele.empty()) return;
        ele.addClass('hop');
        if (h.verdict === 'DROPPED') ele.addClass('hop-drop');
        if (last !== null && last !== id) {
          k += 1;
          cy.add({ group: 'edges', classes: 'hop-step', data: { id: 'step:' + k, source: last, target: id, label: String(i + 1) } });
        }
        last = id;
      });
    });
  }

  function esc(s) {
    return String(s).replace(/[&<>"]/g, function (c) { return { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' }[c]; });
  }

  function showFlow(flow) {
    selectedFlow = flow;
    var rows = document.querySelectorAll('#flow-table tr.selected');
    rows.forEach(function (r) { r.classList.remove('selected'); });
    var row = document.querySelector('#flow-table tr[data-flow="' + flow.id + '"]');
    if (row) row.classList.add('selected');
    var html = '<p><b class="v-' + flow.verdict + '">' + flow.verdict + '</b> ' + esc(flow.reason) +
      '<br>' + esc(flow.summary) + '<br>' + esc(flow.source) + ' &rarr; ' + esc(flow.destination) +
      (flow.service ? ' (Service ' + esc(flow.service) + ')' : '') + '</p>' +
      '<button type="button" id="step-prev">&larr; step</button> <button type="button" id="step-next">step &rarr;</button> ' +
      '<button type="button" id="step-all">all hops</button><ol id="hop-list">';
    flow.hops.forEach(function (h, i) {
      html += '<li data-hop="' + i + '"><b>' + esc(h.iface) + '</b> ' + esc(h.direction || '') + ' ' + esc(h.verdict || '') + ' ' +
        esc(h.reason || '') + ' <span class="decisions">' + esc(h.point || '') + '<br>' +
        h.decisions.map(esc).join('<br>') + '</span></li>';
    });
    html += '</ol>';
    document.getElementById('detail-body').innerHTML = html;
    step = flow.hops.length;
    highlight(flow);
    document.getElementById('step-prev').onclick = function () { stepTo(Math.max(1, step - 1)); };
    document.getElementById('step-next').onclick = function () { stepTo(Math.min(flow.hops.length, step + 1)); };
    document.getElementById('step-all').onclick = function () { stepTo(flow.hops.length); };
  }

  function stepTo(k) {
    step = k;
    highlight(selectedFlow, k);
    document.querySelectorAll('#hop-list li').forEach(function (li, i) {
      li.classList.toggle('current', i === k - 1);
    });
  }

  function showElement(ele) {
    var d = ele.data();
    var html = '<dl><dt>id</dt><dd>' + esc(d.id) + '</dd><dt>what</dt><dd>' + esc(d.kind) + '</dd>';
    if (d.label) html += '<dt>label</dt><dd>' + esc(d.label).replace(/\n/g, '<br>') + '</dd>';
    if (d.kind === 'service') {
      var s = G.services.filter(function (x) { return x.id === d.id; })[0];
      html += '<dt>ports</dt><dd>' + esc(s.ports.join(', ')) + '</dd><dt>endpoints</dt><dd>' +
        (s.endpoints.map(function (p) { return esc(p.slice(4)); }).join('<br>') || 'none ready') + '</dd>';
    }
    if (d.kind === 'workload') {
      var wl = G.workloads.filter(function (x) { return x.id === d.id; })[0];
      html += '<dt>pods</dt><dd>' + wl.pods.map(function (p) { return esc(p.slice(4)); }).join('<br>') + '</dd>';
    }
    if (d.kind === 'node') html += '<dt>click</dt><dd>' + (expanded.has(d.name) ? 'collapse' : 'expand') + ' the node</dd>';
    document.getElementById('detail-body').innerHTML = html + '</dl>';
  }

  cy.on('tap', 'node', function (evt) {
    var ele = evt.target;
    if (ele.data('kind') === 'node') {
      var name = ele.data('name');
      if (expanded.has(name)) collapse(name); else expand(name);
      showElement(cy.getElementById('node:' + name));
      return;
    }
    if (ele.data('kind') === 'svcns') { toggleServices(ele.data('ns')); showElement(ele); return; }
    if (ele.data('kind') === 'service' && G.collapsed) {
      picked = ele.id();
      cy.batch(rebuildDerived);
    }
    showElement(ele);
  });

  // ---- flows table, filter
  function renderFlows() {
    var panel = document.getElementById('flows-panel');
    if (!G.flows.length) return;
    panel.hidden = false;
    var q = document.getElementById('flow-filter').value.toLowerCase();
    var body = document.querySelector('#flow-table tbody');
    var shown = 0, limit = 2000, html = '';
    G.flows.forEach(function (f) {
      var text = (f.verdict + ' ' + f.reason + ' ' + f.source + ' ' + f.destination + ' ' + f.service + ' ' + f.summary).toLowerCase();
      if (q && text.indexOf(q) < 0) return;
      shown += 1;
      if (shown > limit) return;
      html += '<tr data-flow="' + f.id + '" data-verdict="' + f.verdict + '"><td>' + (f.frame === null ? f.id : f.frame) +
        '</td><td class="v-' + f.verdict + '">' + f.verdict + (f.reason ? '<br>' + esc(f.reason) : '') +
        '</td><td>' + esc(f.source) + '</td><td>' + esc(f.destination) + (f.service ? '<br>svc ' + esc(f.service) : '') +
        '</td><td>' + esc(f.summary) + '</td></tr>';
    });
    body.innerHTML = html;
    document.getElementById('flow-count').textContent = '(' + shown + ' of ' + G.flows.length +
      (shown > limit ? ', first ' + limit + ' listed' : '') + ')';
  }
  document.getElementById('flow-filter').addEventListener('input', renderFlows);
  document.querySelector('#flow-table tbody').addEventListener('click', function (e) {
    var tr = e.target.closest('tr');
    if (tr) showFlow(G.flows[Number(tr.dataset.flow)]);
  });

  // ---- inventory (small clusters: a list in the page; large ones: the canvas alone)
  function renderInventory() {
    var ul = document.getElementById('inventory');
    var items = [];
    G.nodes.forEach(function (n) {
      items.push(['node:' + n.name, 'node ' + n.name]);
      n.namespaces.forEach(function (ns) { ns.pods.forEach(function (p) { items.push([p.id, 'pod ' + p.id.slice(4)]); }); });
    });
    G.services.forEach(function (s) { items.push([s.id, 'service ' + s.id.slice(4)]); });
    if (items.length > 1500) {
      ul.outerHTML = '<p id="inventory">' + G.nodes.length + ' nodes: click one to expand it.</p>';
      return;
    }
    ul.innerHTML = items.map(function (it) {
      return '<li data-id="' + esc(it[0]) + '">' + esc(it[1]) + '</li>';
    }).join('');
    ul.addEventListener('click', function (e) {
      var li = e.target.closest('li');
      if (!li) return;
      var id = li.dataset.id;
      if (owner[id] !== undefined) expand(owner[id]);
      if (groupServices && id.indexOf('svc:') === 0 && visible(id) !== id) toggleServices(id.slice(4, id.indexOf('/')));
      var ele = cy.getElementById(visible(id));
      cy.elements().unselect(); ele.select(); showElement(ele);
      cy.animate({ center: { eles: ele } }, { duration: 200 });
    });
  }

  document.getElementById('title').textContent = G.title;
  document.getElementById('expand-all').onclick = function () {
    G.nodes.forEach(function (n) { expand(n.name, false); });
    afterToggle(null); if (G.collapsed) layoutAll();
  };
  document.getElementById('collapse-all').onclick = function () {
    cy.batch(function () { expanded.forEach(function (n) { cy.getElementById('node:' + n).descendants().remove(); }); });
    expanded.clear(); afterToggle(null); if (G.collapsed) layoutAll();
  };
  document.getElementById('clear').onclick = clearHighlight;

  window.kemu = { graph: G, expand: expand, collapse: collapse, showFlow: showFlow,
    highlighted: function () { return cy.elements('.hop').map(function (e) { return e.id(); }); },
    steps: function () {  // the highlighted path: [from, to, hop number] in order
      return cy.edges('.hop-step').map(function (e) { return [e.source().id(), e.target().id(), Number(e.data('label'))]; })
        .sort(function (a, b) { return a[2] - b[2]; });
    },
    visible: visible, readyMs: null };
  cy.batch(function () {
    cy.add(baseElements());
    if (!G.collapsed) G.nodes.forEach(function (n) { expanded.add(n.name); cy.add(childElements(n)); });
    cy.add(derivedEdges());
  });
  window.kemu.timing = { script: Math.round(t0), added: Math.round(performance.now() - t0) };
  layoutAll(function () {
    if (G.collapsed) fitOverview(); else cy.fit(undefined, 20);
    var ms = Math.round(performance.now() - t0);
    window.kemu.timing.laidOut = ms;
    // ready once the first frame is drawn: the figure a user waits for
    requestAnimationFrame(function () {
      setTimeout(function () {
        window.kemu.readyMs = window.kemu.timing.painted = Math.round(performance.now());
        document.getElementById('status').textContent = cy.nodes().length + ' elements drawn, page ready in ' +
          window.kemu.readyMs + ' ms';
        document.body.dataset.ready = '1';
      }, 0);
    });
    if (G.trace && G.flows.length) showFlow(G.flows[0]);
  });
  renderFlows();
  renderInventory();
})();
