// Microphone samples (at the AudioContext's rate, float32) to 16 kHz PCM16 frames of 20 ms,
// posted to the page as transferable ArrayBuffers. Each output sample is the mean of the input
// samples it covers: a box filter that keeps most of what lies above 8 kHz from folding back
// into the speech band, at any input rate (48 kHz, 44.1 kHz, ...).
class VoxlineMic extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = options.processorOptions || {};
    this.step = sampleRate / (opts.targetRate || 16000);
    this.frame = new Int16Array(opts.frameSamples || 320);
    this.filled = 0;
    this.phase = 0;
    this.sum = 0;
    this.count = 0;
  }

  process(inputs) {
    const channels = inputs[0];
    if (!channels || channels.length === 0) return true;
    const samples = channels[0];
    for (let i = 0; i < samples.length; i++) {
      this.sum += samples[i];
      this.count += 1;
      this.phase += 1;
      if (this.phase < this.step) continue;
      this.phase -= this.step;
      const value = Math.max(-1, Math.min(1, this.sum / this.count));
      this.sum = 0;
      this.count = 0;
      this.frame[this.filled++] = value < 0 ? value * 0x8000 : value * 0x7fff;
      if (this.filled === this.frame.length) {
        const out = this.frame.slice();
        this.port.postMessage(out.buffer, [out.buffer]);
        this.filled = 0;
      }
    }
    return true;
  }
}

registerProcessor("voxline-mic", VoxlineMic);
