// The companion web page: a client of /v1/ws (protocol: GET /v1/events/schema).
// Chat log with streamed text, mic (WebAudio, 16 kHz PCM frames), audio playback with
// lip-sync volumes, and an avatar (Live2D when configured, the built-in one otherwise).
"use strict";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const TAG_EMOTIONS = new Set(
  ("joy happy smile sad angry surprise surprised shy blush think thinking neutral fear scared disgust love " +
    "excited confused sleepy proud embarrassed worried calm laugh smirk cry").split(" "),
);

// Who I am: the token from ?token= (kept for this tab only), a user id kept in this browser.
const token = params.get("token") || sessionStorage.getItem("companion.token");
if (params.get("token")) {
  sessionStorage.setItem("companion.token", params.get("token"));
  params.delete("token");
  history.replaceState(null, "", location.pathname + (params.toString() ? `?${params}` : ""));
}
let user = params.get("user") || localStorage.getItem("companion.user");
if (!user) user = `web-${Math.random().toString(36).slice(2, 10)}`;
localStorage.setItem("companion.user", user);

const state = {
  ws: null,
  session: null,
  bubble: null, // the assistant message being streamed
  busy: false,
  avatar: null,
  avatarKind: "",
  retry: 0,
  audio: { ctx: null, queue: [], current: null, playing: false, heard: [] },
  pendingExpression: null,
  mic: null,
};
// Read by tests and handy in the console.
window.companion = { state, events: [], audioPlayed: 0, maxMouth: 0, expressions: [] };

// -- rendering ---------------------------------------------------------------------------
function escapeHtml(text) {
  return text.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

function known(tag) {
  const t = tag.trim().toLowerCase();
  const map = (state.session && state.session.expressions) || {};
  return TAG_EMOTIONS.has(t) || Object.prototype.hasOwnProperty.call(map, t);
}

// Emotion tags never show; *actions* show in italics; an unfinished tag at the end waits.
function renderReply(raw, streaming) {
  let text = raw.replace(/\[([^\[\]\n]{1,40})\]\s*/g, (m, tag) => (known(tag) ? "" : m));
  if (streaming) text = text.replace(/\[[^\]\n]{0,40}$/, "");
  return escapeHtml(text.trimStart()).replace(/\*([^*\n]{1,80})\*/g, '<em class="action">*$1*</em>');
}

function addMessage(role, html) {
  const li = document.createElement("li");
  li.className = role;
  li.innerHTML = html;
  $("log").appendChild(li);
  li.scrollIntoView({ block: "end" });
  return li;
}

function note(text, kind = "system") {
  addMessage(kind, escapeHtml(text));
}

function setStatus(text) {
  $("status").textContent = text;
}

function setBusy(busy) {
  state.busy = busy;
  $("stop").hidden = !busy && !state.audio.playing;
  $("send").hidden = !$("stop").hidden;
}

// -- avatar ------------------------------------------------------------------------------
async function setupAvatar(session) {
  const stage = $("stage");
  const kind = session.live2d_model ? `live2d:${session.live2d_model}` : "builtin";
  if (state.avatarKind === kind) return;
  state.avatarKind = kind;
  if (session.live2d_model) {
    try {
      state.avatar = await Live2DAvatar.create(stage, session.live2d_model, session.expressions);
      stage.dataset.avatar = "live2d";
      return;
    } catch (err) {
      note(`Live2D unavailable (${err.message}); using the built-in avatar.`);
    }
  }
  state.avatar = new BuiltinAvatar(stage);
  stage.dataset.avatar = "builtin";
}

function showExpression(emotion, expression) {
  if (!state.avatar) return;
  state.avatar.setExpression(emotion, expression);
  $("stage").dataset.expression = emotion;
  window.companion.expressions.push(emotion);
}

function setMouth(v) {
  if (state.avatar) state.avatar.setMouth(v);
  window.companion.maxMouth = Math.max(window.companion.maxMouth, v);
}

// -- audio out ---------------------------------------------------------------------------
async function audioContext() {
  const a = state.audio;
  if (!a.ctx) a.ctx = new (window.AudioContext || window.webkitAudioContext)();
  if (a.ctx.state === "suspended") await a.ctx.resume();
  return a.ctx;
}

function b64ToBuffer(b64) {
  const bin = atob(b64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return bytes.buffer;
}

function enqueueAudio(event) {
  state.audio.queue.push({ event, expression: state.pendingExpression });
  state.pendingExpression = null;
  if (!state.audio.playing) playNext();
}

async function playNext() {
  const a = state.audio;
  const item = a.queue.shift();
  if (!item) {
    a.playing = false;
    a.current = null;
    setMouth(0);
    setBusy(state.busy);
    return;
  }
  a.playing = true;
  setBusy(state.busy);
  const { event, expression } = item;
  try {
    const ctx = await audioContext();
    const buffer = await ctx.decodeAudioData(b64ToBuffer(event.audio_wav_b64));
    const source = ctx.createBufferSource();
    source.buffer = buffer;
    source.connect(ctx.destination);
    if (expression) showExpression(expression.emotion, expression.expression);
    a.current = source;
    const start = ctx.currentTime;
    a.now = { text: event.text, start, duration: buffer.duration };
    const slice = event.slice_ms || 20;
    const tick = () => {
      if (a.current !== source) return;
      const i = Math.floor(((ctx.currentTime - start) * 1000) / slice);
      setMouth(event.volumes[i] || 0);
      setTimeout(tick, slice);
    };
    source.onended = () => {
      if (a.current !== source) return;
      a.heard.push(event.text);
      window.companion.audioPlayed += 1;
      playNext();
    };
    source.start();
    tick();
  } catch (err) {
    console.warn("audio", err);
    playNext();
  }
}

function stopAudio() {
  const a = state.audio;
  a.queue = [];
  if (a.current) {
    const source = a.current;
    a.current = null;
    try {
      source.stop();
    } catch {}
  }
  a.playing = false;
  setMouth(0);
}

// -- mic in ------------------------------------------------------------------------------
const TAP = `class Tap extends AudioWorkletProcessor {
  process(inputs) { const ch = inputs[0] && inputs[0][0]; if (ch) this.port.postMessage(ch.slice(0)); return true; }
}
registerProcessor("companion-tap", Tap);`;

class Downsampler {
  constructor(from, to = 16000) {
    this.step = from / to;
    this.pos = 0;
    this.prev = 0;
  }
  push(input) {
    const out = [];
    while (this.pos < input.length) {
      const i = Math.floor(this.pos);
      const frac = this.pos - i;
      const a = i === 0 ? (frac === 0 ? input[0] : this.prev) : input[i - 1];
      const b = input[i];
      out.push(i === 0 && frac === 0 ? input[0] : a + (b - a) * frac);
      this.pos += this.step;
    }
    this.pos -= input.length;
    this.prev = input[input.length - 1];
    const pcm = new Int16Array(out.length);
    for (let k = 0; k < out.length; k++) pcm[k] = Math.max(-1, Math.min(1, out[k])) * 32767;
    return pcm;
  }
}

async function startMic() {
  if (!state.session || !state.session.can_listen) return;
  const ctx = await audioContext();
  if (state.busy || state.audio.playing) interrupt(); // barge-in: she stops when you speak
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true },
  });
  const url = URL.createObjectURL(new Blob([TAP], { type: "application/javascript" }));
  await ctx.audioWorklet.addModule(url);
  const source = ctx.createMediaStreamSource(stream);
  const node = new AudioWorkletNode(ctx, "companion-tap");
  const mute = ctx.createGain();
  mute.gain.value = 0;
  source.connect(node).connect(mute).connect(ctx.destination);
  const down = new Downsampler(ctx.sampleRate);
  let chunk = [];
  let size = 0;
  send({ type: "audio_start", sample_rate: 16000 });
  node.port.onmessage = (e) => {
    const pcm = down.push(e.data);
    chunk.push(pcm);
    size += pcm.length;
    if (size >= 1600) flush(); // 100 ms a frame
  };
  const flush = () => {
    if (!size) return;
    const all = new Int16Array(size);
    let at = 0;
    for (const part of chunk) {
      all.set(part, at);
      at += part.length;
    }
    if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(all.buffer);
    chunk = [];
    size = 0;
  };
  state.mic = { stream, source, node, flush };
  $("mic").classList.add("recording");
  setStatus("listening… click the mic again to send");
}

