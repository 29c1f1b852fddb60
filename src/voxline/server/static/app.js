// The voxline talk page: one WebSocket call (/web/call) carrying microphone audio up and the
// agent's audio and events down. The wire protocol is in docs/browser.md.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
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
  const agentName = $("agent-name").textContent;
  let conversationId = params.get("conversation");
  let call = null;

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

  function showTranscript(msg) {
    const id = "turn-" + msg.turn_id;
    if (msg.role === "bot" && !msg.text) {
      document.getElementById(id)?.remove();
      return;
    }
    const node = entry(id, msg.role);
    node.querySelector(".text").textContent = msg.text;
    node.classList.toggle("interrupted", Boolean(msg.interrupted));
    node.classList.remove("streaming");
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
    const node = msg.turn_id && document.getElementById("turn-" + msg.turn_id);
    if (!node || msg.voice_to_voice_ms == null) return;
    node.dataset.latency = `answered in ${msg.voice_to_voice_ms} ms`;
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
    switch (msg.type) {
      case "hello":
        conversationId = msg.conversation_id;
        history.replaceState(null, "", "/?" + new URLSearchParams(
          agent ? { agent, conversation: conversationId } : { conversation: conversationId }));
        call.player = new Player(call.ctx, msg.output_rate, (position) =>
          send(call, JSON.stringify({ type: "played", position })));
        call.ticker = setInterval(() => { call.player.confirm(); indicate(); }, 50);
        for (const node of ui.transcript.querySelectorAll(".turn")) node.remove();
        call.ready = true;
        call.resolveReady();
        break;
      case "transcript": showTranscript(msg); break;
      case "bot_text": showDelta(msg); break;
      case "tool": showTool(msg); break;
      case "state": call.state = msg.state; break;
      case "clear": call.player?.clear(); break;
      case "metrics": showMetrics(msg); break;
      case "error": notify(msg.message); break;
      default: break; // newer servers may send more
    }
    indicate();
  }

  function send(call, data) {
    if (call.ws.readyState === WebSocket.OPEN) call.ws.send(data);
  }

  function connect() {
    const ctx = new AudioContext({ latencyHint: "interactive" });
    const query = { output_rate: String(ctx.sampleRate) };
    if (agent) query.agent = agent;
    if (conversationId) query.conversation = conversationId;
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${scheme}://${location.host}/web/call?${new URLSearchParams(query)}`);
    ws.binaryType = "arraybuffer";
    const current = { ws, ctx, ready: false, state: "idle", player: null, mic: null, muted: false };
    current.whenReady = new Promise((resolve) => { current.resolveReady = resolve; });
    ws.onmessage = (event) => {
      if (typeof event.data === "string") handle(current, JSON.parse(event.data));
      else current.player?.play(event.data);
    };
    ws.onclose = (event) => {
      if (call === current) {
        if (!ui.notice.textContent) notify(`The call ended (${event.code}${event.reason ? ": " + event.reason : ""}).`);
        hangUp();
      }
    };
    call = current;
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
    current.mic?.stream.getTracks().forEach((track) => track.stop());
    current.mic?.node.disconnect();
    if (current.ws.readyState <= WebSocket.OPEN) current.ws.close(1000);
    current.ctx.close();
    updateButtons();
    indicate();
  }

  async function openMicrophone(current) {
    if (!navigator.mediaDevices?.getUserMedia) {
      throw new Error("This page needs a secure context for the microphone: open it as http://localhost or over https.");
    }
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
    });
    await current.ctx.audioWorklet.addModule("/web/static/mic-worklet.js");
    const node = new AudioWorkletNode(current.ctx, "voxline-mic", {
      numberOfInputs: 1,
      numberOfOutputs: 0,
      processorOptions: { targetRate: 16000, frameSamples: 320 },
    });
    node.port.onmessage = (event) => send(current, event.data);
    current.ctx.createMediaStreamSource(stream).connect(node);
    return { stream, node };
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
    send(current, JSON.stringify({ type: "text", text }));
  });

  addEventListener("pagehide", hangUp);
})();
