// The built-in 2D avatar: an SVG face driven by the same events a Live2D model gets.
// setExpression(emotion) changes brows, eyes, cheeks and the resting mouth; setMouth(0..1)
// opens the mouth (lip-sync volumes); she blinks on her own.
"use strict";

const MOODS = {
  joy: ["joy", "happy", "smile", "laugh", "excited", "love", "proud", "smirk"],
  sad: ["sad", "cry", "worried", "tears"],
  angry: ["angry", "disgust", "annoyed"],
  surprise: ["surprise", "surprised", "fear", "scared", "shock"],
  shy: ["shy", "blush", "embarrassed"],
  think: ["think", "thinking", "confused", "curious"],
  sleepy: ["sleepy", "tired", "calm"],
};

function moodOf(emotion) {
  const e = String(emotion || "").toLowerCase();
  for (const [mood, names] of Object.entries(MOODS)) if (names.includes(e)) return mood;
  return "neutral";
}

// Resting shapes per mood: mouth curve (+ smile, - frown), brow tilt (deg), eye openness, blush.
const FACE = {
  neutral: { curve: 4, brow: 0, browY: 0, eye: 1, blush: 0.15 },
  joy: { curve: 14, brow: -4, browY: -3, eye: 0.75, blush: 0.45 },
  sad: { curve: -9, brow: 14, browY: 2, eye: 0.8, blush: 0.1 },
  angry: { curve: -6, brow: -16, browY: 4, eye: 0.85, blush: 0.3 },
  surprise: { curve: 0, brow: 0, browY: -8, eye: 1.25, blush: 0.2 },
  shy: { curve: 7, brow: 8, browY: 0, eye: 0.7, blush: 0.85 },
  think: { curve: -2, brow: -6, browY: -2, eye: 0.9, blush: 0.1 },
  sleepy: { curve: 2, brow: 4, browY: 2, eye: 0.45, blush: 0.15 },
};

class BuiltinAvatar {
  constructor(container) {
    this.container = container;
    this.mouth = 0;
    this.mood = "neutral";
    this.blinking = false;
    container.innerHTML = `
<svg class="builtin-avatar" viewBox="0 0 200 220" role="img" aria-label="avatar">
  <defs>
    <radialGradient id="skin" cx="50%" cy="40%" r="60%"><stop offset="0%" stop-color="#ffe9dc"/><stop offset="100%" stop-color="#f6cdb8"/></radialGradient>
  </defs>
  <circle class="bun" cx="100" cy="30" r="24"/>
  <ellipse class="hair-back" cx="100" cy="112" rx="80" ry="86"/>
  <ellipse class="face" cx="100" cy="120" rx="66" ry="70" fill="url(#skin)"/>
  <path class="fringe" d="M34 108 C40 52 160 52 166 108 C150 80 128 70 100 76 C74 70 50 82 34 108 Z"/>
  <g class="clip"><circle cx="128" cy="40" r="7"/><path d="M121 40 a8 8 0 0 0 14 -4" class="moon"/></g>
  <ellipse class="cheek left" cx="62" cy="146" rx="13" ry="7"/>
  <ellipse class="cheek right" cx="138" cy="146" rx="13" ry="7"/>
  <g class="eyes">
    <g class="eye left" transform="translate(74 122)"><ellipse class="white" rx="11" ry="13"/><ellipse class="iris" rx="7" ry="9"/><circle class="glint" cx="2.5" cy="-4" r="2.5"/></g>
    <g class="eye right" transform="translate(126 122)"><ellipse class="white" rx="11" ry="13"/><ellipse class="iris" rx="7" ry="9"/><circle class="glint" cx="2.5" cy="-4" r="2.5"/></g>
  </g>
  <path class="brow left" d="M62 100 Q74 94 86 100"/>
  <path class="brow right" d="M114 100 Q126 94 138 100"/>
  <path class="mouth" d="M86 160 Q100 166 114 160 Q100 166 86 160 Z"/>
</svg>`;
    this.svg = container.querySelector("svg");
    this.el = {
      mouth: this.svg.querySelector(".mouth"),
      eyes: [...this.svg.querySelectorAll(".eye")],
      brows: [...this.svg.querySelectorAll(".brow")],
      cheeks: [...this.svg.querySelectorAll(".cheek")],
    };
    this.render();
    this.scheduleBlink();
  }

  setExpression(emotion) {
    this.mood = moodOf(emotion);
    this.container.dataset.mood = this.mood;
    this.render();
  }

  setMouth(value) {
    const v = Math.max(0, Math.min(1, Number(value) || 0));
    if (Math.abs(v - this.mouth) < 0.01) return;
    this.mouth = v;
    this.renderMouth();
  }

  scheduleBlink() {
    const wait = 2500 + Math.random() * 3500;
    setTimeout(() => {
      this.blinking = true;
      this.renderEyes();
      setTimeout(() => {
        this.blinking = false;
        this.renderEyes();
        this.scheduleBlink();
      }, 130);
    }, wait);
  }

  render() {
    const f = FACE[this.mood];
    this.el.brows.forEach((brow, i) => {
      const side = i === 0 ? 1 : -1;
      const cx = i === 0 ? 74 : 126;
      brow.setAttribute("transform", `translate(0 ${f.browY}) rotate(${f.brow * side} ${cx} 98)`);
    });
    this.el.cheeks.forEach((cheek) => (cheek.style.opacity = String(f.blush)));
    this.renderEyes();
    this.renderMouth();
  }

  renderEyes() {
    const f = FACE[this.mood];
    const open = this.blinking ? 0.08 : f.eye;
    this.el.eyes.forEach((eye, i) => {
      const x = i === 0 ? 74 : 126;
      eye.setAttribute("transform", `translate(${x} 122) scale(1 ${open})`);
    });
  }

  renderMouth() {
    const f = FACE[this.mood];
    const open = this.mouth;
    const w = 13 + open * 3;
    const y = 160;
    const upper = y + f.curve * 0.5 * (1 - open) - open * 2;
    const lower = y + f.curve * (1 - open * 0.5) + open * 22;
    this.el.mouth.setAttribute(
      "d",
      `M${100 - w} ${y} Q100 ${upper} ${100 + w} ${y} Q100 ${lower} ${100 - w} ${y} Z`,
    );
    this.el.mouth.classList.toggle("open", open > 0.08);
    this.container.dataset.mouth = open.toFixed(2);
  }
}

window.BuiltinAvatar = BuiltinAvatar;
window.moodOf = moodOf;