function stopMic() {
  const mic = state.mic;
  if (!mic) return;
  state.mic = null;
  mic.flush();
  mic.node.port.onmessage = null;
  mic.source.disconnect();
  mic.node.disconnect();
  mic.stream.getTracks().forEach((t) => t.stop());
  $("mic").classList.remove("recording");
  send({ type: "audio_end" });
  setStatus("thinking…");
}

// -- protocol ----------------------------------------------------------------------------
function send(message) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(message));
}

// What you heard of her reply: whole sentences, then the start of the one cut off, marked "—".
function heardSoFar() {
  const a = state.audio;
  const parts = [...a.heard];
  if (a.current && a.now && a.ctx) {
    const fraction = Math.min(1, (a.ctx.currentTime - a.now.start) / a.now.duration);
    let prefix = a.now.text.slice(0, Math.floor(a.now.text.length * fraction));
    if (a.now.text.includes(" ") && fraction < 1) prefix = prefix.slice(0, Math.max(0, prefix.lastIndexOf(" ")));
    prefix = prefix.replace(/[ ,，、]+$/, "");
    if (prefix) parts.push(`${prefix}—`);
  }
  return parts.join(" ").trim();
}

function interrupt() {
  // With her voice on, history should keep what you actually heard, not all that was generated.
  const spoke = state.audio.playing || state.audio.heard.length > 0;
  const heard = heardSoFar();
  stopAudio();
  if (state.busy || spoke) send({ type: "interrupt", heard_text: spoke ? heard : null });
}

