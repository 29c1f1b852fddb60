// The voxline talk page: one call carrying microphone audio up and the agent's audio and events
// down, over WebRTC where the browser and server have it (rtc.js: Opus on media tracks, events
// on a data channel) and otherwise over a WebSocket (/web/call: PCM frames and JSON events).
// `?transport=ws` forces the socket, `?transport=webrtc` forbids falling back to it. The wire
// protocol and the events are in docs/browser.md; both transports carry the same events.
//
// A link from POST /api/web/tokens carries a session token in its fragment (#token=...), which
// browsers never send to a server. The page takes it out of the address bar, keeps it in this
// tab's sessionStorage, and offers it to the socket as a subprotocol (never in the socket's
// URL, which ends up in access logs). The server answers a call that started a conversation
// with a token bound to that conversation, which a reload uses to resume it.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const panels = window.VoxlinePanels;
  const ui = {
    talk: $("talk"),
    hangup: $("hangup"),
    compose: $("compose"),
    message: $("message"),
    transcript: $("transcript"),
    hint: $("hint"),
    state: $("state"),
    stateLabel: $("state-label"),
    notice: $("notice"),
    fresh: $("new-conversation"),
  };
  const params = new URLSearchParams(location.search);
  const agent = params.get("agent");
  let agentName = $("agent-name").textContent;
  let conversationId = params.get("conversation");
  let call = null;
  const transport = params.get("transport"); // "ws", "webrtc", or the best available

  // -- session tokens ----------------------------------------------------------------------
  const PROTOCOL = "voxline";
  const TOKEN_PROTOCOL = "voxline.token.";
  const linkKey = "voxline.link." + (agent || "");
  const kept = new Map(); // when sessionStorage is unavailable (some private modes)

  function recall(key) {
    try { return sessionStorage.getItem(key) ?? kept.get(key) ?? null; } catch (_) { return kept.get(key) ?? null; }
  }

  function remember(key, value) {
    kept.set(key, value);
    try { sessionStorage.setItem(key, value); } catch (_) { /* kept in memory only */ }
  }

  const fragment = new URLSearchParams(location.hash.slice(1));
  const given = fragment.get("token") || params.get("token");
  // A subprotocol may hold only these characters; anything else is a damaged link.
  const TOKEN_CHARS = /^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/;
  if (given && !TOKEN_CHARS.test(given)) notify("This link's token is damaged: ask for a new link.");
  if (given) {
    if (TOKEN_CHARS.test(given)) remember(linkKey, given);
    params.delete("token"); // out of the address bar, bookmarks and shared screenshots
    const rest = params.toString();
    history.replaceState(null, "", "/" + (rest ? "?" + rest : ""));
  }

  function tokenFor(conversation) {
    return (conversation && recall("voxline.conversation." + conversation)) || recall(linkKey);
  }

  if (agent) ui.fresh.href = "/?" + new URLSearchParams({ agent });

  // -- bot audio: frames scheduled back to back on the AudioContext clock ------------------
  class Player {
    constructor(ctx, rate, onPlayed) {
      this.ctx = ctx;
      this.rate = rate;
      this.onPlayed = onPlayed;
      this.next = 0; // context time at which the next frame starts
      this.sources = new Set();
      this.marks = []; // {end: context time, position: timeline position to confirm}
    }

    // One binary message: float64 end position, then PCM16 samples.
    play(message) {
      const position = new DataView(message).getFloat64(0, true);
      const pcm = new Int16Array(message, 8);
      if (pcm.length === 0) return;
      const buffer = this.ctx.createBuffer(1, pcm.length, this.rate);
      const samples = buffer.getChannelData(0);
      for (let i = 0; i < pcm.length; i++) samples[i] = pcm[i] / 32768;
      const now = this.ctx.currentTime;
      if (this.next < now + 0.01) this.next = now + 0.04; // first frame or an underrun
      const source = this.ctx.createBufferSource();
      source.buffer = buffer;
      source.connect(this.ctx.destination);
      source.onended = () => this.sources.delete(source);
      source.start(this.next);
      this.sources.add(source);
      this.next += buffer.duration;
      this.marks.push({ end: this.next, position });
    }

    get playing() {
      return this.sources.size > 0 && this.ctx.currentTime < this.next;
    }

    // Tell the server how far playback has really got (what the user has heard).
    confirm() {
      const now = this.ctx.currentTime;
      let position = null;
      while (this.marks.length && this.marks[0].end <= now) position = this.marks.shift().position;
      if (position !== null) this.onPlayed(position);
    }

    clear() {
      for (const source of this.sources) {
        try { source.stop(); } catch (_) { /* already stopped */ }
      }
      this.sources.clear();
      this.marks = [];
      this.next = 0;
    }
  }

  // Over WebRTC the browser plays the server's track itself: the server paces it, confirms what
  // it sent and drops its queue on a barge-in, so there is nothing to schedule or clear here.
  class StreamPlayer {
    constructor(current) { this.current = current; }
    play() {}
    get playing() { return this.current.state === "speaking"; }
    confirm() {}
    clear() {}
  }

  // -- the transcript ----------------------------------------------------------------------
  function entry(id, role) {
    let node = document.getElementById(id);
    if (!node) {
      node = document.createElement("div");
      node.id = id;
      node.className = "turn " + role;
      const who = document.createElement("span");
      who.className = "who";
      who.textContent = role === "user" ? "You" : role === "tool" ? "Tool" : agentName;
      const text = document.createElement("p");
      text.className = "text";
      node.append(who, text);
      ui.transcript.append(node);
      ui.hint.hidden = true;
    }
    return node;
  }

  function scrollDown() {
    ui.transcript.scrollTop = ui.transcript.scrollHeight;
  }

  // An interrupted answer is shown whole: what was heard, then the rest struck out. The
  // server sends `full_text` (all the model wrote) while the call lasts; without it (an older
  // server) the text streamed into the node stands in for it.
  function showTranscript(msg) {
    const id = "turn-" + msg.turn_id;
    if (msg.role === "user") document.getElementById("interim")?.remove();
    const existing = document.getElementById(id);
    const streamed = existing ? existing.querySelector(".text").textContent : "";
    const full = msg.full_text || (streamed.startsWith(msg.text) ? streamed : "");
    if (msg.role === "bot" && !msg.text && !full) {
      existing?.remove();
      return;
    }
    const node = entry(id, msg.role);
    const text = node.querySelector(".text");
    if (msg.interrupted && full.length > msg.text.length) {
      const heard = document.createElement("span");
      heard.className = "heard";
      heard.textContent = msg.text;
      const unheard = document.createElement("s");
      unheard.className = "unheard";
      unheard.title = "not heard: the answer was interrupted";
      unheard.textContent = full.slice(msg.text.length);
      text.replaceChildren(heard, unheard);
    } else {
      text.textContent = msg.text;
    }
    node.classList.toggle("interrupted", Boolean(msg.interrupted));
    node.classList.remove("streaming");
    scrollDown();
  }

  // The pending user bubble: the words heard so far (`interim`, while the caller speaks), or
  // "…" once the server is transcribing a turn it has no words for yet.
  function showInterim(text) {
    const node = entry("interim", "user");
    node.classList.add("interim");
    const shown = node.querySelector(".text");
    if (text) shown.textContent = text;
    else if (!shown.textContent) shown.textContent = "…";
    scrollDown();
  }

  function showDelta(msg) {
    const node = entry("turn-" + msg.turn_id, "bot");
    node.classList.add("streaming");
    node.querySelector(".text").textContent += msg.delta;
    scrollDown();
  }

  function showTool(msg) {
    const node = entry("call-" + msg.call_id, "tool");
    const text = node.querySelector(".text");
    if (msg.status === "started") {
      node.dataset.call = `${msg.name}(${msg.arguments})`;
      text.textContent = node.dataset.call;
    } else {
      const outcome = {
        finished: "→ " + msg.result,
        error: "→ failed: " + msg.result,
        pending_approval: "→ waiting for a person to approve",
      }[msg.status] || msg.status;
      text.textContent = `${node.dataset.call || msg.name} ${outcome}`;
      node.classList.toggle("failed", msg.status === "error");
    }
    scrollDown();
  }

  function showMetrics(msg) {
    panels.latency("spoken", msg, "spoken");
    const node = msg.turn_id && document.getElementById("turn-" + msg.turn_id);
    if (!node || msg.voice_to_voice_ms == null) return;
    node.dataset.latency = `answered in ${msg.voice_to_voice_ms} ms`;
  }

  // A typed turn has no server metrics (no speech to time): the page times it from sending
  // to the first token and the first audio frame of the answer.
  function typedMark(current, stage) {
    const typed = current.typed;
    if (!typed || typed[stage] != null) return;
    typed[stage] = performance.now() - typed.sent;
    if (stage === "first_audio_ms") finishTyped(current);
  }

  function finishTyped(current) {
    const typed = current.typed;
    if (!typed || typed.llm_first_token_ms == null) return; // not answered yet (a tool is running)
    current.typed = null;
    const ms = { llm_first_token_ms: typed.llm_first_token_ms, first_audio_ms: typed.first_audio_ms,
      total_ms: typed.first_audio_ms ?? typed.llm_first_token_ms };
    panels.latency("typed", ms, "typed");
  }

  // -- the state indicator -----------------------------------------------------------------
  const THINKING = new Set(["transcribing", "thinking", "speaking"]);

  function indicate() {
    let kind = "offline";
    let label = "Not connected";
    if (call && !call.ready) {
      kind = "connecting";
      label = "Connecting…";
    } else if (call) {
      if (call.player.playing) {
        kind = "speaking";
        label = "Speaking";
      } else if (call.state === "calling_tools") {
        kind = "thinking";
        label = "Using a tool…";
      } else if (THINKING.has(call.state)) {
        kind = "thinking";
        label = "Thinking…";
      } else {
        kind = "listening";
        label = call.mic && !call.muted ? "Listening" : "Your turn";
      }
    }
    if (ui.stateLabel.textContent !== label) {
      ui.state.className = "state " + kind;
      ui.stateLabel.textContent = label;
    }
  }

  function notify(text) {
    ui.notice.textContent = text;
    ui.notice.hidden = !text;
  }

  function updateButtons() {
    ui.hangup.disabled = !call;
    if (!call || !call.mic) ui.talk.textContent = "Start talking";
    else ui.talk.textContent = call.muted ? "Unmute microphone" : "Mute microphone";
    ui.talk.classList.toggle("live", Boolean(call && call.mic && !call.muted));
  }

  // -- the call ----------------------------------------------------------------------------
  function handle(call, msg) {
    panels.logEvent(msg);
    switch (msg.type) {
      case "hello":
        conversationId = msg.conversation_id;
        if (msg.agent && msg.agent !== agentName) agentName = $("agent-name").textContent = msg.agent;
        history.replaceState(null, "", "/?" + new URLSearchParams(
          agent ? { agent, conversation: conversationId } : { conversation: conversationId }));
        call.player = call.link?.kind === "ws"
          ? new Player(call.ctx, msg.output_rate, (position) => send(call, JSON.stringify({ type: "played", position })))
          : new StreamPlayer(call);
        call.ticker = setInterval(() => { call.player.confirm(); indicate(); }, 50);
        for (const node of ui.transcript.querySelectorAll(".turn")) node.remove();
        call.ready = true;
        call.resolveReady();
        break;
      case "transcript": showTranscript(msg); break;
      case "bot_text": typedMark(call, "llm_first_token_ms"); showDelta(msg); break;
      case "tool": showTool(msg); break;
      case "interim": showInterim(msg.text); break;
      case "end": call.ended = msg.reason; break;
      case "state":
        call.state = msg.state;
        if (msg.state === "speaking" && call.link?.kind !== "ws") typedMark(call, "first_audio_ms");
        if (msg.state === "transcribing") showInterim();
        else if (msg.state === "listening") { document.getElementById("interim")?.remove(); finishTyped(call); }
        break;
      case "clear": call.player?.clear(); break;
      case "metrics": showMetrics(msg); break;
      case "error": notify(call.ready ? msg.message : "The call was refused: " + msg.message); break;
      case "token": remember("voxline.conversation." + msg.conversation_id, msg.token); break;
      default: break; // newer servers may send more
    }
    indicate();
  }

  // Why the socket closed, in words (the server's close reason says what to do about it).
  function closeMessage(event, started) {
    const reason = event.reason ? ": " + event.reason : "";
    if (!started && event.code === 1006) {
      return "Could not reach the call: the server is down, or it refused this page.";
    }
    if (event.code === 1008) return (started ? "The call was ended" : "The call was refused") + reason + ".";
    if (event.code === 1013) return "The server cannot take this call right now" + reason + ".";
    return `The call ended (${event.code}${reason}).`;
  }

  function send(call, data) {
    call.link?.send(data);
  }

  // The link is the transport: {kind, send(text), close()}, and over WebRTC useMicrophone(track).
  function linked(current, link) {
    current.link = link;
    if (current.mic && link.useMicrophone) link.useMicrophone(current.mic.stream.getAudioTracks()[0]);
    document.body.dataset.transport = link.kind;
    $("transport-name").textContent = link.kind === "ws" ? "WebSocket" : "WebRTC";
  }

  function openSocket(current) {
    const query = { output_rate: String(current.ctx.sampleRate) };
    if (agent) query.agent = agent;
    if (conversationId) query.conversation = conversationId;
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const token = tokenFor(conversationId);
    const protocols = token ? [PROTOCOL, TOKEN_PROTOCOL + token] : [PROTOCOL];
    const ws = new WebSocket(`${scheme}://${location.host}/web/call?${new URLSearchParams(query)}`, protocols);
    ws.binaryType = "arraybuffer";
    linked(current, {
      kind: "ws",
      send(data) { if (ws.readyState === WebSocket.OPEN) ws.send(data); },
      close() { if (ws.readyState <= WebSocket.OPEN) ws.close(1000); },
    });
    ws.onmessage = (event) => {
      if (typeof event.data === "string") handle(current, JSON.parse(event.data));
      else { typedMark(current, "first_audio_ms"); current.player?.play(event.data); }
    };
    ws.onclose = (event) => {
      if (call === current) {
        if (!ui.notice.textContent) notify(closeMessage(event, current.ready));
        hangUp();
      }
    };
  }

  async function openRtc(current) {
    try {
      const link = await window.VoxlineRtc.open({
        agent,
        conversation: conversationId,
        token: tokenFor(conversationId),
        audio: $("bot-audio"),
        onMessage: (msg) => { if (call === current) handle(current, msg); },
        onClose: (reason) => {
          if (call !== current) return;
          if (!ui.notice.textContent) {
            const why = current.ended || reason;
            notify(why ? `The call ended: ${why}.` : "The call ended.");
          }
          hangUp();
        },
      });
      if (call !== current) { link.close(); return; }
      linked(current, link);
    } catch (error) {
      if (call !== current) return;
      if (error.fallback && transport !== "webrtc") {
        console.info("voxline: WebRTC unavailable, using the WebSocket:", error.message);
        openSocket(current);
        return;
      }
      const refused = error.status === 429 ? "The server cannot take this call right now: " : "The call was refused: ";
      notify(error.status ? refused + error.message : error.message);
      hangUp();
    }
  }

  function connect() {
    const ctx = new AudioContext({ latencyHint: "interactive" });
    const current = { link: null, ctx, ready: false, state: "idle", player: null, mic: null, muted: false };
    current.whenReady = new Promise((resolve) => { current.resolveReady = resolve; });
    call = current;
    if (transport !== "ws" && window.VoxlineRtc?.supported()) openRtc(current);
    else openSocket(current);
    if ($("speaker-select").value) routeSpeaker(current);
    notify("");
    updateButtons();
    indicate();
    return current;
  }

  function hangUp() {
    const current = call;
    if (!current) return;
    call = null;
    clearInterval(current.ticker);
    current.player?.clear();
    closeMicrophone(current);
    current.link?.close();
    $("bot-audio").srcObject = null;
    current.ctx.close();
    updateButtons();
    indicate();
  }

  async function openMicrophone(current) {
    if (!navigator.mediaDevices?.getUserMedia) {
      throw new Error("This page needs a secure context for the microphone: open it as http://localhost or over https.");
    }
    const chosen = $("mic-select").value;
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true,
        ...(chosen ? { deviceId: { exact: chosen } } : {}) },
    });
    await current.ctx.audioWorklet.addModule("/web/static/mic-worklet.js");
    const node = new AudioWorkletNode(current.ctx, "voxline-mic", {
      numberOfInputs: 1,
      numberOfOutputs: 0,
      processorOptions: { targetRate: 16000, frameSamples: 320 },
    });
    // Over the socket the worklet's PCM frames are the microphone; over WebRTC the track is.
    node.port.onmessage = (event) => { if (current.link?.kind === "ws") send(current, event.data); };
    current.link?.useMicrophone?.(stream.getAudioTracks()[0]);
    const source = current.ctx.createMediaStreamSource(stream);
    source.connect(node);
    const stopMeter = panels.meter(current.ctx, source);
    panels.listDevices(); // labels are readable now that the microphone is allowed
    return { stream, node, stopMeter };
  }

  function closeMicrophone(current) {
    current.mic?.stream.getTracks().forEach((track) => track.stop());
    current.mic?.node.disconnect();
    current.mic?.stopMeter();
    current.mic = null;
  }

  async function routeSpeaker(current) {
    const sink = $("speaker-select").value;
    try {
      if (current && "setSinkId" in current.ctx) await current.ctx.setSinkId(sink);
      const audio = $("bot-audio"); // the WebRTC track plays here
      if ("setSinkId" in audio) await audio.setSinkId(sink);
    } catch (error) {
      notify("Could not use that speaker: " + error.message);
    }
  }

  ui.talk.addEventListener("click", async () => {
    if (call && call.mic) {
      call.muted = !call.muted;
      call.mic.stream.getAudioTracks().forEach((track) => { track.enabled = !call.muted; });
      updateButtons();
      indicate();
      return;
    }
    const current = call || connect();
    try {
      await current.ctx.resume();
      const mic = await openMicrophone(current);
      if (call !== current) { mic.stream.getTracks().forEach((track) => track.stop()); return; }
      current.mic = mic;
    } catch (error) {
      notify(error.name === "NotAllowedError"
        ? "The microphone is blocked: allow it for this page, or type instead."
        : String(error.message || error));
    }
    updateButtons();
    indicate();
  });

  ui.hangup.addEventListener("click", () => {
    notify("");
    hangUp();
  });

  ui.compose.addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = ui.message.value.trim();
    if (!text) return;
    ui.message.value = "";
    const current = call || connect();
    current.ctx.resume();
    await current.whenReady;
    current.typed = { sent: performance.now() };
    send(current, JSON.stringify({ type: "text", text }));
  });

  $("mic-select").addEventListener("change", async () => {
    if (!call || !call.mic) return; // the choice applies when the microphone opens
    const current = call;
    const muted = current.muted;
    closeMicrophone(current);
    try {
      current.mic = await openMicrophone(current);
      current.mic.stream.getAudioTracks().forEach((track) => { track.enabled = !muted; });
    } catch (error) {
      notify(String(error.message || error));
    }
    updateButtons();
  });
  $("speaker-select").addEventListener("change", () => routeSpeaker(call));
  panels.listDevices();
  panels.listAgents(agent);
  panels.setUpExport(() => conversationId);

  addEventListener("pagehide", hangUp);
})();
