// The talk page's WebRTC transport (docs/browser.md): one peer connection with the server,
// the microphone as Opus on a send-and-receive audio transceiver, the agent's voice on the
// server's track (played by an <audio> element, so the browser's echo canceller hears it), and
// the same JSON events as the WebSocket on a data channel named "voxline".
//
// Offer and answer go over HTTP (POST /web/rtc/offer) with trickle ICE: the offer leaves at
// once, and this side's candidates follow it as they are found (POST /web/rtc/CALL/candidate),
// then their end; the server's are all in its answer. No STUN or TURN server is configured, so
// only host candidates exist and nothing outside this page's own server is contacted. Whatever goes wrong before the data
// channel opens (no WebRTC in this browser, no aiortc on the server, no path between the two)
// rejects with `fallback` set, and the page uses the WebSocket instead.
"use strict";

window.VoxlineRtc = (() => {
  const CONNECT_MS = 10000; // from the answer to an open data channel

  function supported() {
    return typeof RTCPeerConnection === "function";
  }

  class RtcError extends Error {
    constructor(message, { fallback = false, status = 0 } = {}) {
      super(message);
      this.fallback = fallback;
      this.status = status;
    }
  }

  // Resolves to a link {kind, send(text), useMicrophone(track), close()} once the data channel
  // is open; `onMessage` gets each event, `onClose(reason)` the end of a call that had opened.
  async function open({ agent, conversation, token, audio, onMessage, onClose }) {
    if (!supported()) throw new RtcError("this browser has no WebRTC", { fallback: true });
    const pc = new RTCPeerConnection({ iceServers: [] });
    const channel = pc.createDataChannel("voxline", { ordered: true });
    const transceiver = pc.addTransceiver("audio", { direction: "sendrecv" });
    let callId = null;
    let opened = false;
    let closed = false;

    const link = {
      kind: "webrtc",
      send(text) { if (channel.readyState === "open") channel.send(text); },
      useMicrophone(track) { transceiver.sender.replaceTrack(track); },
      close() {
        if (closed) return;
        closed = true;
        channel.close();
        pc.close();
        if (callId) fetch("/web/rtc/" + encodeURIComponent(callId), { method: "DELETE", keepalive: true }).catch(() => {});
      },
    };
    const ended = (reason) => {
      if (closed) return;
      link.close();
      if (opened) onClose(reason);
    };

    // Candidates go to the server once its answer has named the call; those found before wait.
    const late = [];
    let sending = Promise.resolve(); // one at a time, so the end of them arrives last
    const trickle = (candidate) => {
      const body = JSON.stringify(candidate ? candidate.toJSON() : { candidate: null });
      sending = sending.then(() => fetch(`/web/rtc/${encodeURIComponent(callId)}/candidate`, {
        method: "POST", headers: { "Content-Type": "application/json" }, body,
      })).catch(() => { /* the call's own checks decide whether it connects */ });
    };
    pc.onicecandidate = (event) => {
      if (callId) trickle(event.candidate);
      else late.push(event.candidate);
    };

    pc.ontrack = (event) => {
      audio.srcObject = event.streams[0] || new MediaStream([event.track]);
      audio.play().catch(() => { /* autoplay waits for the click that started the call */ });
    };
    channel.onmessage = (event) => { if (typeof event.data === "string") onMessage(JSON.parse(event.data)); };
    channel.onclose = () => ended("");
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === "failed") ended("the connection to the server was lost");
    };

    try {
      await pc.setLocalDescription(await pc.createOffer());
      const body = { type: "offer", sdp: pc.localDescription.sdp };
      if (agent) body.agent = agent;
      if (conversation) body.conversation = conversation;
      const headers = { "Content-Type": "application/json" };
      if (token) headers.Authorization = "Bearer " + token;
      let response;
      try {
        response = await fetch("/web/rtc/offer", { method: "POST", headers, body: JSON.stringify(body) });
      } catch (_) {
        throw new RtcError("Could not reach the call: the server is down, or it refused this page.");
      }
      const answer = await response.json().catch(() => ({}));
      if (!response.ok) {
        // 400: this browser's offer is one the server cannot read; 409/501: not over WebRTC.
        const fallback = Boolean(answer.fallback) || response.status === 400;
        throw new RtcError(answer.error || `the server answered ${response.status}`, { fallback, status: response.status });
      }
      callId = answer.call_id;
      late.splice(0).forEach(trickle);
      await pc.setRemoteDescription({ type: answer.type, sdp: answer.sdp });
      await new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new RtcError("no WebRTC path to the server", { fallback: true })), CONNECT_MS);
        const ready = () => { clearTimeout(timer); resolve(); };
        if (channel.readyState === "open") ready();
        else channel.addEventListener("open", ready);
        channel.addEventListener("close", () => { clearTimeout(timer); reject(new RtcError("the server closed the call", { fallback: true })); });
      });
    } catch (error) {
      link.close();
      throw error instanceof RtcError ? error : new RtcError(String(error.message || error), { fallback: true });
    }
    opened = true;
    return link;
  }

  return { supported, open };
})();
