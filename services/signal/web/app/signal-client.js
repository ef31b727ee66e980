// A client of the node's native protocol (docs/protocol.md): requests with ids and
// their replies, room events as DOM events, a heartbeat, and resume: when the
// connection drops (or the node drains and says `reconnect`), it reconnects and
// resumes its peer, keeping the id and rooms, with nothing lost. Only when the resume
// is refused does it start over as a new peer (event `reset`). The current resume
// token is announced (event `token`) so a page can keep it across a reload.

const RETRY_MS = [250, 500, 1000, 2000, 4000];

export class SignalClient extends EventTarget {
  constructor(url) {
    super();
    this.url = url;
    this.peer = null;
    this.token = null;
    this.nextId = 1;
    this.pending = new Map();
    this.ws = null;
    this.closedForGood = false;
    this.heartbeat = null;
  }

  /** Connects; resolves with the peer id once `welcome` arrived. */
  async connect() {
    return (await this.open(null)).peer;
  }

  /**
   * Connects and resumes the peer `token` names (kept from before a reload). Resolves
   * with `{ peer, resumed, rooms }`: when the node refused, a fresh peer (rooms empty).
   */
  resume(token) {
    return this.open(token);
  }

  /** Sends a request and resolves with its reply (rejects with the error reply). */
  request(message) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.send({ ...message, id });
    });
  }

  send(message) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify(message));
    }
  }

  /** Leaves for good: the node removes the member at once (close code 1000). */
  close() {
    this.closedForGood = true;
    clearInterval(this.heartbeat);
    if (this.ws) this.ws.close(1000, 'bye');
  }

  /**
   * The page is unloading (close code 4001 `reloading`): the node holds the member for
   * RELOAD_GRACE_MS, so a reloaded page resumes it; a closed tab leaves when that ends.
   */
  suspend() {
    this.closedForGood = true;
    clearInterval(this.heartbeat);
    if (this.ws) this.ws.close(4001, 'reloading');
  }

  setToken(token) {
    this.token = token;
    if (token) this.emit('token', { token });
  }

  // One connection: a fresh one (resumeToken null) or a resume. Resolves with the
  // peer and whether it was resumed (a refused resume leaves a fresh peer).
  open(resumeToken) {
    // A resume after a drop (not the first connection of a reloaded page) is announced.
    const reconnecting = this.peer !== null;
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.url);
      this.ws = ws;
      let greeted = false;
      let fresh = null;
      ws.onmessage = (e) => {
        let msg;
        try {
          msg = JSON.parse(e.data);
        } catch {
          return;
        }
        if (!greeted && msg.type === 'welcome') {
          greeted = true;
          this.startHeartbeat(msg.heartbeat_ms || 25000);
          fresh = { peer: msg.peer, token: msg.resume || null };
          if (resumeToken) {
            this.send({ type: 'resume', token: resumeToken, id: 'resume' });
            return;
          }
          this.peer = fresh.peer;
          this.setToken(fresh.token);
          resolve({ peer: this.peer, resumed: false, rooms: [] });
          return;
        }
        if (msg.id === 'resume') {
          if (msg.type === 'resumed') {
            this.peer = msg.peer;
            this.setToken(msg.resume);
            resolve({ peer: this.peer, resumed: true, rooms: msg.rooms });
            if (reconnecting) this.emit('resumed', msg);
          } else {
            // Refused: this connection stands as a fresh peer; the page joins afresh.
            this.peer = fresh.peer;
            this.setToken(fresh.token);
            resolve({ peer: this.peer, resumed: false, rooms: [] });
          }
          return;
        }
        this.dispatchMessage(msg);
      };
      ws.onclose = (e) => {
        clearInterval(this.heartbeat);
        for (const { reject: fail } of this.pending.values()) fail(new Error('connection closed'));
        this.pending.clear();
        if (!greeted) {
          // Never established: whoever opened it retries.
          reject(new Error(`connection failed (${e.code})`));
        } else if (ws === this.ws && !this.closedForGood) {
          this.reconnect();
        }
      };
    });
  }

  dispatchMessage(msg) {
    if (msg.id !== undefined && this.pending.has(msg.id)) {
      const { resolve, reject } = this.pending.get(msg.id);
      this.pending.delete(msg.id);
      if (msg.type === 'error') reject(Object.assign(new Error(msg.message), { code: msg.code }));
      else resolve(msg);
      return;
    }
    if (msg.type === 'reconnect') {
      // The node drains: close (not 1000, so the member waits away) and resume elsewhere.
      this.ws.close(4000, 'reconnecting');
      return;
    }
    this.emit(msg.type, msg);
  }

  async reconnect() {
    this.emit('connection', { state: 'reconnecting' });
    for (let attempt = 0; !this.closedForGood; attempt++) {
      await new Promise((r) => setTimeout(r, RETRY_MS[Math.min(attempt, RETRY_MS.length - 1)]));
      try {
        const { resumed } = await this.open(this.token);
        this.emit(resumed ? 'connection' : 'reset', { state: resumed ? 'resumed' : 'new peer', peer: this.peer });
        return;
      } catch {
        // Not reachable yet: try again.
      }
    }
  }

  startHeartbeat(ms) {
    clearInterval(this.heartbeat);
    this.heartbeat = setInterval(() => this.send({ type: 'ping' }), Math.max(1000, ms / 2));
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
