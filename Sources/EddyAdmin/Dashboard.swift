/// The dashboard a node's admin port serves at `/`: one self-contained page (no CDN, no external file: clusters
/// without internet access show it as well) that polls the node's own admin API once a second (`/ring`,
/// `/cluster`, `/whatif`, `/queues`) and draws the ring, every member's figures and their history, and the
/// what-if miss-ratio curves; its stream viewer follows a stream through the node's HTTP gateway (`/gateway`
/// says where) with an EventSource and resumes after a reload from the last event it showed (kept in the
/// browser's localStorage). docs/operations.md, "Dashboard", says what each panel shows.
enum Dashboard {
    static let html = #"""
        <!doctype html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <title>Eddy node dashboard</title>
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <style>
          :root { --bg: #f7f7f5; --fg: #1d2025; --muted: #6b7075; --line: #dcdcd8; --card: #ffffff; }
          * { box-sizing: border-box; }
          body { margin: 0; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; background: var(--bg); color: var(--fg); }
          header { display: flex; gap: 24px; align-items: baseline; padding: 14px 20px; border-bottom: 1px solid var(--line); background: var(--card); }
          header h1 { font-size: 18px; margin: 0; }
          header .meta { color: var(--muted); }
          main { display: grid; grid-template-columns: repeat(auto-fit, minmax(540px, 1fr)); gap: 16px; padding: 16px 20px; }
          section { background: var(--card); border: 1px solid var(--line); border-radius: 6px; padding: 12px 14px; min-width: 0; }
          section.wide { grid-column: 1 / -1; }
          h2 { font-size: 14px; margin: 0 0 8px; text-transform: uppercase; letter-spacing: .04em; color: var(--muted); }
          table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
          th, td { text-align: right; padding: 4px 8px; border-bottom: 1px solid var(--line); white-space: nowrap; }
          th:first-child, td:first-child { text-align: left; }
          th { color: var(--muted); font-weight: 600; }
          .up { color: #1a7f37; } .down { color: #c62828; }
          .best { font-weight: 700; }
          canvas { width: 100%; height: 220px; display: block; }
          .legend { display: flex; flex-wrap: wrap; gap: 4px 14px; margin-top: 6px; color: var(--muted); font-size: 12px; }
          .legend i { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 4px; vertical-align: -1px; }
          .note { color: var(--muted); font-size: 12px; margin-top: 6px; }
          #status.error, #viewer-status.error { color: #c62828; }
          .controls { display: flex; gap: 10px; align-items: center; margin-bottom: 8px; }
          #viewer-events td { text-align: left; white-space: normal; word-break: break-all; }
          #viewer-events td.pointer { white-space: nowrap; font-family: ui-monospace, monospace; font-size: 12px; }
        </style>
        </head>
        <body data-samples="0">
        <header>
          <h1>Eddy</h1>
          <span class="meta">node <b id="node">…</b></span>
          <span class="meta">ring epoch <b id="epoch">…</b></span>
          <span class="meta">members <b id="member-count">…</b></span>
          <span class="meta" id="status">connecting…</span>
        </header>
        <main>
          <section class="wide">
            <h2>Ring and members</h2>
            <table id="members">
              <thead><tr><th>member</th><th>state</th><th>segments</th><th>hit ratio</th><th>served MB/s</th><th>reads/s</th>
                <th>store reads per block</th><th>tail waiters</th><th>queue depth</th><th>dead letters</th><th>flush lag</th><th>cached blocks</th></tr></thead>
              <tbody></tbody>
            </table>
          </section>
          <section>
            <h2>Hit ratio over time</h2>
            <canvas id="chart-hits"></canvas>
            <div class="legend" id="legend-hits"></div>
          </section>
          <section>
            <h2>Throughput over time (MB/s served)</h2>
            <canvas id="chart-throughput"></canvas>
            <div class="legend" id="legend-throughput"></div>
          </section>
          <section>
            <h2>What-if: miss ratio by cache size</h2>
            <canvas id="chart-whatif"></canvas>
            <div class="legend" id="legend-whatif"></div>
            <div class="note" id="whatif-note"></div>
          </section>
          <section>
            <h2>What-if table (hit ratio; best per size in bold)</h2>
            <table id="whatif"><thead></thead><tbody></tbody></table>
          </section>
          <section class="wide">
            <h2>Write-back queue (this node)</h2>
            <table id="queues">
              <thead><tr><th>queue</th><th>class</th><th>ready</th><th>delayed</th><th>leased</th><th>oldest</th></tr></thead>
              <tbody></tbody>
            </table>
            <div class="note" id="queue-note"></div>
          </section>
          <section class="wide">
            <h2>Stream viewer</h2>
            <div class="controls">
              <select id="viewer-stream"><option value="">choose a stream…</option></select>
              <button id="viewer-from-start" type="button">from the start</button>
              <span class="note" id="viewer-status">…</span>
            </div>
            <table id="viewer-events">
              <thead><tr><th>pointer</th><th>time</th><th>key</th><th>payload</th></tr></thead>
              <tbody></tbody>
            </table>
          </section>
        </main>
        <script>
        "use strict";
        const colors = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                        "#bcbd22", "#17becf", "#393b79", "#637939"];
        const keep = 300;                 // samples of history per member (5 minutes at 1 Hz)
        const history = {};               // member -> [{t, hit, mbps}]
        const last = {};                  // member -> previous stats and time, for rates
        let samples = 0;
        const $ = (id) => document.getElementById(id);

        // With authentication on, open the page as http://HOST:PORT/#token=TOKEN: the fragment never leaves the
        // browser, and the page sends the token with each of its requests (the stream viewer's too).
        const fragment = new URLSearchParams(location.hash.slice(1));
        const token = fragment.get("token");
        async function get(path) {
          const headers = token ? { "Authorization": "Bearer " + token } : {};
          const r = await fetch(path, { cache: "no-store", headers });
          const body = await r.json();
          if (!r.ok) throw new Error(body.error ? body.error.message : path + " answered " + r.status);
          return body;
        }
        function fmt(x, digits) { return x === undefined || x === null || Number.isNaN(x) ? "–" : x.toFixed(digits); }
        function bytes(n) {
          if (n === undefined) return "–";
          const units = ["B", "KiB", "MiB", "GiB", "TiB"];
          let i = 0;
          while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
          return (i === 0 ? n.toFixed(0) : n.toFixed(1)) + " " + units[i];
        }
        function cell(text, cls, id) {
          const td = document.createElement("td");
          td.textContent = text;
          if (cls) td.className = cls;
          if (id) td.id = id;
          return td;
        }

        function renderRing(ring) {
          $("node").textContent = ring.node;
          $("epoch").textContent = ring.epoch;
          $("member-count").textContent = ring.members.length + " of " + ring.configured_members.length + " alive";
        }

        function renderMembers(ring, cluster, now) {
          const body = $("members").tBodies[0];
          body.replaceChildren();
          ring.configured_members.forEach((m, i) => {
            const s = cluster.members[m] || { error: "no answer" };
            const alive = ring.members.includes(m) && !s.error;
            const prev = last[m];
            let mbps, rps;
            if (prev && !s.error && !prev.stats.error) {
              const dt = (now - prev.t) / 1000;
              mbps = (s.bytes_served - prev.stats.bytes_served) / dt / 1e6;
              rps = (s.reads - prev.stats.reads) / dt;
            }
            last[m] = { t: now, stats: s };
            if (!s.error) {
              const h = history[m] || (history[m] = []);
              h.push({ t: now, hit: s.hit_ratio, mbps: mbps });
              if (h.length > keep) h.shift();
            }
            const tr = document.createElement("tr");
            tr.dataset.member = m;
            tr.append(cell(m), cell(alive ? "up" : "down" + (s.error ? ": " + s.error : ""), alive ? "up" : "down"),
              cell(ring.segments_owned[m] ?? 0), cell(fmt(s.hit_ratio, 3), "", "hit-ratio-" + i),
              cell(fmt(mbps, 1), "", "throughput-" + i), cell(fmt(rps, 0), "", "reads-" + i),
              cell(fmt(s.store_reads_per_block, 3), "", "amplification-" + i), cell(s.tail_waiters ?? "–"),
              cell(s.queue_depth ?? "–"), cell(s.dead_letters ?? "–"),
              cell(s.flush_lag_bytes === undefined ? "–" : bytes(s.flush_lag_bytes)), cell(s.cached_blocks ?? "–"));
            body.append(tr);
          });
        }

        // The y axis of a chart: a top value at or above yMax of the form {1, 2, 4, 6, 8} x 10^k (unless opts fix
        // it), `count` + 1 evenly spaced ticks from yMin, each labelled with as few decimals as show it exactly, so
        // that the labels always differ (miss ratios near zero once gave five labels "0.00").
        function axisTicks(yMin, yMax, count) {
          let top = yMax;
          if (!(top > yMin)) top = yMin + 1;
          const span = top - yMin;
          const unit = Math.pow(10, Math.floor(Math.log10(span)));
          const nice = [1, 2, 4, 6, 8, 10].map((m) => m * unit).find((v) => v >= span * (1 - 1e-12));
          const values = [];
          for (let i = 0; i <= count; i++) values.push(yMin + nice * i / count);
          let digits = 0;
          const exact = (d) => values.every((v) => Math.abs(Number(v.toFixed(d)) - v) <= nice * 1e-9);
          while (digits < 12 && !exact(digits)) digits++;
          return { top: yMin + nice, values, labels: values.map((v) => v.toFixed(digits)) };
        }

        // A line chart on a canvas: series of [x, y] points, axes with a few ticks. The y labels are also kept in
        // the canvas's data-y-labels attribute (for tests: a canvas has no text in the page).
        function lineChart(canvas, series, opts) {
          const ratio = window.devicePixelRatio || 1;
          const w = canvas.clientWidth || 500, h = canvas.clientHeight || 220;
          canvas.width = w * ratio; canvas.height = h * ratio;
          const g = canvas.getContext("2d");
          g.scale(ratio, ratio);
          g.clearRect(0, 0, w, h);
          const pad = { l: 52, r: 10, t: 8, b: 24 };
          const xs = series.flatMap((s) => s.points.map((p) => p[0]));
          const ys = series.flatMap((s) => s.points.map((p) => p[1])).filter((y) => Number.isFinite(y));
          if (xs.length === 0) { g.fillStyle = "#6b7075"; g.fillText("waiting for data…", pad.l, h / 2); return; }
          const tx = opts.logX ? Math.log2 : (x) => x;
          let x0 = tx(Math.min(...xs)), x1 = tx(Math.max(...xs));
          if (x1 === x0) x1 = x0 + 1;
          const y0 = opts.yMin ?? 0;
          const axis = opts.yMax === undefined ? axisTicks(y0, Math.max(1e-9, ...ys) * 1.05, 4) : axisTicks(y0, opts.yMax, 4);
          const y1 = axis.top;
          const X = (x) => pad.l + (tx(x) - x0) / (x1 - x0) * (w - pad.l - pad.r);
          const Y = (y) => h - pad.b - (y - y0) / (y1 - y0) * (h - pad.t - pad.b);
          g.strokeStyle = "#dcdcd8"; g.fillStyle = "#6b7075"; g.font = "11px system-ui, sans-serif";
          axis.values.forEach((y, i) => {
            g.beginPath(); g.moveTo(pad.l, Y(y)); g.lineTo(w - pad.r, Y(y)); g.stroke();
            g.fillText(axis.labels[i], 4, Y(y) + 4);
          });
          canvas.dataset.yLabels = axis.labels.join(" ");
          const ticks = opts.xTicks || [];
          ticks.forEach((x, i) => {
            g.textAlign = i === 0 ? "left" : i === ticks.length - 1 ? "right" : "center";
            g.fillText(opts.xFormat(x), X(x), h - 6);
          });
          g.textAlign = "left";
          series.forEach((s) => {
            g.strokeStyle = s.color; g.lineWidth = 2; g.beginPath();
            let started = false;
            s.points.forEach(([x, y]) => {
              if (!Number.isFinite(y)) return;
              if (started) g.lineTo(X(x), Y(y)); else { g.moveTo(X(x), Y(y)); started = true; }
            });
            g.stroke();
          });
        }
        function legend(id, series) {
          const el = $(id);
          el.replaceChildren(...series.map((s) => {
            const span = document.createElement("span");
            const i = document.createElement("i");
            i.style.background = s.color;
            span.append(i, s.name);
            return span;
          }));
        }

        function renderHistory() {
          const members = Object.keys(history).sort();
          const t0 = Math.min(...members.map((m) => history[m][0].t));
          const ago = (t) => (t - t0) / 1000;
          const hits = members.map((m, i) => ({ name: m, color: colors[i % colors.length],
            points: history[m].map((p) => [ago(p.t), p.hit]) }));
          const thr = members.map((m, i) => ({ name: m, color: colors[i % colors.length],
            points: history[m].map((p) => [ago(p.t), p.mbps]) }));
          const span = Math.max(1, ...hits.flatMap((s) => s.points.map((p) => p[0])));
          const ticks = [0, span / 2, span];
          const secs = (x) => x.toFixed(0) + " s";
          lineChart($("chart-hits"), hits, { yMin: 0, yMax: 1, xTicks: ticks, xFormat: secs });
          lineChart($("chart-throughput"), thr, { yMin: 0, xTicks: ticks, xFormat: secs });
          legend("legend-hits", hits);
          legend("legend-throughput", thr);
        }

        function renderWhatIf(w) {
          const sizes = [...new Set(w.rows.map((r) => r.cache_bytes))].sort((a, b) => a - b);
          const policies = [...new Set(w.rows.map((r) => r.policy))];
          const ratio = {};
          w.rows.forEach((r) => { (ratio[r.policy] = ratio[r.policy] || {})[r.cache_bytes] = r.hit_ratio; });
          const series = policies.map((p, i) => ({ name: p, color: colors[i % colors.length],
            points: sizes.map((b) => [b, 1 - ratio[p][b]]) }));
          lineChart($("chart-whatif"), series, { yMin: 0, logX: true, xTicks: sizes, xFormat: bytes });
          legend("legend-whatif", series);
          $("whatif-note").textContent = "policy " + w.policy + ", owner cache " + bytes(w.cache_bytes) + "; sample rate " +
            w.sample_rate.toPrecision(3) + ", " + w.sampled_requests + " of " + w.requests + " block requests sampled";
          const table = $("whatif");
          const head = document.createElement("tr");
          head.append(cell("policy"), ...sizes.map((b) => cell(bytes(b))));
          table.tHead.replaceChildren(head);
          const best = sizes.map((b) => Math.max(...policies.map((p) => ratio[p][b])));
          table.tBodies[0].replaceChildren(...policies.map((p) => {
            const tr = document.createElement("tr");
            tr.dataset.policy = p;
            tr.append(cell(p + (p === w.policy.split(":")[0] ? " (in use)" : "")),
              ...sizes.map((b, i) => cell(ratio[p][b].toFixed(3), ratio[p][b] === best[i] ? "best" : "")));
            return tr;
          }));
        }

        function renderQueues(q) {
          const rows = (q.lanes || []).map((l) => {
            const tr = document.createElement("tr");
            tr.append(cell(l.queue), cell(l.qos), cell(l.ready), cell(l.delayed), cell(l.leased),
              cell(l.oldest_age_ms === undefined ? "–" : (l.oldest_age_ms / 1000).toFixed(1) + " s"));
            return tr;
          });
          $("queues").tBodies[0].replaceChildren(...rows);
          const dead = Object.entries(q.dead_letters || {}).map(([k, v]) => k + ": " + v).join(", ");
          $("queue-note").textContent = "dead letters: " + (dead || "none") + "; retries " + (q.retries ?? 0) +
            ", acked " + (q.acked ?? 0) + " since start";
        }

        async function tick() {
          const now = Date.now();
          try {
            const [ring, cluster] = await Promise.all([get("ring"), get("cluster")]);
            renderRing(ring);
            renderMembers(ring, cluster, now);
            renderHistory();
            $("status").textContent = "updated " + new Date(now).toLocaleTimeString();
            $("status").className = "";
          } catch (e) {
            $("status").textContent = "error: " + e.message;
            $("status").className = "error";
          }
          try { renderWhatIf(await get("whatif")); } catch (e) { $("whatif-note").textContent = e.message; }
          try { renderQueues(await get("queues")); } catch (e) { $("queue-note").textContent = e.message; }
          samples++;
          document.body.dataset.samples = samples;
        }
        // The stream viewer: the node's HTTP gateway (the admin port's /gateway says where) sends the chosen
        // stream's events as Server-Sent Events. The id of the last event shown is kept in localStorage per
        // stream, so after a reload the viewer resumes right after it. `#stream=SCOPE/NAME` in the address picks
        // a stream; `#viewer-close-after=N` closes the viewer after N events (tests).
        const viewer = { base: null, source: null, shown: 0, stream: null };
        const showAtMost = 200;
        const closeAfter = Number(fragment.get("viewer-close-after") || 0);
        function viewerStatus(text, error) {
          $("viewer-status").textContent = text;
          $("viewer-status").className = error ? "note error" : "note";
        }
        async function startViewer() {
          const select = $("viewer-stream");
          let g;
          try { g = await get("gateway"); } catch (e) { viewerStatus(e.message, true); return; }
          if (!g.enabled) {
            select.disabled = true; $("viewer-from-start").disabled = true;
            viewerStatus("this node has no HTTP gateway (eddy node --http-listen)");
            return;
          }
          const host = g.host === null ? location.hostname : (g.host.includes(":") ? "[" + g.host + "]" : g.host);
          viewer.base = g.scheme + "://" + host + ":" + g.port;
          let names;
          try {
            const r = await fetch(viewer.base + "/v1/streams",
              { cache: "no-store", headers: token ? { "Authorization": "Bearer " + token } : {} });
            const body = await r.json();
            if (!r.ok) throw new Error(body.message || "the gateway answered " + r.status);
            names = body.streams;
          } catch (e) { viewerStatus("gateway " + viewer.base + ": " + e.message, true); return; }
          select.append(...names.map((n) => { const o = document.createElement("option"); o.value = n; o.textContent = n; return o; }));
          select.onchange = () => { if (select.value) follow(select.value); };
          $("viewer-from-start").onclick = () => { if (viewer.stream) follow(viewer.stream, "start"); };
          const chosen = fragment.get("stream") || localStorage.getItem("eddy.viewer.stream");
          if (chosen && names.includes(chosen)) { select.value = chosen; follow(chosen); }
          else viewerStatus(names.length ? "choose a stream" : "no streams you may read");
        }
        function follow(stream, from) {
          if (viewer.source) viewer.source.close();
          viewer.stream = stream;
          viewer.shown = 0;
          $("viewer-events").tBodies[0].replaceChildren();
          localStorage.setItem("eddy.viewer.stream", stream);
          const start = from || localStorage.getItem("eddy.viewer.last:" + stream) || "tail";
          const query = new URLSearchParams({ from: start });
          if (token) query.set("access_token", token);
          const path = stream.split("/").map(encodeURIComponent).join("/");
          const source = new EventSource(viewer.base + "/v1/streams/" + path + "/events?" + query);
          viewer.source = source;
          document.body.dataset.viewerFrom = start;
          const label = start === "tail" ? "following the tail of " + stream : start === "start" ?
            stream + " from the start" : stream + ": resumed after " + start.split(",")[0];
          viewerStatus(label);
          source.onmessage = (e) => {
            const event = JSON.parse(e.data);
            localStorage.setItem("eddy.viewer.last:" + stream, e.lastEventId);
            const tr = document.createElement("tr");
            tr.dataset.pointer = event.pointer;
            tr.append(cell(event.pointer, "pointer"), cell(new Date(event.timestamp / 1000).toISOString()),
              cell(event.key ?? "–"), cell(event.payload ?? "base64: " + event.payload_base64));
            const rows = $("viewer-events").tBodies[0];
            rows.prepend(tr);
            while (rows.rows.length > showAtMost) rows.deleteRow(-1);
            viewer.shown++;
            document.body.dataset.viewerEvents = viewer.shown;
            if (closeAfter && viewer.shown >= closeAfter) {
              source.close();
              viewerStatus("closed after " + viewer.shown + " events");
            }
          };
          // A Server-Sent "error" event carries the gateway's error document; without data it is the connection.
          source.addEventListener("error", (e) => {
            if (e.data) {
              try { const d = JSON.parse(e.data); viewerStatus(d.error + ": " + d.message, true); }
              catch (_) { viewerStatus(e.data, true); }
            } else if (source.readyState === EventSource.CLOSED) {
              viewerStatus("the gateway refused " + stream + " (a wrong token, or the stream is gone)", true);
            } else {
              viewerStatus("reconnecting to " + stream + "…", true);
            }
          });
          source.onopen = () => viewerStatus(label);
        }
        startViewer();
        tick();
        setInterval(tick, 1000);
        </script>
        </body>
        </html>
        """#
}