function connect() {
  const q = new URLSearchParams({ user, channel: "web" });
  const character = params.get("character") || localStorage.getItem("companion.character");
  if (character) q.set("character", character);
  if (token) q.set("token", token);
  if (localStorage.getItem("companion.speak") === "0") q.set("speak", "0");
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(`${proto}//${location.host}/v1/ws?${q}`);
  state.ws = ws;
  ws.onopen = () => {
    state.retry = 0;
    setStatus("connected");
  };
  ws.onmessage = (e) => {
    let message;
    try {
      message = JSON.parse(e.data);
    } catch {
      return;
    }
    window.companion.events.push(message);
    handle(message);
  };
  ws.onclose = (e) => {
    if (state.ws !== ws) return;
    setBusy(false);
    if (e.code === 1008) setStatus(`disconnected: ${e.reason || "refused"}`);
    const wait = Math.min(15000, 500 * 2 ** state.retry++);
    setStatus(`disconnected; retrying in ${Math.round(wait / 1000)} s`);
    setTimeout(connect, wait);
  };
}

function renderSession(session) {
  const fresh = !state.session || state.session.session_id !== session.session_id || state.session.character !== session.character;
  state.session = session;
  document.title = session.display_name;
  $("name").textContent = session.display_name;
  setStatus(`talking with ${session.name}${session.can_speak ? "" : " (text only)"}`);
  const portrait = $("portrait");
  portrait.hidden = !session.avatar_url;
  if (session.avatar_url) portrait.src = session.avatar_url;
  const select = $("character");
  select.hidden = session.characters.length < 2;
  select.innerHTML = session.characters.map((c) => `<option${c === session.character ? " selected" : ""}>${escapeHtml(c)}</option>`).join("");
  $("mic").disabled = !session.can_listen || !navigator.mediaDevices;
  $("speak").disabled = !session.can_speak;
  $("speak").checked = session.speak;
  localStorage.setItem("companion.character", session.character);
  setupAvatar(session).then(() => {
    const first = (session.greeting || "").match(/^\s*\[([^\]]+)\]/);
    if (first && known(first[1])) showExpression(first[1].toLowerCase());
  });
  if (fresh) {
    $("log").innerHTML = "";
    for (const item of session.history) {
      addMessage(item.role, item.role === "assistant" ? renderReply(item.content, false) : escapeHtml(item.content));
    }
  }
}

function handle(m) {
  switch (m.type) {
    case "session":
      renderSession(m);
      break;
    case "turn_start":
      stopAudio();
      state.audio.heard = [];
      setBusy(true);
      state.bubble = addMessage("assistant streaming", "");
      state.bubble.dataset.raw = "";
      break;
    case "transcript":
      addMessage("user", escapeHtml(m.text));
      break;
    case "text_delta":
      if (!state.bubble) break;
      state.bubble.dataset.raw += m.text;
      state.bubble.innerHTML = renderReply(state.bubble.dataset.raw, true);
      state.bubble.scrollIntoView({ block: "end" });
      break;
    case "expression":
      if (state.session && state.session.speak) state.pendingExpression = m;
      else showExpression(m.emotion, m.expression);
      break;
    case "audio":
      enqueueAudio(m);
      break;
    case "turn_end":
      if (state.bubble) {
        state.bubble.classList.remove("streaming");
        state.bubble.innerHTML = renderReply(m.text, false) || (m.interrupted ? "" : "…");
        if (m.interrupted) state.bubble.classList.add("interrupted");
        state.bubble.dataset.done = "1";
      }
      if (state.pendingExpression) showExpression(state.pendingExpression.emotion, state.pendingExpression.expression);
      state.pendingExpression = null;
      state.bubble = null;
      setBusy(false);
      setStatus(`talking with ${state.session.name}`);
      break;
    case "reset_done":
      $("log").innerHTML = "";
      if (m.greeting) addMessage("assistant", renderReply(m.greeting, false));
      break;
    case "error":
      note(m.message, "error");
      if (state.bubble && !state.bubble.dataset.raw) {
        state.bubble.remove();
        state.bubble = null;
        setBusy(false);
      }
      break;
    default:
      break;
  }
}

// -- UI ----------------------------------------------------------------------------------
$("composer").addEventListener("submit", async (e) => {
  e.preventDefault();
  const input = $("input");
  const text = input.value.trim();
  if (!text) return;
  audioContext().catch(() => {}); // a user gesture: allow audio playback from now on
  if (state.busy || state.audio.playing) interrupt();
  addMessage("user", escapeHtml(text));
  send({ type: "text", text, id: `u${Date.now()}` });
  input.value = "";
});
$("input").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    $("composer").requestSubmit();
  }
});
$("stop").addEventListener("click", interrupt);
$("reset").addEventListener("click", () => send({ type: "reset" }));
$("mic").addEventListener("click", () => {
  if (state.mic) stopMic();
  else startMic().catch((err) => note(`microphone: ${err.message}`, "error"));
});
$("speak").addEventListener("change", (e) => {
  localStorage.setItem("companion.speak", e.target.checked ? "1" : "0");
  if (!e.target.checked) stopAudio();
  send({ type: "hello", speak: e.target.checked });
});
$("character").addEventListener("change", (e) => send({ type: "hello", character: e.target.value }));

connect();
