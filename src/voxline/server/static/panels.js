// The playground's side panels, kept apart from the call logic in app.js: the microphone level
// meter, microphone and speaker choice, the agent picker, per-answer latency, the events feed
// and transcript export. Everything is built from what the call socket already says (events in
// docs/browser.md) and from GET /web/agents; nothing is fetched from anywhere else.
"use strict";

window.VoxlinePanels = (() => {
  const $ = (id) => document.getElementById(id);
  const MAX_EVENTS = 200; // the feed keeps the latest ones: a long call must not grow the page forever
  const STAGES = [
    ["end_of_turn_ms", "end of turn"],
    ["transcript_ms", "transcript"],
    ["llm_first_token_ms", "first token"],
    ["first_audio_ms", "first audio"],
  ];

  // -- microphone level: an AnalyserNode read on every animation frame --------------------
  function meter(ctx, source) {
    const analyser = ctx.createAnalyser();
    analyser.fftSize = 512;
    source.connect(analyser);
    const data = new Float32Array(analyser.fftSize);
    const bar = $("level-bar");
    let running = true;
    const draw = () => {
      if (!running) return;
      analyser.getFloatTimeDomainData(data);
      let sum = 0;
      for (const v of data) sum += v * v;
      const rms = Math.sqrt(sum / data.length);
      const level = Math.min(1, Math.max(0, (20 * Math.log10(rms + 1e-8) + 60) / 60)); // -60..0 dBFS
      bar.style.width = (level * 100).toFixed(1) + "%";
      bar.dataset.level = level.toFixed(3);
      requestAnimationFrame(draw);
    };
    requestAnimationFrame(draw);
    return () => { running = false; bar.style.width = "0%"; analyser.disconnect(); };
  }

  // -- devices: labels appear once the microphone is allowed, so this runs again then ------
  async function listDevices() {
    if (!navigator.mediaDevices?.enumerateDevices) return;
    const devices = await navigator.mediaDevices.enumerateDevices();
    fill($("mic-select"), devices.filter((d) => d.kind === "audioinput"), "Microphone");
    const speakers = devices.filter((d) => d.kind === "audiooutput");
    const canRoute = "setSinkId" in AudioContext.prototype;
    fill($("speaker-select"), canRoute ? speakers : [], canRoute ? "Speaker" : "Default speaker");
    $("speaker-select").disabled = !canRoute || speakers.length === 0;
  }

  function fill(select, devices, fallback) {
    const chosen = select.value;
    select.replaceChildren();
    if (devices.length === 0) select.append(new Option(fallback + " (default)", ""));
    devices.forEach((d, i) => select.append(new Option(d.label || `${fallback} ${i + 1}`, d.deviceId)));
    if ([...select.options].some((o) => o.value === chosen)) select.value = chosen;
  }

  // -- agents: GET /web/agents (hosted agents open to the browser) --------------------------
  async function listAgents(current) {
    const select = $("agent-select");
    try {
      const response = await fetch("/web/agents", { headers: { Accept: "application/json" } });
      if (!response.ok) throw new Error(String(response.status));
      const body = await response.json();
      select.replaceChildren(...body.agents.map((a) => new Option(a.name, a.name)));
      select.value = current || body.default;
      select.hidden = body.agents.length < 2;
    } catch (_) {
      select.hidden = true;
    }
    select.addEventListener("change", () => {
      location.href = "/?" + new URLSearchParams({ agent: select.value });
    });
  }

  // -- latency: one row per answer, spoken (server `metrics`) or typed (measured here) -----
  function latency(turnLabel, ms, source) {
    const table = $("latency-rows");
    const row = document.createElement("tr");
    row.className = "latency-row " + source;
    const cells = [turnLabel, ...STAGES.map(([key]) => ms[key]), ms.voice_to_voice_ms ?? ms.total_ms];
    for (const value of cells) {
      const cell = document.createElement("td");
      cell.textContent = typeof value === "number" ? Math.round(value) + " ms" : value ?? "–";
      row.append(cell);
    }
    table.prepend(row);
    $("latency-empty").hidden = true;
  }

  // -- events feed ---------------------------------------------------------------------------
  function summary(msg) {
    switch (msg.type) {
      case "state": return msg.state;
      case "tool": return `${msg.name} ${msg.status}` + (msg.arguments ? " " + msg.arguments : "") +
        (msg.result ? " → " + msg.result : "");
      case "error": return msg.message;
      case "metrics": return `voice to voice ${msg.voice_to_voice_ms ?? "?"} ms`;
      case "hello": return `${msg.agent}, conversation ${msg.conversation_id}` + (msg.resumed ? " (resumed)" : "");
      case "transcript": return `${msg.role}${msg.interrupted ? " (interrupted)" : ""}: ${msg.text}`;
      case "end": return msg.reason;
      case "interim": return msg.text;
      default: return "";
    }
  }

  function logEvent(msg) {
    if (msg.type === "bot_text") return; // token by token: the transcript shows it
    const list = $("events-list");
    const item = document.createElement("li");
    item.className = "event " + msg.type;
    const time = document.createElement("time");
    time.textContent = new Date().toLocaleTimeString([], { hour12: false });
    const kind = document.createElement("b");
    kind.textContent = msg.type;
    const text = document.createElement("span");
    text.textContent = summary(msg);
    item.append(time, kind, text);
    list.prepend(item);
    while (list.children.length > MAX_EVENTS) list.lastChild.remove();
  }

  // -- export: the transcript as shown (heard and unheard text told apart) ------------------
  function turns() {
    return [...document.querySelectorAll("#transcript .turn:not(.interim)")].map((node) => {
      const heard = node.querySelector(".heard")?.textContent ?? node.querySelector(".text").textContent;
      const unheard = node.querySelector(".unheard")?.textContent || "";
      const role = node.classList.contains("user") ? "user" : node.classList.contains("tool") ? "tool" : "bot";
      return { role, text: heard, ...(unheard ? { unheard, interrupted: true } : {}),
        ...(node.classList.contains("interrupted") ? { interrupted: true } : {}),
        ...(node.dataset.latency ? { latency: node.dataset.latency } : {}) };
    });
  }

  function download(name, type, body) {
    const link = document.createElement("a");
    link.href = URL.createObjectURL(new Blob([body], { type }));
    link.download = name;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 1000);
  }

  function setUpExport(conversation) {
    $("export-text").addEventListener("click", () => {
      const lines = turns().map((t) => `${t.role}: ${t.text}` + (t.unheard ? ` [not heard: ${t.unheard}]` : ""));
      download(`conversation-${conversation() || "new"}.txt`, "text/plain", lines.join("\n") + "\n");
    });
    $("export-json").addEventListener("click", () => {
      const body = { conversation_id: conversation(), exported_at: new Date().toISOString(), turns: turns() };
      download(`conversation-${conversation() || "new"}.json`, "application/json", JSON.stringify(body, null, 2));
    });
  }

  return { meter, listDevices, listAgents, latency, logEvent, setUpExport, turns };
})();
