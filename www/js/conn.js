// Connection indicators in the header: live / reconnecting / offline, in words and colour.
// Trying for OFFLINE_AFTER_MS, or no network, reads "offline" (retries go on underneath).

const OFFLINE_AFTER_MS = 20000;
const LABELS = { connecting: 'connecting', live: 'live', reconnecting: 'reconnecting', offline: 'offline' };
const RANK = { live: 0, connecting: 1, reconnecting: 2, offline: 3 };

export class Indicator {
  /** Shows the worst of `parts` (e.g. the two SSE streams); `onChange(state)` hears it change. */
  constructor(element, parts, onChange = () => {}) {
    this.element = element;
    this.onChange = onChange;
    this.label = element.querySelector('.conn-state');
    this.states = Object.fromEntries(parts.map((p) => [p, 'connecting']));
    this.since = Object.fromEntries(parts.map((p) => [p, Date.now()]));
    this.timer = null;
    window.addEventListener('offline', () => this.render());
    window.addEventListener('online', () => this.render());
    this.render();
  }

  set(part, state) {
    if (this.states[part] === state) return;
    if (state === 'live' || this.states[part] === 'live') this.since[part] = Date.now();
    this.states[part] = state;
    this.render();
  }

  get state() {
    if (!navigator.onLine) return 'offline';
    let worst = 'live';
    const now = Date.now();
    for (const [part, state] of Object.entries(this.states)) {
      let shown = state;
      if (state !== 'live' && now - this.since[part] >= OFFLINE_AFTER_MS) shown = 'offline';
      if (RANK[shown] > RANK[worst]) worst = shown;
    }
    return worst;
  }

  render() {
    const state = this.state;
    if (this.element.dataset.state !== state) {
      this.element.dataset.state = state;
      this.label.textContent = LABELS[state];
      this.onChange(state);
    }
    clearTimeout(this.timer);
    // Re-check later so "reconnecting" turns into "offline" without another signal.
    if (state !== 'live' && state !== 'offline') this.timer = setTimeout(() => this.render(), 1000);
  }
}
